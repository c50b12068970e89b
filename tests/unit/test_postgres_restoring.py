"""The PostgreSQL engine's pure parts: what each restore mode tells the copy, the
restore_command it runs, the WAL a log backup lists, and a base tar that tries to write
outside its folder."""

from __future__ import annotations

import io
import shlex
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupflow.engines.postgres.installing import old_options
from backupflow.engines.postgres.layout import extract_base, wal_since
from backupflow.engines.postgres.restoring import last_transaction, recovery_for, restore_command
from backupflow.engines.postgres.walnames import parse_wal_name, segment_name
from backupflow.errors import IntegrityError
from backupflow.models import BackupKind, Category, Manifest

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


def manifest(kind: BackupKind, minute: int, **position: Any) -> Manifest:
    return Manifest(
        id=f"20261126T05{minute:02d}00Z-{kind.value}-0a0b0c",
        category=Category.DATABASE,
        kind=kind,
        engine="postgres",
        database="pg",
        started_at=T0 + timedelta(minutes=minute),
        finished_at=T0 + timedelta(minutes=minute),
        restore_point=T0 + timedelta(minutes=minute),
        position={"system_identifier": "7", "timeline": 1, **position},
        objects=(),
    )


BASE = manifest(BackupKind.FULL, 0)
LOGS = [manifest(BackupKind.LOG, m, end_lsn=f"0/{m:X}000028") for m in (10, 20)]


@pytest.mark.parametrize(
    ("chain", "until", "expected"),
    [
        ([BASE, *LOGS], T0 + timedelta(minutes=15),
         {"recovery_target_time": "2026-11-26 05:15:00+00:00"}),
        ([BASE, *LOGS], T0 + timedelta(minutes=20),
         {"recovery_target_time": "2026-11-26 05:20:00+00:00"}),
        ([BASE, *LOGS], T0 + timedelta(minutes=25),
         {"recovery_target_time": "2026-11-26 05:25:00+00:00"}),
        ([BASE], T0, {"recovery_target": "immediate"}),
        ([BASE], T0 + timedelta(minutes=5),
         {"recovery_target_time": "2026-11-26 05:05:00+00:00"}),
        ([BASE, *LOGS], None, {"recovery_target_timeline": "1"}),
    ],
)  # fmt: skip
def test_each_restore_mode_sets_one_recovery_target(
    chain: list[Manifest], until: datetime | None, expected: dict[str, str]
) -> None:
    recovery = recovery_for(chain, until)
    assert recovery.settings == expected
    # Names outside the plan are served for --latest and for a target after the last
    # backup (WAL archived since); never for a target the backups cover.
    covered = until is not None and until <= chain[-1].restore_point
    assert recovery.loose is not covered


def test_the_latest_point_is_read_from_the_copys_log() -> None:
    log = (
        "LOG:  redo done at 0/5000148 system usage: CPU: user: 0.00 s\n"
        "LOG:  last completed transaction was at log time 2026-11-26 05:07:33.512804+00\n"
        "FATAL:  recovery ended before configured recovery target was reached\n"
    )
    assert last_transaction(log) == datetime(2026, 11, 26, 5, 7, 33, 512804, tzinfo=UTC)
    assert last_transaction("LOG: redo done") is None


def test_the_restore_command_quotes_every_part_and_doubles_percent_signs() -> None:
    command = restore_command("/opt/bf/bin/backupflow --x", Path("/srv/a%b c/plan.json"))
    assert command.endswith(" %f %p")
    head = command.removesuffix(" %f %p").replace("%%", "%")
    assert shlex.split(head) == [
        "/opt/bf/bin/backupflow", "--x", "wal-fetch", "--plan", "/srv/a%b c/plan.json",
    ]  # fmt: skip
    assert "%b" not in command.replace("%%", "")


def names(*items: str) -> list[Any]:
    return [parse_wal_name(n) for n in items]


