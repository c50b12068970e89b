"""SQLite engine: online-backup snapshots and page-level differential and log backups.

* full: a consistent snapshot through SQLite's online backup API;
* diff: the pages that differ from the base full's snapshot;
* log:  the pages that differ from the previous backup of the chain.

Every backup stores a page map (a 16-byte BLAKE2b digest per page, in page order) so the next
backup finds changed pages by streaming the parent's map beside the new snapshot: memory
stays constant whatever the database's size.  A restore applies full -> diff -> logs and
must reproduce the last snapshot byte for byte (its SHA-256 is in the manifest) before
``PRAGMA integrity_check`` runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import struct
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from backupflow.engines.base import (
    BackupSource,
    Capabilities,
    Dump,
    DumpFile,
    Engine,
    Installed,
)
from backupflow.errors import (
    EngineError,
    IntegrityError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.fsutil import fsync_dir
from backupflow.models import BackupKind

__all__ = ["SqliteEngine"]

DIGEST_BYTES = 16
DELTA_MAGIC = b"BFSQLD1\n"
_HEADER = struct.Struct(">IQ")  # page size, page count after applying
_PAGE_NO = struct.Struct(">Q")
_END = 0xFFFF_FFFF_FFFF_FFFF
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _quoted(identifier: str) -> str:
    """An SQLite identifier in double quotes, inner quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def _page_size(header: bytes) -> int:
    value = int.from_bytes(header[16:18], "big")
    return 65536 if value == 1 else value


def _digest(page: bytes) -> bytes:
    return hashlib.blake2b(page, digest_size=DIGEST_BYTES).digest()


