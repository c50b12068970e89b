"""The WAL archive (``wal-push`` / ``wal-fetch``) against real tiers: local folders and S3
through moto's HTTP server; in process for the outcomes, as processes for exit codes.

The WAL files are made here: a segment is 16 MiB of random bytes behind a real long page
header (magic, this cluster's system identifier, segment size), and the "data folder" holds
a ``global/pg_control`` whose first 8 bytes are that identifier, as a cluster's does.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backupflow.codecs import get_codec
from backupflow.config import Settings
from backupflow.engines.postgres.archive import (
    FetchPlan,
    WalConflictError,
    archived,
    archived_objects,
    fetch_wal,
    push_wal,
    read_plan,
    read_record,
    system_identifier_of,
    write_plan,
)
from backupflow.engines.postgres.walnames import segment_name
from backupflow.envelope import seal
from backupflow.errors import ForeignManifestError, IntegrityError, ParameterError, StorageError
from backupflow.keys import generate_keys
from backupflow.storage import Storage, StorageWrapper, Tier, open_tiers
from tests.support.keys import key_env
from tests.support.s3 import MotoServer, client_for, make_bucket

SEGMENT = 16 * 1024 * 1024
SYSID = 7_309_876_543_210_123_456
DB = "gantt"
CLI = [sys.executable, "-m", "backupflow_app"]


def make_data_dir(root: Path, sysid: int = SYSID) -> Path:
    data = root / "data"
    (data / "global").mkdir(parents=True, exist_ok=True)
    (data / "pg_wal").mkdir(exist_ok=True)
    (data / "global" / "pg_control").write_bytes(struct.pack("<Q", sysid) + b"\0" * 8184)
    return data


def make_segment(
    data: Path, segno: int, *, timeline: int = 1, sysid: int = SYSID, seed: bytes = b""
) -> Path:
    """A WAL segment file in ``data/pg_wal``: a long page header, then random bytes."""
    name = segment_name(timeline, segno)
    header = struct.pack(
        "<HHIQI4xQII", 0xD110, 0x0002, timeline, segno * SEGMENT, 0, sysid, SEGMENT, 8192
    )
    body = (seed or os.urandom(32)) * ((SEGMENT - len(header)) // 32 + 1)
    path = data / "pg_wal" / name
    path.write_bytes(header + os.urandom(4096) + body[: SEGMENT - len(header) - 4096])
    return path


def push_timing(tier: Tier, data: Path, count: int, first: int = 1) -> list[float]:
    """Seconds per ``push_wal`` of ``count`` fresh 16 MiB segments into ``tier`` (in process:
    what one wal-push costs beyond interpreter start-up).  For ``make bench``."""
    codec = get_codec("zstd")
    timings = []
    for segno in range(first, first + count):
        path = make_segment(data, segno)
        started = time.perf_counter()
        push_wal(tier, DB, path.relative_to(data), data_dir=data, codec=codec)
        timings.append(time.perf_counter() - started)
        path.unlink()
    return timings


def command_push_timing(env: dict[str, str], data: Path, count: int, first: int = 1) -> list[float]:
    """Seconds per ``backupflow wal-push`` process of ``count`` fresh 16 MiB segments, run
    the way PostgreSQL runs it (cwd = the data folder, ``%p`` relative): the archive latency
    a server sees, interpreter start-up included.  For ``make bench``."""
    timings = []
    for segno in range(first, first + count):
        path = make_segment(data, segno)
        started = time.perf_counter()
        result = subprocess.run(
            [*CLI, "wal-push", str(path.relative_to(data))],
            env=env,
            cwd=data,
            capture_output=True,
            text=True,
            check=False,
        )
        timings.append(time.perf_counter() - started)
        assert result.returncode == 0, result.stderr
        path.unlink()
    return timings


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)


@pytest.fixture
def s3_settings(settings: Settings, moto_server: MotoServer) -> Settings:
    bucket = f"wal-{uuid.uuid4().hex[:10]}"
    make_bucket(client_for("us-east-1", moto_server.url), bucket, "us-east-1")
    primary = settings.repository.primary.model_copy(
        update={
            "url": f"s3://{bucket}/repo",
            "region": "us-east-1",
            "endpoint_url": moto_server.url,
            "addressing_style": "path",
        }
    )
    repository = settings.repository.model_copy(update={"primary": primary, "request_attempts": 1})
    return settings.model_copy(update={"repository": repository})


def _push(tier: Tier, data: Path, path: Path) -> object:
    return push_wal(tier, DB, path.relative_to(data), data_dir=data, codec=get_codec("zstd"))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_push_then_fetch_gives_the_same_bytes(
    where: str, settings: Settings, s3_settings: Settings, data: Path, tmp_path: Path
) -> None:
    tiers = open_tiers(s3_settings if where == "s3" else settings)
    segment = make_segment(data, 3)
    history = data / "pg_wal" / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    assert system_identifier_of(data) == SYSID
    assert _push(tiers[0], data, segment).stored  # type: ignore[attr-defined]
    assert _push(tiers[0], data, history).stored  # type: ignore[attr-defined]
    assert [n.name for n in archived(tiers[0], DB, SYSID)] == [history.name, segment.name]

    dest = tmp_path / "restore" / "RECOVERYXLOG"
    dest.parent.mkdir()
    outcome = fetch_wal(tiers, DB, SYSID, segment.name, dest)
    assert (outcome.outcome, outcome.tier) == ("fetched", "primary")
    assert dest.read_bytes() == segment.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o600
    assert fetch_wal(tiers, DB, SYSID, history.name, dest).outcome == "fetched"
    assert dest.read_text() == history.read_text()
    assert fetch_wal(tiers, DB, SYSID, segment_name(1, 4), dest).outcome == "missing"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temp left

    # what the log job lists: the file through the pipeline and the record as stored
    objects = archived_objects(tiers[0], DB, SYSID, [segment.name])
    assert [o.role for o in objects] == [
        f"wal:{SYSID}/{segment.name}",
        f"walrec:{SYSID}/{segment.name}",
    ]
    assert objects[0].raw_size == SEGMENT and objects[0].encryption == "age-v1-x25519"
    assert objects[0].size < SEGMENT // 2  # compressed
    assert objects[1].codec == "none" and objects[1].encryption is None


def test_a_second_push_of_the_same_segment_succeeds_other_content_is_refused(
    settings: Settings, data: Path
) -> None:
    primary = open_tiers(settings)[0]
    segment = make_segment(data, 5)
    first = _push(primary, data, segment)
    record = read_record(primary, DB, SYSID, segment.name)
    assert record is not None
    again = _push(primary, data, segment)
    assert again.stored is False  # type: ignore[attr-defined]
    assert read_record(primary, DB, SYSID, segment.name) == record

    original = segment.read_bytes()
    make_segment(data, 5)  # same name, other bytes
    with pytest.raises(WalConflictError, match=r"refuses 000000010000000000000005: .* other"):
        _push(primary, data, segment)
    assert read_record(primary, DB, SYSID, segment.name) == record
    dest = data / "pg_wal" / "RECOVERYXLOG"
    fetch_wal([primary], DB, SYSID, segment.name, dest)
    assert dest.read_bytes() == original
    del first


def test_a_segment_of_another_cluster_or_a_short_one_is_not_archived(
    settings: Settings, data: Path
) -> None:
    primary = open_tiers(settings)[0]
    foreign = make_segment(data, 6, sysid=SYSID + 1)
    with pytest.raises(IntegrityError, match=f"belongs to the cluster {SYSID + 1}"):
        _push(primary, data, foreign)
    short = make_segment(data, 7)
    short.write_bytes(short.read_bytes()[: SEGMENT // 2])
    with pytest.raises(IntegrityError, match="not a whole segment"):
        _push(primary, data, short)
    assert archived(primary, DB, SYSID) == []


def test_a_tier_that_does_not_answer_is_not_taken_for_missing(
    settings: Settings, s3_settings: Settings, data: Path, tmp_path: Path
) -> None:
    """Exit 1 would make PostgreSQL end recovery early at the wrong point: an unreachable
    tier that might hold the file is "unavailable" (126), unless another tier serves it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    primary = s3_settings.repository.primary.model_copy(
        update={"endpoint_url": f"http://127.0.0.1:{dead}"}
    )
    repository = s3_settings.repository.model_copy(update={"primary": primary})
    down = open_tiers(s3_settings.model_copy(update={"repository": repository}))[0]
    secondary = open_tiers(settings)[1]
    segment = make_segment(data, 14)
    push_wal(secondary, DB, segment.relative_to(data), data_dir=data, codec=get_codec("zstd"))
    dest = tmp_path / "RECOVERYXLOG"
    alone = fetch_wal([down], DB, SYSID, segment.name, dest)
    assert alone.outcome == "unavailable" and "connect" in (alone.error or "").lower()
    served = fetch_wal([down, secondary], DB, SYSID, segment.name, dest)
    assert (served.outcome, served.tier) == ("fetched", "secondary")
    assert dest.read_bytes() == segment.read_bytes()
    with pytest.raises(StorageError):  # and a push there fails: PostgreSQL keeps the file
        push_wal(down, DB, segment.relative_to(data), data_dir=data, codec=get_codec("zstd"))


