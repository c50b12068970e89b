"""SQLite engine: online-backup snapshots and page-level differential and log backups.

* full: a consistent snapshot through SQLite's online backup API;
* diff: the pages that differ from the base full's snapshot;
* log:  the pages that differ from the previous backup of the chain.

Every backup stores a page map (a 16-byte BLAKE2b digest per page, in page order) so the next
backup finds changed pages by streaming the parent's map beside the new snapshot: memory
stays constant whatever the database's size.  A restore applies full -> diff -> logs and
must reproduce the last snapshot byte for byte (its SHA-256 is in the manifest) before
``PRAGMA integrity_check`` runs.

Size: one engine, its page-delta format (written by a backup, applied by a restore) and the
checks between them belong together; split, each half would be unreadable alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import stat
import struct
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
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
    Restored,
)
from backupflow.errors import (
    EngineError,
    IntegrityError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.fsutil import (
    PRIVATE_FILE,
    create_private_file,
    ensure_private_dir,
    free_bytes,
    fsync_dir,
    readable_size,
)
from backupflow.models import BackupKind, Manifest, compact
from backupflow.vocabulary import flag

__all__ = ["SqliteEngine"]

DIGEST_BYTES = 16
DELTA_MAGIC = b"BFSQLD1\n"
_HEADER = struct.Struct(">IQ")  # page size, page count after applying
_PAGE_NO = struct.Struct(">Q")
_END = 0xFFFF_FFFF_FFFF_FFFF
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")
_MAX_PAGES = 0xFFFF_FFFE  # SQLite's largest page count
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _quoted(identifier: str) -> str:
    """An SQLite identifier in double quotes, inner quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def _page_size(header: bytes) -> int:
    value = int.from_bytes(header[16:18], "big")
    return 65536 if value == 1 else value


def _valid_page_size(value: object) -> bool:
    """SQLite page sizes are powers of two from 512 to 65536."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 512 <= value <= 65536
        and value & (value - 1) == 0
    )


@dataclass(frozen=True)
class Layout:
    """The page layout and state a SQLite backup records in its manifest's ``position``."""

    page_size: int
    page_count: int
    state_sha256: str
    parent_state_sha256: str | None

    @property
    def size(self) -> int:
        return self.page_size * self.page_count

    @classmethod
    def of(cls, manifest: Manifest) -> Layout:
        """The validated layout of ``manifest``; anything malformed is an IntegrityError."""
        position = manifest.position
        page_size = position.get("page_size")
        page_count = position.get("page_count")
        state = position.get("state_sha256")
        parent = position.get("parent_state_sha256")
        problem = None
        if not _valid_page_size(page_size):
            problem = f"page size {page_size!r} (SQLite uses a power of two from 512 to 65536)"
        elif (
            not isinstance(page_count, int)
            or isinstance(page_count, bool)
            or not 1 <= page_count <= _MAX_PAGES
        ):
            problem = f"page count {page_count!r}"
        elif not isinstance(state, str) or not _SHA256.match(state):
            problem = "state SHA-256"
        elif parent is not None and (not isinstance(parent, str) or not _SHA256.match(parent)):
            problem = "parent state SHA-256"
        if problem is not None:
            raise IntegrityError(
                f"backup {manifest.id} records an invalid {problem}; its manifest is damaged."
            )
        assert isinstance(page_size, int) and isinstance(page_count, int)
        assert isinstance(state, str)
        return cls(page_size, page_count, state, parent)


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


