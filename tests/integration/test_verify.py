"""``verify`` finds every planted anomaly, reads a rotating sample, and keeps its request budget.

Each test takes real (signed, encrypted) backups of a SQLite database into three local tiers,
then plays the attacker (or the accident) on one tier and checks that the report names the
tier, the kind of problem and the key.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from backupflow.catalog import Catalog, manifest_key, object_key
from backupflow.config import Settings
from backupflow.envelope import seal
from backupflow.errors import StorageError
from backupflow.filesets import content_key
from backupflow.keys import Keyring, generate_keys
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.retention import RetentionPolicy
from backupflow.storage import MemoryStorage, Tier, open_tiers
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes
from backupflow.storage.s3 import S3Storage
from backupflow.verify import verify
from backupflow.verify.report import (
    BROKEN_CHAIN,
    DAMAGED_OBJECT,
    FOREIGN_MANIFEST,
    FOREIGN_OBJECT,
    MISSING_OBJECT,
    ORPHAN,
    TIER_DISAGREEMENT,
    UNFINISHED_UPLOAD,
    WRONG_SIZE,
    Finding,
    Series,
    VerifyReport,
    in_sample,
    sample_window,
)
from tests.support import filesets
from tests.support.chain import take_backup
from tests.support.keys import KEYRING
from tests.support.s3 import MotoServer, client_for, make_bucket

GANTT = Series(Category.DATABASE, "gantt")
LABEL = GANTT.label


def _seed(path: Path, rows: int = 400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(rows)])
    conn.close()


def _later() -> datetime:
    """A moment past the grace period of everything the test just wrote."""
    return datetime.now(UTC) + timedelta(hours=2)


def _run(tiers: list[Tier], *, percent: float = 0.0, now: datetime | None = None) -> VerifyReport:
    return verify(
        tiers,
        [GANTT],
        now=now or _later(),
        read_data_percent=percent,
        grace=timedelta(hours=1),
    )


def _kinds(report: VerifyReport, tier: str | None = None) -> set[str]:
    return {f.kind for f in report.findings if tier is None or f.tier == tier}


def _finding(report: VerifyReport, tier: str, kind: str, *needles: str) -> Finding:
    for finding in report.findings:
        if (
            finding.tier == tier
            and finding.kind == kind
            and finding.series == LABEL
            and all(n in finding.detail for n in needles)
        ):
            return finding
    raise AssertionError(f"no {kind} finding in {tier} naming {needles}: {report.findings}")


@pytest.fixture
def chain(settings: Settings) -> tuple[list[Tier], list[Manifest]]:
    """A full, a differential and a log backup in all three tiers."""
    _seed(settings.database.sqlite_path)
    made = [take_backup(settings, BackupKind.FULL)]
    _seed(settings.database.sqlite_path, 50)
    made.append(take_backup(settings, BackupKind.DIFF))
    _seed(settings.database.sqlite_path, 50)
    made.append(take_backup(settings, BackupKind.LOG))
    return open_tiers(settings), made


def _tier(tiers: list[Tier], name: str) -> Tier:
    return next(t for t in tiers if t.name == name)


def _envelope(storage: Storage, manifest: Manifest) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(get_bytes(storage, manifest_key(manifest)))
    return parsed


# -- a clean repository ---------------------------------------------------------------------


def test_a_clean_repository_gives_no_finding_even_reading_everything(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, made = chain
    counted = [Tier(t.name, Counting(t.storage), t.keyring) for t in tiers]
    report = _run(counted, percent=100)
    assert report.ok, report.findings
    # the budget with data reads: per tier one LIST, a GET per manifest, HEAD + GET per object
    objects = sum(len(m.objects) for m in made)
    for tier in counted:
        assert isinstance(tier.storage, Counting)
        assert tier.storage.calls == {
            "LIST": 1,
            "GET": len(made) + objects,
            "HEAD": objects,
            "PUT": 0,
            "DELETE": 0,
        }
    billed = [t.storage.total for t in counted if isinstance(t.storage, Counting)]
    assert report.requests == sum(billed) == 3 * (1 + len(made) + 2 * objects)
    assert sorted(report.sampled) == sorted((t.name, m.id) for t in tiers for m in made)
    assert report.bytes_read == 3 * sum(m.stored_bytes for m in made)
    assert all(o.encryption for m in made for o in m.objects)  # encrypted by default
    summary = report.table(LABEL)
    assert [r["tier"] for r in summary] == ["primary", "secondary", "dr"]
    assert all("3 authenticated backup(s)" in r["detail"] for r in summary)


# -- manifests --------------------------------------------------------------------------------


def test_a_manifest_signed_by_another_key_is_a_finding_by_tier_and_key(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, made = chain
    secondary = _tier(tiers, "secondary").storage
    stranger = generate_keys().keyring()
    put_bytes(secondary, manifest_key(made[2]), seal(made[2].to_json(), stranger))
    # and, in primary, a second manifest name for the genuine full (another restore point)
    primary = _tier(tiers, "primary").storage
    head, _, name = manifest_key(made[0]).rpartition("/")
    twin = f"{head}/20991231T235959999Z{name[len('20991231T235959999Z') :]}"
    assert twin != manifest_key(made[0]) and made[0].id in twin
    put_bytes(primary, twin, seal(made[0].to_json(), stranger))
    report = _run(tiers)
    _finding(report, "secondary", FOREIGN_MANIFEST, manifest_key(made[2]))
    _finding(report, "primary", FOREIGN_MANIFEST, twin)
    assert FOREIGN_MANIFEST not in _kinds(report, "dr")
    assert not any(f.tier == "primary" and f.kind != FOREIGN_MANIFEST for f in report.findings)
    # the genuine backup is no longer in secondary as far as anyone can prove
    _finding(report, "secondary", TIER_DISAGREEMENT, made[2].id)


def test_a_tampered_manifest_is_a_finding(chain: tuple[list[Tier], list[Manifest]]) -> None:
    tiers, made = chain
    dr = _tier(tiers, "dr").storage
    envelope = _envelope(dr, made[0])
    payload = json.loads(base64.b64decode(str(envelope["payload"])))
    payload["objects"][0]["size"] += 1  # the signature stays the genuine one
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    put_bytes(dr, manifest_key(made[0]), json.dumps(envelope).encode())
    report = _run(tiers)
    _finding(report, "dr", FOREIGN_MANIFEST, manifest_key(made[0]))
    # the full is gone from dr as far as anyone can prove, so its dependents are broken there
    _finding(report, "dr", BROKEN_CHAIN, made[1].id, made[0].id)


def test_an_unsigned_manifest_is_a_finding(chain: tuple[list[Tier], list[Manifest]]) -> None:
    tiers, made = chain
    primary = _tier(tiers, "primary").storage
    put_bytes(primary, manifest_key(made[1]), made[1].to_json())  # plain JSON, no signature
    report = _run(tiers)
    assert any(
        f.tier == "primary" and manifest_key(made[1]) in f.detail for f in report.findings
    ), report.findings
    _finding(report, "primary", FOREIGN_MANIFEST, manifest_key(made[1]))


# -- objects ----------------------------------------------------------------------------------


def test_a_missing_object_and_a_wrong_size_come_from_the_listing(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, made = chain
    secondary = _tier(tiers, "secondary").storage
    dr = _tier(tiers, "dr").storage
    gone = made[2].objects[0].key
    secondary.delete(gone)
    grown = made[1].objects[0].key
    put_bytes(dr, grown, get_bytes(dr, grown) + b"x")
    report = _run(tiers)
    _finding(report, "secondary", MISSING_OBJECT, gone, made[2].id)
    _finding(report, "dr", WRONG_SIZE, grown, f"{made[1].objects[0].size}")
    assert _kinds(report, "primary") == set()


def test_a_corrupted_encrypted_object_is_found_by_the_sample_read(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, made = chain
    primary = _tier(tiers, "primary").storage
    record = made[0].objects[0]
    assert record.key.endswith(".age")
    data = bytearray(get_bytes(primary, record.key))
    data[len(data) // 2] ^= 0x01  # same size: the listing cannot see it
    put_bytes(primary, record.key, bytes(data))
    assert _run(tiers, percent=0).ok  # not read: not found
    report = _run(tiers, percent=100)
    finding = _finding(report, "primary", DAMAGED_OBJECT, record.key, made[0].id)
    assert "damaged" in finding.detail or "tamper" in finding.detail
    assert _kinds(report) == {DAMAGED_OBJECT}


def test_without_the_age_identity_the_sample_still_checks_the_ciphertext(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, made = chain
    workers = [
        Tier(t.name, t.storage, Keyring(verifiers=t.keyring.verifiers, encrypt=True)) for t in tiers
    ]
    report = _run(workers, percent=100)
    assert report.ok, report.findings
    assert "checked as ciphertext only" in report.table(LABEL)[0]["detail"]
    primary = _tier(tiers, "primary").storage
    record = made[1].objects[0]
    data = bytearray(get_bytes(primary, record.key))
    data[-1] ^= 0x01
    put_bytes(primary, record.key, bytes(data))
    _finding(_run(workers, percent=100), "primary", DAMAGED_OBJECT, record.key)


# -- chains and tiers -------------------------------------------------------------------------


def test_a_gap_in_a_chain_is_a_finding(chain: tuple[list[Tier], list[Manifest]]) -> None:
    tiers, made = chain
    primary = _tier(tiers, "primary")
    Catalog(primary.storage, primary.keyring).delete(made[1])  # the differential
    report = _run(tiers)
    _finding(report, "primary", BROKEN_CHAIN, made[2].id, made[1].id)
    _finding(report, "primary", TIER_DISAGREEMENT, made[1].id)
    assert BROKEN_CHAIN not in _kinds(report, "secondary") | _kinds(report, "dr")


def test_tiers_that_disagree_are_a_finding(chain: tuple[list[Tier], list[Manifest]]) -> None:
    tiers, made = chain
    dr = _tier(tiers, "dr")
    # a manifest a trusted key signed, recording another checksum than the other tiers
    other = made[2].objects[0].model_copy(update={"sha256": "0" * 64})
    altered = made[2].model_copy(update={"objects": (other, *made[2].objects[1:])})
    put_bytes(dr.storage, manifest_key(altered), seal(altered.to_json(), dr.keyring))
    report = _run(tiers)
    _finding(report, "dr", TIER_DISAGREEMENT, made[2].id, "checksums")
    assert _kinds(report) == {TIER_DISAGREEMENT}


def test_a_backup_a_tier_should_keep_but_lacks_is_a_finding_only_there(
    chain: tuple[list[Tier], list[Manifest]], settings: Settings
) -> None:
    tiers, made = chain
    _seed(settings.database.sqlite_path, 10)
    take_backup(settings, BackupKind.DIFF)  # a newer differential: the old diff and log age out
    secondary = _tier(tiers, "secondary")
    for manifest in (made[2], made[1]):
        Catalog(secondary.storage, secondary.keyring).delete(manifest)
    keep_all = RetentionPolicy(dict.fromkeys(BackupKind, 30))
    short = RetentionPolicy({BackupKind.FULL: 30, BackupKind.DIFF: 1, BackupKind.LOG: 1})

    def policy(tier: str, category: Category) -> RetentionPolicy:
        return short if tier == "secondary" else keep_all

    later = _later() + timedelta(days=10)
    report = verify(tiers, [GANTT], now=later, read_data_percent=0, policy=policy)
    assert report.ok, report.findings  # secondary's retention no longer keeps them
    report = verify(tiers, [GANTT], now=later, read_data_percent=0, policy=lambda t, c: keep_all)
    for manifest in (made[1], made[2]):
        _finding(report, "secondary", TIER_DISAGREEMENT, manifest.id, "not in secondary")
    assert {f.tier for f in report.findings} == {"secondary"}
    fresh = verify(tiers, [GANTT], now=datetime.now(UTC), read_data_percent=0)
    assert fresh.ok, "a backup still within the grace period may still be replicating"


# -- foreign objects, orphans, uploads --------------------------------------------------------


def test_foreign_objects_and_orphans(chain: tuple[list[Tier], list[Manifest]]) -> None:
    tiers, made = chain
    primary = _tier(tiers, "primary").storage
    started = made[0].started_at
    orphan = object_key(
        Category.DATABASE, "gantt", started, new_backup_id(BackupKind.FULL, started), ".data.zst"
    )
    planted = [
        "database/gantt/2026-11-26/run.sh",
        "database/gantt/manifests/README.txt",
        "database/gantt/elsewhere/" + made[0].objects[0].key.rsplit("/", 1)[1],
        # our name, but in a day folder that is not its id's date
        "database/gantt/1999-01-01/" + orphan.rsplit("/", 1)[1],
    ]
    for key in [*planted, orphan]:
        put_bytes(primary, key, b"#!/bin/sh\n")
    report = _run(tiers)
    for key in planted:
        _finding(report, "primary", FOREIGN_OBJECT, key)
    _finding(report, "primary", ORPHAN, orphan)
    assert _kinds(report) == {FOREIGN_OBJECT, ORPHAN}
    young = verify(tiers, [GANTT], now=datetime.now(UTC), read_data_percent=0)
    assert ORPHAN not in _kinds(young), "an object within the grace period may be a running backup"


def test_an_unfinished_multipart_upload_on_s3_is_a_finding(
    settings: Settings, moto_server: MotoServer
) -> None:
    client = client_for("us-east-1", moto_server.url)
    make_bucket(client, "verify-uploads", "us-east-1")
    keyring = open_tiers(settings)[0].keyring
    storage = S3Storage(client, "verify-uploads", "backupflow", name="secondary:s3")
    tier = Tier("secondary", storage, keyring)
    stuck = "backupflow/database/gantt/2026-11-26/20261126T010203Z-full-abcdef.data.zst.age"
    client.create_multipart_upload(Bucket="verify-uploads", Key=stuck)
    client.create_multipart_upload(Bucket="verify-uploads", Key="other-app/big.bin")
    report = _run([tier])
    finding = _finding(report, "secondary", UNFINISHED_UPLOAD, stuck)
    assert "never completed" in finding.detail
    assert not any("other-app" in f.detail for f in report.findings)
    assert report.requests == 2  # one LIST (empty) + one ListMultipartUploads


# -- the sample -------------------------------------------------------------------------------

IDS = [new_backup_id(BackupKind.LOG, datetime(2026, 11, 1, tzinfo=UTC)) for _ in range(400)]
SUNDAY = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


def test_the_sample_rotates_weekly_and_four_weeks_read_everything() -> None:
    weeks = [
        {i for i in IDS if in_sample(i, sample_window(SUNDAY + timedelta(weeks=w), 25))}
        for w in range(4)
    ]
    for week in weeks:
        assert 60 < len(week) < 140  # about a quarter each
    for a in range(4):
        for b in range(a + 1, 4):
            assert not weeks[a] & weeks[b]  # two different weeks read different backups
    assert set().union(*weeks) == set(IDS)  # four weekly runs read everything
    assert {i for i in IDS if in_sample(i, sample_window(SUNDAY + timedelta(weeks=4), 25))} == (
        weeks[0]
    )
    # the same week reads the same backups whatever the day of the run
    assert weeks[0] == {
        i for i in IDS if in_sample(i, sample_window(SUNDAY - timedelta(days=2, hours=3), 25))
    }
    # across a year's end too (ISO week numbers restart; the rotation does not)
    new_year = [datetime(2026, 12, 27, tzinfo=UTC) + timedelta(weeks=w) for w in range(4)]
    assert set().union(
        *({i for i in IDS if in_sample(i, sample_window(d, 25))} for d in new_year)
    ) == set(IDS)


def test_the_sample_of_a_run_reads_different_backups_in_different_weeks(
    chain: tuple[list[Tier], list[Manifest]], settings: Settings
) -> None:
    tiers, made = chain
    read: list[set[str]] = []
    for week in range(4):
        report = _run(tiers, percent=25, now=_later() + timedelta(weeks=week))
        assert report.ok
        read.append({backup_id for tier, backup_id in report.sampled if tier == "primary"})
        assert {b for t, b in report.sampled if t == "dr"} == read[-1]  # same in every tier
    assert set().union(*read) == {m.id for m in made}
    assert sum(len(r) for r in read) == len(made)


def test_a_percentage_outside_0_to_100_is_one_sentence() -> None:
    for bad in (-1.0, 100.5, float("nan")):
        with pytest.raises(Exception, match=r"^read_data_percent must be between 0 and 100") as e:
            sample_window(SUNDAY, bad)
        assert str(e.value).count(".") <= 2 and "\n" not in str(e.value)


# -- the request budget -----------------------------------------------------------------------


class Counting(Storage):
    """Counts requests as S3 would bill them: a LIST per 1,000 keys, a GET per open, a HEAD
    per stat, a PUT per put, a DELETE per delete."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: dict[str, int] = {"LIST": 0, "GET": 0, "HEAD": 0, "PUT": 0, "DELETE": 0}
        self._lock = threading.Lock()

    def _count(self, request: str, n: int = 1) -> None:
        with self._lock:
            self.calls[request] += n

    def reset(self) -> None:
        self.calls = dict.fromkeys(self.calls, 0)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        self._count("PUT")
        return self.inner.put(key, chunks)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        self._count("GET")
        return self.inner.open(key)

    def stat(self, key: str) -> ObjectInfo:
        self._count("HEAD")
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        found = builtins.list(self.inner.list(prefix))
        self._count("LIST", max(1, -(-len(found) // 1000)))
        return iter(found)

    def delete(self, key: str) -> None:
        self._count("DELETE")
        self.inner.delete(key)


def _signed(
    storage: Storage,
    keyring: Keyring,
    kind: BackupKind,
    when: datetime,
    *,
    parent: Manifest | None = None,
    base: Manifest | None = None,
    engine: str = "sqlite",
    position: dict[str, object] | None = None,
) -> Manifest:
    """A signed backup of one small (unencrypted) object, written as a backup writes it."""
    backup_id = new_backup_id(kind, when)
    key = object_key(Category.DATABASE, "gantt", when, backup_id, ".data.zst")
    body = f"backup {backup_id}".encode()
    digest = hashlib.sha256(body).hexdigest()
    put_bytes(storage, key, body)
    manifest = Manifest(
        id=backup_id,
        category=Category.DATABASE,
        kind=kind,
        engine=engine,
        database="gantt",
        started_at=when,
        finished_at=when + timedelta(seconds=5),
        restore_point=when,
        position=position or {},
        base_id=base.id if base and kind is not BackupKind.FULL else None,
        parent_id=parent.id if parent and kind is not BackupKind.FULL else None,
        objects=(
            StoredObject(
                role="data",
                key=key,
                codec="zstd",
                size=len(body),
                sha256=digest,
                raw_size=len(body),
                raw_sha256=digest,
            ),
        ),
    )
    Catalog(storage, keyring).write(manifest)
    return manifest


def _synthetic(storage: Storage, keyring: Keyring, count: int) -> list[Manifest]:
    """``count`` signed backups of one object each (a full, then nine logs, and again)."""
    made: list[Manifest] = []
    start = datetime(2026, 10, 1, tzinfo=UTC)
    parent: Manifest | None = None
    base: Manifest | None = None
    for n in range(count):
        kind = BackupKind.FULL if n % 10 == 0 else BackupKind.LOG
        when = start + timedelta(minutes=10 * n)
        manifest = _signed(storage, keyring, kind, when, parent=parent, base=base)
        made.append(manifest)
        parent = manifest
        if kind is BackupKind.FULL:
            base = manifest
    return made


def test_a_sql_server_log_chain_gap_is_found_by_its_lsns() -> None:
    """Parent ids can be intact while the LSNs say a log is missing: SQL Server's own rules."""
    keyring = generate_keys().keyring()
    storage = MemoryStorage("primary")
    when = datetime(2026, 11, 20, tzinfo=UTC)

    def lsns(first: int, last: int) -> dict[str, object]:
        return {
            "first_lsn": first,
            "last_lsn": last,
            "checkpoint_lsn": first,
            "database_backup_lsn": first,
        }

    full = _signed(
        storage, keyring, BackupKind.FULL, when, engine="sqlserver", position=lsns(100, 200)
    )
    log1 = _signed(
        storage,
        keyring,
        BackupKind.LOG,
        when + timedelta(hours=1),
        parent=full,
        base=full,
        engine="sqlserver",
        position=lsns(200, 300),
    )
    tier = Tier("primary", storage, keyring)
    assert verify([tier], [GANTT], now=when + timedelta(days=1), read_data_percent=0).ok
    log2 = _signed(
        storage,
        keyring,
        BackupKind.LOG,
        when + timedelta(hours=2),
        parent=log1,
        base=full,
        engine="sqlserver",
        position=lsns(350, 400),
    )
    report = verify([tier], [GANTT], now=when + timedelta(days=1), read_data_percent=0)
    finding = _finding(report, "primary", BROKEN_CHAIN, log2.id, "gap")
    assert log1.id in finding.detail
    assert _kinds(report) == {BROKEN_CHAIN}


def test_the_request_budget_over_1000_backups_is_exact() -> None:
    keyring = generate_keys().keyring()
    counting = Counting(MemoryStorage("primary"))
    made = _synthetic(counting, keyring, 1000)
    counting.reset()
    tier = Tier("primary", counting, keyring)
    report = verify([tier], [GANTT], now=datetime(2026, 11, 29, tzinfo=UTC), read_data_percent=0)
    assert report.ok, report.findings[:5]
    keys = 2 * len(made)  # a manifest and a data object per backup
    expected = -(-keys // 1000) + len(made)  # a LIST per 1,000 keys + a GET per manifest
    assert expected == 1002
    assert counting.calls == {"LIST": 2, "GET": 1000, "HEAD": 0, "PUT": 0, "DELETE": 0}
    assert report.requests == counting.total == expected
    assert report.bytes_read == 0


def test_file_sets_tar_and_content_addressed_verify_clean_and_spot_strays() -> None:
    storage = MemoryStorage("primary")
    tier = Tier("primary", storage, KEYRING)
    members = [filesets.file("a.txt"), filesets.file("b.bin")]
    data = {"a.txt": b"alpha", "b.bin": b"beta" * 1000}
    config = filesets.store(storage, "tar", members, data=data)
    uploads = filesets.store(storage, "content", members, data=data)
    sets = [Series(Category.CONFIG, "config"), Series(Category.UPLOADS, "uploads")]
    report = verify([tier], sets, now=_later(), read_data_percent=100)
    assert report.ok, report.findings
    assert {b for _, b in report.sampled} == {config.id, uploads.id}
    content = next(o for o in uploads.objects if o.role.startswith("content:"))
    stale = content_key(Category.UPLOADS, "uploads", "ab" * 32, ".zst.age")
    misplaced = "uploads/uploads/content/ff/" + content.key.rsplit("/", 1)[1]
    for key in (stale, misplaced):
        put_bytes(storage, key, b"left over")
    report = verify([tier], sets, now=_later(), read_data_percent=0)
    assert {(f.series, f.kind) for f in report.findings} == {
        ("uploads/uploads", ORPHAN),
        ("uploads/uploads", FOREIGN_OBJECT),
    }
    assert stale in next(f.detail for f in report.findings if f.kind == ORPHAN)
    assert misplaced in next(f.detail for f in report.findings if f.kind == FOREIGN_OBJECT)


def test_the_table_of_a_series_is_bounded() -> None:
    report = VerifyReport(
        findings=[Finding("primary", LABEL, ORPHAN, f"key {n}") for n in range(1500)]
    )
    rows = report.table(LABEL)
    assert len(rows) == 1001 and rows[-1]["detail"] == "500 more finding(s) are in the run's log"


class _Down(MemoryStorage):
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        raise StorageError("list on s3://dr-bucket was denied (AccessDenied).")


def test_an_unreachable_tier_is_a_finding_and_the_others_are_still_checked(
    chain: tuple[list[Tier], list[Manifest]],
) -> None:
    tiers, _ = chain
    down = Tier("dr", _Down("dr"), tiers[0].keyring)
    report = _run([*tiers[:2], down])
    (finding,) = report.findings
    assert (finding.tier, finding.kind) == ("dr", "unreachable")
    assert "AccessDenied" in finding.detail
    assert [s.tier for s in report.summaries] == ["primary", "secondary"]