def _copy_to(source: Tier, target: Tier, name: str) -> None:
    """What the log job does: the file and its record, as stored, to another tier."""
    prefix = f"database/{DB}/wal/{SYSID}/{name}"
    for info in source.storage.list(prefix):
        with source.storage.open(info.key) as handle:
            target.storage.put(info.key, [handle.read()])


def test_a_damaged_copy_is_caught_and_the_next_tier_serves(
    settings: Settings, data: Path, tmp_path: Path
) -> None:
    primary, secondary, _dr = open_tiers(settings)
    segment = make_segment(data, 9)
    _push(primary, data, segment)
    _copy_to(primary, secondary, segment.name)
    stored = read_record(primary, DB, SYSID, segment.name)
    assert stored is not None
    on_disk = Path(settings.repository.primary.url) / stored.object.key
    raw = bytearray(on_disk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    on_disk.write_bytes(bytes(raw))

    dest = tmp_path / "RECOVERYXLOG"
    alone = fetch_wal([primary], DB, SYSID, segment.name, dest)
    assert alone.outcome == "damaged" and "damaged" in (alone.error or "")
    assert not dest.exists()  # nothing unverified reaches PostgreSQL
    both = fetch_wal([primary, secondary], DB, SYSID, segment.name, dest)
    assert (both.outcome, both.tier) == ("fetched", "secondary")
    assert dest.read_bytes() == segment.read_bytes()


def test_a_forged_record_is_ignored(settings: Settings, data: Path, tmp_path: Path) -> None:
    primary, secondary, _dr = open_tiers(settings)
    segment = make_segment(data, 10)
    _push(primary, data, segment)
    _copy_to(primary, secondary, segment.name)
    key = f"database/{DB}/wal/{SYSID}/{segment.name}.rec"
    with primary.storage.open(key) as handle:
        envelope = json.loads(handle.read())
    import base64

    payload = base64.b64decode(envelope["payload"])
    primary.storage.put(key, [seal(payload, generate_keys().keyring())])  # another key
    with pytest.raises(ForeignManifestError, match="signed by no trusted key"):
        read_record(primary, DB, SYSID, segment.name)
    dest = tmp_path / "RECOVERYXLOG"
    assert fetch_wal([primary], DB, SYSID, segment.name, dest).outcome == "damaged"
    served = fetch_wal([primary, secondary], DB, SYSID, segment.name, dest)
    assert (served.outcome, served.tier) == ("fetched", "secondary")
    # a push over a record it cannot authenticate refuses: a kept log may pin that object
    with primary.storage.open(key) as handle:
        before = handle.read()
    with pytest.raises(WalConflictError, match=r"cannot be authenticated.*nothing was overwritten"):
        push_wal(
            primary,
            DB,
            segment.relative_to(data),
            data_dir=data,
            codec=get_codec("zstd"),
        )
    with primary.storage.open(key) as handle:
        assert handle.read() == before


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "000000010000000000000001/../x",
        "00000001000000000000000a",
        "0000000100000000000000010",
        "",
        "00000000.history",
    ],
)
def test_names_that_are_not_wal_names_are_refused(
    name: str, settings: Settings, data: Path, tmp_path: Path
) -> None:
    primary = open_tiers(settings)[0]
    with pytest.raises(ParameterError, match=r"WAL file name|timeline 0"):
        fetch_wal([primary], DB, SYSID, name, tmp_path / "x")
    if name and "/" not in name:
        (data / "pg_wal" / name).write_bytes(b"x")
        with pytest.raises(ParameterError):
            _push(primary, data, data / "pg_wal" / name)