def test_a_log_lists_what_came_after_its_parent_and_a_new_timeline_from_its_fork() -> None:
    seg = [segment_name(1, n) for n in range(1, 8)]
    archive = names(*seg, f"{seg[2]}.00000028.backup", "00000002.history",
                    f"{seg[4]}.partial", segment_name(2, 5), segment_name(2, 6))  # fmt: skip
    last = parse_wal_name(segment_name(2, 6))
    chosen = [n.name for n in wal_since(archive, 4, 1, last)]
    assert chosen == [  # replay order: by segment, then timeline
        "00000002.history", f"{seg[4]}.partial", seg[4], segment_name(2, 5), seg[5],
        segment_name(2, 6),
    ]  # fmt: skip
    # on one timeline: only the segments after the parent's last, through the switched one
    only = [n.name for n in wal_since(archive, 2, 1, parse_wal_name(seg[4]))]
    assert only == [f"{seg[2]}.00000028.backup", seg[2], seg[3], f"{seg[4]}.partial", seg[4]]


def _tar(member: tarfile.TarInfo, data: bytes = b"") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "base/../../x"])
def test_a_base_tar_never_writes_outside_its_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(IntegrityError, match="unsafe name"):
        extract_base(_tar(tarfile.TarInfo(name), b"x"), tmp_path / "data", lambda p: None)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def test_a_link_in_a_base_tar_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("pg_wal")
    link.type = tarfile.SYMTYPE
    link.linkname = "/tmp"
    with pytest.raises(IntegrityError, match="not a regular file"):
        extract_base(_tar(link), tmp_path / "data", lambda p: None)


def test_a_base_tar_lays_down_private_files(tmp_path: Path) -> None:
    written = extract_base(_tar(tarfile.TarInfo("global/pg_control"), b"abc"), tmp_path / "d",
                           lambda p: None)  # fmt: skip
    target = tmp_path / "d" / "global" / "pg_control"
    assert written == 3 and target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d" / "global").stat().st_mode & 0o777 == 0o700


def test_a_replaced_cluster_starts_again_with_the_options_it_ran_with(tmp_path: Path) -> None:
    (tmp_path / "postmaster.opts").write_text(
        '/usr/lib/postgresql/15/bin/postgres "-D" "/var/lib/postgresql/15/main" '
        '"-c" "config_file=/etc/postgresql/15/main/postgresql.conf"\n'
    )
    options = old_options(tmp_path)
    assert shlex.split(options) == ["-c", "config_file=/etc/postgresql/15/main/postgresql.conf"]
    assert old_options(tmp_path / "absent") == ""


def test_each_file_is_checked_against_the_backup_manifest_as_it_is_laid_down(
    tmp_path: Path,
) -> None:
    import hashlib
    import json

    from backupflow.engines.postgres.layout import manifest_checksums

    good = hashlib.sha256(b"abc").hexdigest()
    manifest = tmp_path / "backup_manifest"
    manifest.write_text(json.dumps({"Files": [
        {"Path": "global/pg_control", "Size": 3, "Checksum-Algorithm": "SHA256",
         "Checksum": good.upper()},
    ]}))  # fmt: skip
    checksums = manifest_checksums(manifest)
    assert checksums == {"global/pg_control": good}

    extract_base(_tar(tarfile.TarInfo("global/pg_control"), b"abc"), tmp_path / "ok",
                 lambda p: None, checksums=checksums)  # fmt: skip
    with pytest.raises(IntegrityError, match=r"global/pg_control .* does not match the SHA-256"):
        extract_base(_tar(tarfile.TarInfo("global/pg_control"), b"abd"), tmp_path / "bad",
                     lambda p: None, checksums=checksums)  # fmt: skip
    with pytest.raises(IntegrityError, match="lacks global/pg_control"):
        extract_base(_tar(tarfile.TarInfo("PG_VERSION"), b"15"), tmp_path / "short",
                     lambda p: None, checksums=checksums)  # fmt: skip

    # a manifest without SHA-256 (or not one at all) leaves the checksums to pg_verifybackup
    manifest.write_text(json.dumps({"Files": [{"Path": "x", "Checksum-Algorithm": "CRC32C",
                                              "Checksum": "00"}]}))  # fmt: skip
    assert manifest_checksums(manifest) is None
    manifest.write_text("not json")
    assert manifest_checksums(manifest) is None
