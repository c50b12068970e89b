"""WAL fetched ahead of replay (``engines/postgres/prefetch.py``): the spool serves every
expected segment verified and in order through the generated ``restore_command`` script,
never holds more than its window, and hands every other name (and any it could not fetch)
to wal-fetch.  Segments are made as in test_wal_archive and pushed into real local tiers;
the script runs under /bin/sh as PostgreSQL would run it."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from backupflow.config import Settings
from backupflow.engines.postgres.archive import read_record
from backupflow.engines.postgres.prefetch import Prefetcher, replay_order
from backupflow.engines.postgres.restoring import read_report
from backupflow.storage import open_tiers
from tests.integration.test_wal_archive import DB, SYSID, _push, make_data_dir, make_segment


def _prefetcher(tmp_path: Path, settings: Settings, names: list[str], window: int) -> Prefetcher:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    report = scratch / "fetch-report.jsonl"
    report.touch(mode=0o600)
    return Prefetcher(
        open_tiers(settings), DB, SYSID, scratch / "wal-spool", names, {},
        report=report, chown=lambda _path: None, window=window,
    )  # fmt: skip


def _fallback(tmp_path: Path) -> str:
    """A stand-in for wal-fetch: records the name it was asked for, serves nothing."""
    script = tmp_path / "fallback.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {tmp_path}/fallback.log\nexit 1\n')
    script.chmod(0o700)
    return str(script)


def test_every_expected_segment_is_served_in_order_within_the_window(
    settings: Settings, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "cluster")
    primary = open_tiers(settings)[0]
    segments = [make_segment(data, segno) for segno in range(2, 14)]
    for segment in segments:
        _push(primary, data, segment)
    names = replay_order(
        {}, loose=True, tier=primary, database=DB, sysid=SYSID, timeline=1,
        segment_bytes=16 << 20,
    )  # fmt: skip
    assert names == [s.name for s in segments]
    prefetcher = _prefetcher(tmp_path, settings, names, window=3)
    script = prefetcher.write_script(tmp_path / "restore.sh", _fallback(tmp_path))
    most = 0
    stop = threading.Event()

    def watch() -> None:  # how many verified files wait in the spool, at most
        nonlocal most
        while not stop.is_set():
            ready = [p for p in prefetcher.spool.glob("0*") if "." not in p.name]
            most = max(most, len(ready))
            stop.wait(0.005)

    watcher = threading.Thread(target=watch)
    prefetcher.start()
    watcher.start()
    try:
        pg_wal = tmp_path / "pg_wal"
        pg_wal.mkdir()
        for segment in segments:  # as recovery asks: one name after the other
            result = subprocess.run(
                ["/bin/sh", str(script), segment.name, "pg_wal/RECOVERYXLOG"],
                cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert (pg_wal / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
        # a name past the archive's end, and a history file, go to wal-fetch
        for other in ("00000001000000000000000E", "00000002.history"):
            result = subprocess.run(
                ["/bin/sh", str(script), other, "pg_wal/RECOVERYXLOG"],
                cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            assert result.returncode == 1
    finally:
        stop.set()
        watcher.join()
        prefetcher.stop()
    assert 1 <= most <= 3
    assert (tmp_path / "fallback.log").read_text().split() == [
        "00000001000000000000000E",
        "00000002.history",
    ]
    fetched = [r for r in read_report(tmp_path / "scratch" / "fetch-report.jsonl")]
    assert sorted(str(r["name"]) for r in fetched) == names  # fetched in parallel
    assert {r["tier"] for r in fetched} == {"primary"}
    assert not prefetcher.spool.exists()


def test_a_damaged_first_copy_is_served_from_the_next_tier_and_said(
    settings: Settings, tmp_path: Path
) -> None:
    data = make_data_dir(tmp_path / "cluster")
    primary, secondary, _dr = open_tiers(settings)
    segment = make_segment(data, 3)
    _push(primary, data, segment)
    _push(secondary, data, segment)
    record = read_record(primary, DB, SYSID, segment.name)
    assert record is not None
    on_disk = Path(settings.repository.primary.url) / record.object.key
    raw = bytearray(on_disk.read_bytes())
    raw[len(raw) // 2] ^= 0x08
    on_disk.write_bytes(bytes(raw))
    prefetcher = _prefetcher(tmp_path, settings, [segment.name], window=2)
    script = prefetcher.write_script(tmp_path / "restore.sh", _fallback(tmp_path))
    prefetcher.start()
    try:
        result = subprocess.run(
            ["/bin/sh", str(script), segment.name, str(tmp_path / "RECOVERYXLOG")],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        prefetcher.stop()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
    [line] = read_report(tmp_path / "scratch" / "fetch-report.jsonl")
    assert line["tier"] == "secondary"
    assert "primary" in str(line["error"]) and "damaged" in str(line["error"])


def test_a_name_it_cannot_fetch_goes_to_wal_fetch(settings: Settings, tmp_path: Path) -> None:
    prefetcher = _prefetcher(tmp_path, settings, ["000000010000000000000009"], window=2)
    script = prefetcher.write_script(tmp_path / "restore.sh", _fallback(tmp_path))
    prefetcher.start()
    try:
        result = subprocess.run(
            ["/bin/sh", str(script), "000000010000000000000009", str(tmp_path / "X")],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        prefetcher.stop()
    assert result.returncode == 1  # what wal-fetch said
    assert (tmp_path / "fallback.log").read_text().split() == ["000000010000000000000009"]


def test_the_restore_report_names_every_file_served_from_another_tier(tmp_path: Path) -> None:
    from backupflow.engines.postgres.archive import FetchOutcome, append_report
    from backupflow.engines.postgres.restoring import REPORT_FILE, fallbacks
    from backupflow.engines.postgres.server import Copy

    report = tmp_path / REPORT_FILE
    append_report(report, FetchOutcome("000000010000000000000003", "fetched", "primary"))
    slipped = FetchOutcome(
        "000000010000000000000004", "fetched", "dr", error="primary: damaged (checksum)"
    )
    append_report(report, slipped)
    append_report(report, slipped)  # asked twice: said once

    lines = fallbacks(Copy(None, tmp_path))  # type: ignore[arg-type]

    assert lines == (
        "WAL file 000000010000000000000004 was served from the dr tier: primary: damaged "
        "(checksum)",
    )


def test_a_prefetcher_that_fails_hands_every_name_to_wal_fetch_at_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Prefetcher, pending: object) -> None:
        raise RuntimeError("the prefetch thread died")

    monkeypatch.setattr(Prefetcher, "_serve", broken)
    names = ["000000010000000000000007", "000000010000000000000008"]
    prefetcher = _prefetcher(tmp_path, settings, names, window=2)
    script = prefetcher.write_script(tmp_path / "restore.sh", _fallback(tmp_path))
    prefetcher.start()
    try:
        assert prefetcher._thread is not None
        prefetcher._thread.join(30)
        started = time.monotonic()
        for name in names:
            result = subprocess.run(
                ["/bin/sh", str(script), name, str(tmp_path / "X")],
                capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            assert result.returncode == 1
        assert time.monotonic() - started < 30  # no waiting on markers nobody serves
    finally:
        prefetcher.stop()
    assert (tmp_path / "fallback.log").read_text().split() == names