def test_fetch_never_writes_through_a_link_at_dest(
    settings: Settings, data: Path, tmp_path: Path
) -> None:
    primary = open_tiers(settings)[0]
    segment = make_segment(data, 11)
    _push(primary, data, segment)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    dest = tmp_path / "RECOVERYXLOG"
    dest.symlink_to(victim)
    assert fetch_wal([primary], DB, SYSID, segment.name, dest).outcome == "fetched"
    assert victim.read_text() == "keep me"
    assert not dest.is_symlink() and dest.read_bytes() == segment.read_bytes()


def _env(settings: Settings) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    return {
        **base,
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": settings.repository.primary.url,
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": settings.repository.secondary.url,
        "BACKUPFLOW_REPOSITORY__DR__URL": settings.repository.dr.url,
        "BACKUPFLOW_DATABASE__NAME": DB,
        "BACKUPFLOW_DATABASE__ARCHIVER_IDLE_SECONDS": "20",
        **key_env(),
    }


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(settings: Settings, data: Path) -> Run:
    def _run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env={**_env(settings), **(extra or {})},
            cwd=data,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return _run


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_the_commands_exit_codes_and_messages(
    run: Run, settings: Settings, data: Path, tmp_path: Path
) -> None:
    segment = make_segment(data, 12)
    pushed = run("wal-push", f"pg_wal/{segment.name}")
    assert pushed.returncode == 0, pushed.stderr
    assert run("wal-push", f"pg_wal/{segment.name}").returncode == 0  # idempotent
    original = segment.read_bytes()
    make_segment(data, 12)
    refused = run("wal-push", f"pg_wal/{segment.name}")
    assert refused.returncode == 1
    assert f"refuses {segment.name}" in _one_error_line(refused)
    assert run("wal-push", "pg_wal/../x").returncode == 2
    assert run("wal-push", "--database", "../up", f"pg_wal/{segment.name}").returncode == 3
    unsigned = run(
        "wal-push", f"pg_wal/{segment.name}", extra={"BACKUPFLOW_CRYPTO__SIGNING_KEY": ""}
    )
    assert unsigned.returncode == 3 and "SIGNING_KEY" in _one_error_line(unsigned)
    gone = run("wal-push", f"pg_wal/{segment_name(1, 13)}")
    assert gone.returncode == 1 and "cannot be read" in _one_error_line(gone)
    bad_config = run(
        "wal-push", f"pg_wal/{segment.name}", extra={"BACKUPFLOW_CRYPTO__SIGNING_KEY": "nonsense"}
    )
    assert bad_config.returncode == 3
    _one_error_line(bad_config)

    fetched = run("wal-fetch", segment.name, "pg_wal/RECOVERYXLOG")
    assert fetched.returncode == 0, fetched.stderr
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == original
    missing = run("wal-fetch", segment_name(1, 13), "pg_wal/RECOVERYXLOG")
    assert (missing.returncode, missing.stderr) == (1, "")
    # every other failure must abort recovery (126), never look like "not archived"
    assert run("wal-fetch", "../x", "pg_wal/RECOVERYXLOG").returncode == 126
    assert run("wal-fetch", "--bogus", segment.name, "x").returncode == 126
    no_keys = run(
        "wal-fetch",
        segment.name,
        "pg_wal/RECOVERYXLOG",
        extra={"BACKUPFLOW_CRYPTO__IDENTITIES": ""},
    )
    assert no_keys.returncode == 126
    assert "IDENTITIES" in _one_error_line(no_keys)