def _read_exact(handle: BinaryIO, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        block = handle.read(size - len(data))
        if not block:
            raise IntegrityError(f"{what} ends early; the backup is damaged.")
        data += block
    return bytes(data)


class SqliteEngine(Engine):
    """Backs up and restores one SQLite database file."""

    name = "sqlite"
    capabilities = Capabilities(differential=True, log=True, point_in_time="backup")

    def __init__(self, path: Path, *, chunk_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes

    # -- backup ------------------------------------------------------------------------

    def check_source(self) -> None:
        if not self.path.is_file():
            raise SourceNotFoundError(
                f"the SQLite database {self.path} does not exist; "
                "check BACKUPFLOW_DATABASE__SQLITE_PATH."
            )
        with open(self.path, "rb") as handle:
            if handle.read(16) != _SQLITE_MAGIC:
                raise SourceNotFoundError(f"{self.path} is not an SQLite database.")

    def _snapshot(self, dest: Path) -> datetime:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            source = sqlite3.connect(uri, uri=True, isolation_level=None)
            try:
                # Pin the snapshot first: the backup copies exactly what this read transaction
                # sees, so the restore point is the moment it began (WAL or not).
                source.execute("BEGIN")
                source.execute("SELECT count(*) FROM sqlite_master").fetchone()
                taken = datetime.now(UTC)
                target = sqlite3.connect(dest)
                try:
                    source.backup(target)
                finally:
                    target.close()
                source.execute("ROLLBACK")
            finally:
                source.close()
        except sqlite3.Error as exc:
            raise EngineError(f"SQLite could not snapshot {self.path}: {exc}.") from exc
        return taken

    def dump(self, kind: BackupKind, parent: BackupSource | None, staging: Path) -> Dump:
        self.check_source()
        if kind is not BackupKind.FULL and parent is None:
            raise EngineError(f"a {kind.value} backup needs the backup it builds on.")
        staging.mkdir(parents=True, exist_ok=True)
        snapshot = staging / "snapshot.db"
        pages = staging / "pages.bin"
        taken = self._snapshot(snapshot)
        position: dict[str, object]
        if kind is BackupKind.FULL or parent is None:
            position = self._scan(snapshot, pages, parent=None, delta=None)
            files = (DumpFile("data", snapshot), DumpFile("pages", pages))
        else:
            delta = staging / "delta.bin"
            position = self._scan(snapshot, pages, parent=parent, delta=delta)
            position["parent_state_sha256"] = parent.manifest.position.get("state_sha256")
            files = (DumpFile("data", delta), DumpFile("pages", pages))
        return Dump(kind=kind, restore_point=taken, files=files, position=position)

    def _scan(
        self,
        snapshot: Path,
        pages_out: Path,
        *,
        parent: BackupSource | None,
        delta: Path | None,
    ) -> dict[str, object]:
        """One pass over the snapshot: page map, whole-file SHA-256 and (with a parent)
        the changed pages."""
        with open(snapshot, "rb") as handle:
            header = handle.read(100)
        page_size = _page_size(header)
        file_size = snapshot.stat().st_size
        if page_size < 512 or file_size % page_size:
            raise EngineError(f"the snapshot of {self.path} has an unexpected page layout.")
        page_count = file_size // page_size
        state = hashlib.sha256()
        changed = 0
        with ExitStack() as stack:
            src = stack.enter_context(open(snapshot, "rb"))
            map_out = stack.enter_context(open(pages_out, "wb"))
            parent_map: BinaryIO | None = None
            delta_out: BinaryIO | None = None
            if parent is not None and delta is not None:
                # Exits after the loop: reading the parent's map to its end verifies it.
                parent_map = stack.enter_context(parent.open_object("pages"))
                delta_out = stack.enter_context(open(delta, "wb"))
                delta_out.write(DELTA_MAGIC + _HEADER.pack(page_size, page_count))
                same_layout = parent.manifest.position.get("page_size") == page_size
                parent_pages = int(parent.manifest.position.get("page_count", 0))
            for number in range(page_count):
                page = src.read(page_size)
                state.update(page)
                digest = _digest(page)
                map_out.write(digest)
                if parent_map is None or delta_out is None:
                    continue
                old = parent_map.read(DIGEST_BYTES) if number < parent_pages else b""
                if not same_layout or old != digest:
                    delta_out.write(_PAGE_NO.pack(number))
                    delta_out.write(page)
                    changed += 1
            if delta_out is not None:
                delta_out.write(_PAGE_NO.pack(_END))
        return {
            "page_size": page_size,
            "page_count": page_count,
            "state_sha256": state.hexdigest(),
            "changed_pages": changed if delta is not None else page_count,
        }

    # -- restore -----------------------------------------------------------------------

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> None:
        if not chain or chain[0].manifest.kind is not BackupKind.FULL:
            raise EngineError("a SQLite restore chain must start with a full backup.")
        with chain[0].open_object("data") as src, open(scratch, "xb") as out:
            shutil.copyfileobj(src, out, self.chunk_bytes)
        for step in chain[1:]:
            with step.open_object("data") as src, open(scratch, "r+b") as out:
                self._apply(src, out, step.manifest.id)
        last = chain[-1].manifest
        expected = last.position.get("state_sha256")
        state = hashlib.sha256()
        with open(scratch, "rb") as handle:
            while block := handle.read(self.chunk_bytes):
                state.update(block)
            os.fsync(handle.fileno())
        if state.hexdigest() != expected:
            raise IntegrityError(
                f"the database rebuilt from backup {last.id} does not match the snapshot it "
                "recorded (SHA-256 differs); the chain is inconsistent."
            )
        self.integrity_check(scratch)

    def _apply(self, src: BinaryIO, out: BinaryIO, backup_id: str) -> None:
        what = f"the page delta of backup {backup_id}"
        if _read_exact(src, len(DELTA_MAGIC), what) != DELTA_MAGIC:
            raise IntegrityError(f"{what} has an unknown format.")
        page_size, page_count = _HEADER.unpack(_read_exact(src, _HEADER.size, what))
        while True:
            (number,) = _PAGE_NO.unpack(_read_exact(src, _PAGE_NO.size, what))
            if number == _END:
                break
            if number >= page_count:
                raise IntegrityError(f"{what} writes page {number} beyond the database's end.")
            out.seek(number * page_size)
            out.write(_read_exact(src, page_size, what))
        out.truncate(page_count * page_size)

    def integrity_check(self, database: Path) -> None:
        """Run ``PRAGMA integrity_check`` read-only; anything but ``ok`` is an error."""
        uri = f"file:{quote(str(database.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise IntegrityError(f"SQLite cannot open the restored database: {exc}.") from exc
        if rows != [("ok",)]:
            detail = "; ".join(str(row[0]) for row in rows[:3])
            raise IntegrityError(f"the restored database fails PRAGMA integrity_check: {detail}.")

    def install(self, scratch: Path, target: Path, *, replace: bool, stamp: str) -> Installed:
        kept: list[Path] = []
        leftovers = [Path(f"{target}{suffix}") for suffix in _SIDE_FILES]
        if target.exists() or any(p.exists() for p in leftovers):
            if target.exists() and not replace:
                raise RestoreTargetError(
                    f"{target} already exists; pass --replace to replace it (the current file "
                    "is kept aside) or choose another path with --into."
                )
            # A stale -wal next to the restored file would be replayed into it: keep it aside.
            for suffix in ("", *_SIDE_FILES):
                current = Path(f"{target}{suffix}")
                if current.exists():
                    aside = Path(f"{target}.before-restore-{stamp}{suffix}")
                    os.replace(current, aside)
                    kept.append(aside)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, target)
        fsync_dir(target.parent)
        return Installed(target=target, kept_aside=tuple(kept))

    def smoke(self, target: Path) -> dict[str, int]:
        """Row counts of every table of the restored database."""
        uri = f"file:{quote(str(target.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {
                table: int(conn.execute(f"SELECT COUNT(*) FROM {_quoted(table)}").fetchone()[0])
                for table in tables
            }
        finally:
            conn.close()

    def default_target(self, restore_point: datetime) -> Path:
        stamp = restore_point.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.path.with_name(f"{self.path.stem}.restored-{stamp}{self.path.suffix or '.db'}")

    def live_target(self) -> Path:
        return self.path