def _take_over(scratch: Path, target: Path, replaced: os.stat_result | None) -> None:
    """Give the rebuilt ``scratch`` the owner and mode of the file it replaces (``0600`` when
    there is none), through its descriptor, before it is renamed into place."""
    fd = os.open(scratch, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise RestoreTargetError(
                f"the rebuilt file {scratch} was replaced during the restore; nothing was "
                "installed, restore again into a folder only you can write to."
            )
        if replaced is None:
            os.fchmod(fd, PRIVATE_FILE)
            return
        if (replaced.st_uid, replaced.st_gid) != (st.st_uid, st.st_gid):
            try:
                os.fchown(fd, replaced.st_uid, replaced.st_gid)
            except PermissionError as exc:
                raise RestoreTargetError(
                    f"{target} belongs to user id {replaced.st_uid} and group id "
                    f"{replaced.st_gid}, which this user cannot give the restored file; run the "
                    f"restore as that user, or restore elsewhere with {flag('into')}."
                ) from exc
        os.fchmod(fd, stat.S_IMODE(replaced.st_mode) & 0o777)
    finally:
        os.close(fd)


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
        ensure_private_dir(staging)
        self._check_space(staging, delta=kind is not BackupKind.FULL)
        snapshot = staging / "snapshot.db"
        pages = staging / "pages.bin"
        # SQLite keeps the mode of a file that exists: the snapshot is 0600 from the start.
        os.close(create_private_file(snapshot))
        taken = self._snapshot(snapshot)
        position: dict[str, object]
        if kind is BackupKind.FULL or parent is None:
            position = self._scan(snapshot, pages, parent=None, delta=None)
            files = (DumpFile("data", snapshot), DumpFile("pages", pages))
        else:
            delta = staging / "delta.bin"
            position = self._scan(snapshot, pages, parent=parent, delta=delta)
            position["parent_state_sha256"] = Layout.of(parent.manifest).state_sha256
            files = (DumpFile("data", delta), DumpFile("pages", pages))
        return Dump(kind=kind, restore_point=taken, files=files, position=position)

    def _check_space(self, staging: Path, *, delta: bool) -> None:
        """Refuse to start a snapshot that cannot fit the staging folder's filesystem."""
        size = sum(
            Path(f"{self.path}{suffix}").stat().st_size
            for suffix in ("", "-wal")
            if Path(f"{self.path}{suffix}").is_file()
        )
        needed = size * (2 if delta else 1) + size // 32  # snapshot, delta, page map
        folder, free = free_bytes(staging)
        if needed > free:
            raise EngineError(
                f"a snapshot of {self.path} needs about {readable_size(needed)} but {folder} "
                f"has only {readable_size(free)} free; free some space or set "
                "BACKUPFLOW_STAGING_DIR to a larger disk."
            )

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
            map_out = stack.enter_context(os.fdopen(create_private_file(pages_out), "wb"))
            parent_map: BinaryIO | None = None
            delta_out: BinaryIO | None = None
            if parent is not None and delta is not None:
                # Exits after the loop: reading the parent's map to its end verifies it.
                parent_map = stack.enter_context(parent.open_object("pages"))
                delta_out = stack.enter_context(os.fdopen(create_private_file(delta), "wb"))
                delta_out.write(DELTA_MAGIC + _HEADER.pack(page_size, page_count))
                parent_layout = Layout.of(parent.manifest)
                same_layout = parent_layout.page_size == page_size
                parent_pages = parent_layout.page_count
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
    ) -> Restored:
        del until  # restore points are the moments backups were taken
        if not chain or chain[0].manifest.kind is not BackupKind.FULL:
            raise EngineError("a SQLite restore chain must start with a full backup.")
        layouts = self._check_chain(chain)
        last = chain[-1].manifest
        state = hashlib.sha256()
        try:
            fd = create_private_file(scratch)
        except FileExistsError as exc:
            raise RestoreTargetError(
                f"{scratch} already exists (another restore, or something planted there); "
                "remove it and restore again."
            ) from exc
        # One descriptor from creation to the last check: nothing can swap the file between.
        with os.fdopen(fd, "r+b") as out:
            with chain[0].open_object("data") as src:
                shutil.copyfileobj(src, out, self.chunk_bytes)
            size = layouts[0].size
            for step, layout in zip(chain[1:], layouts[1:], strict=True):
                with step.open_object("data") as src:
                    self._apply(src, out, step.manifest.id, layout, size)
                size = layout.size
            out.flush()
            os.fsync(out.fileno())
            out.seek(0)
            while block := out.read(self.chunk_bytes):
                state.update(block)
        if state.hexdigest() != layouts[-1].state_sha256:
            raise IntegrityError(
                f"the database rebuilt from backup {last.id} does not match the snapshot it "
                "recorded (SHA-256 differs); the chain is inconsistent."
            )
        self.integrity_check(scratch)
        return Restored(
            scratch,
            tuple(step.manifest for step in chain),
            checks=("snapshot SHA-256", "PRAGMA integrity_check"),
        )

    def space_needed(self, chain: Sequence[Manifest]) -> int:
        """The rebuilt file is the last backup's snapshot: its page size times page count."""
        return Layout.of(chain[-1]).size if chain else 0

    @staticmethod
    def _check_chain(chain: Sequence[BackupSource]) -> list[Layout]:
        """Every manifest's layout, checked against its neighbours before anything is written."""
        layouts = [Layout.of(step.manifest) for step in chain]
        full = chain[0].manifest
        recorded = full.object("data").raw_size
        if recorded != layouts[0].size:
            raise IntegrityError(
                f"the full backup {full.id} holds {recorded} bytes but records "
                f"{layouts[0].page_count} pages of {layouts[0].page_size} bytes; its manifest "
                "is damaged."
            )
        for before, step, layout in zip(chain, chain[1:], layouts[1:], strict=False):
            expected = Layout.of(before.manifest).state_sha256
            if layout.parent_state_sha256 not in (None, expected):
                raise IntegrityError(
                    f"backup {step.manifest.id} was taken on top of a different state than "
                    f"backup {before.manifest.id}; the chain is inconsistent."
                )
        return layouts

    def _apply(
        self, src: BinaryIO, out: BinaryIO, backup_id: str, layout: Layout, size: int
    ) -> None:
        """Write one delta's pages into ``out`` (currently ``size`` bytes long).

        The header must match the manifest, page numbers must rise and stay inside the new
        page count, and every page past the old end must be in the delta: no page is ever
        written past what the delta itself holds, so a small delta cannot make a large file.
        """
        what = f"the page delta of backup {backup_id}"
        if _read_exact(src, len(DELTA_MAGIC), what) != DELTA_MAGIC:
            raise IntegrityError(f"{what} has an unknown format.")
        page_size, page_count = _HEADER.unpack(_read_exact(src, _HEADER.size, what))
        if (page_size, page_count) != (layout.page_size, layout.page_count):
            raise IntegrityError(
                f"{what} describes {page_count} pages of {page_size} bytes but its manifest "
                f"records {layout.page_count} pages of {layout.page_size} bytes; the backup is "
                "damaged."
            )
        existing = size // page_size  # whole pages already in the file
        last = -1
        while True:
            (number,) = _PAGE_NO.unpack(_read_exact(src, _PAGE_NO.size, what))
            if number == _END:
                break
            if number <= last:
                raise IntegrityError(f"{what} lists page {number} after page {last}.")
            if number >= page_count:
                raise IntegrityError(f"{what} writes page {number} beyond the database's end.")
            if number > existing and number != last + 1:
                raise IntegrityError(
                    f"{what} skips pages before page {number}, past the database's old end."
                )
            out.seek(number * page_size)
            out.write(_read_exact(src, page_size, what))
            last = number
        if page_count > existing and last != page_count - 1:
            raise IntegrityError(
                f"{what} grows the database to {page_count} pages without holding the new pages."
            )
        if src.read(1):
            raise IntegrityError(f"{what} has data after its end marker.")
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

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        scratch = restored.scratch
        kept: list[Path] = []
        if target.is_symlink():
            raise RestoreTargetError(
                f"{target} is a link; restore to the file it points to, or elsewhere with "
                f"{flag('into')}."
            )
        if target.exists() and not replace:
            raise RestoreTargetError(
                f"{target} already exists; pass {flag('replace')} to replace it (the current file "
                f"is kept aside) or choose another path with {flag('into')}."
            )
        replaced = os.lstat(target) if target.exists() else None
        _take_over(scratch, target, replaced)
        # A stale -wal next to the restored file would be replayed into it: keep it aside.
        for suffix in ("", *_SIDE_FILES):
            current = Path(f"{target}{suffix}")
            if os.path.lexists(current):
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
        stamp = compact(restore_point)
        return self.path.with_name(f"{self.path.stem}.restored-{stamp}{self.path.suffix or '.db'}")

    def live_target(self) -> Path:
        return self.path