def test_a_plan_serves_only_its_files_unless_loose(
    run: Run, settings: Settings, data: Path, tmp_path: Path
) -> None:
    primary, secondary, _dr = open_tiers(settings)
    planned, extra = make_segment(data, 20), make_segment(data, 21)
    for segment in (planned, extra):
        _push(primary, data, segment)
    objects = archived_objects(primary, DB, SYSID, [planned.name])
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    report = scratch / "fetch-report.jsonl"
    plan = FetchPlan(
        database=DB,
        system_identifier=str(SYSID),
        tiers=("secondary", "primary"),
        files={planned.name: objects[0]},
        report=report,
    )
    plan_file = scratch / "plan.json"
    write_plan(plan_file, plan)
    assert plan_file.stat().st_mode & 0o777 == 0o600
    assert read_plan(plan_file) == plan

    dest = "pg_wal/RECOVERYXLOG"
    assert run("wal-fetch", "--plan", str(plan_file), planned.name, dest).returncode == 0
    assert (data / dest).read_bytes() == planned.read_bytes()
    assert run("wal-fetch", "--plan", str(plan_file), extra.name, dest).returncode == 1
    loose = scratch / "loose.json"
    write_plan(loose, plan.model_copy(update={"loose": True}))
    assert run("wal-fetch", "--plan", str(loose), extra.name, dest).returncode == 0
    assert (data / dest).read_bytes() == extra.read_bytes()
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(ln["name"], ln["outcome"], ln["tier"], ln["planned"]) for ln in lines] == [
        (planned.name, "fetched", "primary", True),
        (extra.name, "missing", None, False),
        (extra.name, "fetched", "primary", False),
    ]

    # a planned file that no tier holds: "missing" (1), marked planned (a gap, for the engine)
    gone = segment_name(1, 22)
    absent = objects[0].model_copy(
        update={"role": f"wal:{SYSID}/{gone}", "key": objects[0].key.replace(planned.name, gone)}
    )
    gap = scratch / "gap.json"
    write_plan(gap, plan.model_copy(update={"files": {gone: absent}}))
    assert run("wal-fetch", "--plan", str(gap), gone, dest).returncode == 1
    assert json.loads(report.read_text().splitlines()[-1])["planned"] is True

    # a planned file damaged on every tier: 126 and a "damaged" line for the engine
    on_disk = Path(settings.repository.primary.url) / objects[0].key
    on_disk.write_bytes(on_disk.read_bytes()[:-1] + b"\0")
    damaged = run("wal-fetch", "--plan", str(plan_file), planned.name, dest)
    assert damaged.returncode == 126
    assert "damaged" in _one_error_line(damaged)
    assert json.loads(report.read_text().splitlines()[-1])["outcome"] == "damaged"
    del secondary


def test_push_latency_per_segment(settings: Settings, s3_settings: Settings, data: Path) -> None:
    """A figure for the bench (printed with -s), and a bound that catches a gross slowdown."""
    for label, chosen in (("local", settings), ("s3", s3_settings)):
        timings = sorted(push_timing(open_tiers(chosen)[0], data, 4, first=40))
        print(f"wal-push in process, {label}: median {timings[len(timings) // 2]:.3f}s")
        assert timings[len(timings) // 2] < 10


def _imports(settings: Settings, data: Path, segno: int, **extra: str) -> set[str]:
    make_segment(data, segno)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "backupflow_app", "wal-push",
         f"pg_wal/{segment_name(1, segno)}"],
        env={**_env(settings), **extra}, cwd=data, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines()}


def test_the_commands_import_no_prefect(settings: Settings, data: Path) -> None:
    """wal-push runs once per segment: its start-up is archive latency.  Through the
    resident archiver a push imports none of the pipeline (only the standard library);
    pushing in-process (the archiver switched off) it still imports no Prefect (nor boto3
    for a local tier)."""
    first = _imports(settings, data, 50)  # starts the archiver
    assert "backupflow_app.walclient" in first
    served = _imports(settings, data, 51)
    assert "backupflow_app.walclient" in served
    assert not {"backupflow.engines.postgres.archive", "pydantic", "typer", "prefect"} & served
    primary = open_tiers(settings)[0]
    assert {n.name for n in archived(primary, DB, SYSID)} >= {segment_name(1, s) for s in (50, 51)}

    alone = _imports(settings, data, 52, BACKUPFLOW_WAL_ARCHIVER="off")
    assert "backupflow.engines.postgres.archive" in alone
    assert not {"prefect", "boto3", "flows", "tasks"} & alone


def test_history_files_are_always_served_and_a_second_partial_is_kept_aside(
    settings: Settings, data: Path, tmp_path: Path
) -> None:
    """A restore choosing its new timeline asks for the history files above its own: they are
    served even by a plan that does not list them (else it would reuse a timeline the archive
    holds, and its wal-push would be refused for good).  Two restores that fork in the same
    segment both push a .partial of it: the second is kept aside, not refused."""
    primary = open_tiers(settings)[0]
    history = data / "pg_wal" / "00000002.history"
    history.write_bytes(b"1\t0/5000000\tbefore 2026-11-26 10:00:00+00\n")
    _push(primary, data, history)
    dest = tmp_path / "RECOVERYHISTORY"
    served = fetch_wal([primary], DB, SYSID, history.name, dest, lookup=False)
    assert served.outcome == "fetched" and dest.read_bytes() == history.read_bytes()

    segment = make_segment(data, 5)
    partial = segment.with_name(f"{segment.name}.partial")
    segment.rename(partial)
    _push(primary, data, partial)
    first = read_record(primary, DB, SYSID, partial.name)
    assert first is not None
    other = make_segment(data, 5)  # the same segment, forked differently
    other.rename(partial)
    warnings: list[str] = []
    push_wal(
        primary,
        DB,
        partial.relative_to(data),
        data_dir=data,
        codec=get_codec("zstd"),
        warn=warnings.append,
    )
    assert read_record(primary, DB, SYSID, partial.name) == first  # the first one stays
    assert "already archived with other content" in warnings[0]


class _HeldRecords(StorageWrapper):
    """Holds the first record creation (after its object is stored) until released."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.reached = threading.Event()
        self.release = threading.Event()

    def create(self, key: str, data: bytes) -> bool:
        if key.endswith(".rec") and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(60), "the held record was never released"
        return super().create(key, data)


def _wal_objects(tier: Tier, name: str) -> list[str]:
    return [i.key for i in tier.storage.list(f"database/{DB}/wal/") if name in i.key]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_racing_pushes_of_one_segment_leave_a_record_that_names_its_object(
    where: str, settings: Settings, s3_settings: Settings, data: Path, tmp_path: Path
) -> None:
    """The reproduction from issue 22: push A stores its object and its record write is
    held; push B of the same file runs to completion; then A's record lands.  Both succeed,
    and the record names an object the tier holds, so the segment can be fetched."""
    tier = open_tiers(s3_settings if where == "s3" else settings)[0]
    held = _HeldRecords(tier.storage)
    slow = Tier(tier.name, held, tier.keyring)
    segment = make_segment(data, 21)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_push, slow, data, segment)
        assert held.reached.wait(60)
        second = _push(tier, data, segment)  # runs to completion meanwhile
        held.release.set()
        late = first.result(timeout=60)

    assert second.stored is True  # type: ignore[attr-defined]
    assert late.stored is False  # type: ignore[attr-defined]  # it found B's record
    record = read_record(tier, DB, SYSID, segment.name)
    assert record is not None
    assert _wal_objects(tier, segment.name) == sorted(
        [record.object.key, record.object.key.rsplit("/", 1)[0] + f"/{segment.name}.rec"]
    )  # A removed its own object: one object, one record
    dest = tmp_path / "RECOVERYXLOG"
    assert fetch_wal([tier], DB, SYSID, segment.name, dest).outcome == "fetched"
    assert dest.read_bytes() == segment.read_bytes()


def test_a_racing_push_of_other_content_loses_and_says_so(
    settings: Settings, data: Path, tmp_path: Path
) -> None:
    tier = open_tiers(settings)[0]
    held = _HeldRecords(tier.storage)
    slow = Tier(tier.name, held, tier.keyring)
    segment = make_segment(data, 22)
    original = segment.read_bytes()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_push, slow, data, segment)
        assert held.reached.wait(60)
        # B pushes other bytes under the same name (another cluster sharing the series)
        other = make_data_dir(tmp_path / "other")
        twin = make_segment(other, 22)
        _push(tier, other, twin)
        held.release.set()
        with pytest.raises(WalConflictError, match="other content"):
            first.result(timeout=60)
    record = read_record(tier, DB, SYSID, segment.name)
    assert record is not None and record.object.raw_size == SEGMENT
    assert len(_wal_objects(tier, segment.name)) == 2  # B's object and record only
    dest = tmp_path / "RECOVERYXLOG"
    fetch_wal([tier], DB, SYSID, segment.name, dest)
    assert dest.read_bytes() == twin.read_bytes() != original


def test_a_damaged_archived_copy_is_not_taken_for_archived(
    settings: Settings, data: Path, tmp_path: Path
) -> None:
    """Same size, other bytes: a re-push notices (hashes, not sizes) and stores it again."""
    tier = open_tiers(settings)[0]
    segment = make_segment(data, 23)
    _push(tier, data, segment)
    record = read_record(tier, DB, SYSID, segment.name)
    assert record is not None
    on_disk = Path(settings.repository.primary.url) / record.object.key
    raw = bytearray(on_disk.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    on_disk.write_bytes(bytes(raw))
    warnings: list[str] = []

    again = push_wal(
        tier, DB, segment.relative_to(data), data_dir=data, codec=get_codec("zstd"),
        warn=warnings.append,
    )  # fmt: skip

    assert again.stored is True
    assert "damaged" in warnings[0]
    repaired = read_record(tier, DB, SYSID, segment.name)
    assert repaired is not None and repaired.object.key != record.object.key
    dest = tmp_path / "RECOVERYXLOG"
    assert fetch_wal([tier], DB, SYSID, segment.name, dest).outcome == "fetched"
    assert dest.read_bytes() == segment.read_bytes()


def test_objects_no_record_names_are_removed_after_the_grace_period(
    settings: Settings, data: Path
) -> None:
    """A push killed between its object and its record leaves an object nobody names; the
    next clean-up removes it once older than the grace period, never the named one."""
    from datetime import UTC, datetime, timedelta

    from backupflow.engines.postgres.pruning import remove_loose_wal
    from backupflow.models import Category

    tier = open_tiers(settings)[0]
    segment = make_segment(data, 24)
    _push(tier, data, segment)
    record = read_record(tier, DB, SYSID, segment.name)
    assert record is not None
    orphan = re.sub(r"\.p[0-9a-f]{16}\.", ".p0123456789abcdef.", record.object.key)
    assert orphan != record.object.key
    tier.storage.put(orphan, [b"a killed push's object"])
    lone = make_segment(data, 25)  # killed before its record: no record at all
    lone_key = record.object.key.replace(segment.name, lone.name)
    tier.storage.put(lone_key, [b"another killed push's object"])
    now = datetime.now(UTC)

    fresh = remove_loose_wal(tier, Category.DATABASE, DB, now=now, grace=timedelta(minutes=60))
    later = remove_loose_wal(
        tier, Category.DATABASE, DB, now=now + timedelta(hours=2), grace=timedelta(minutes=60)
    )

    assert fresh == []  # a push in progress writes its object before its record
    assert sorted(later) == sorted([orphan, lone_key])
    assert record.object.key in _wal_objects(tier, segment.name)
