"""File-set backup steps that database backups do not have: shared content, the hook, GC.

Size: about 620 lines: storing shared content and collecting it are one protocol (keyed
content ids, reuse, the last check before the manifest, condemned marks and their two-phase
deletion), kept in one place so that both sides change together.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from backupflow.backup import BackupJob
from backupflow.catalog import (
    CONTENT_ROLE,
    Catalog,
    condemned_prefix,
    content_prefix,
    mark_key,
    series_prefix,
)
from backupflow.codecs import Codec
from backupflow.config import FileSetSettings, Settings
from backupflow.errors import BackupflowError, IntegrityError, ObjectNotFoundError, StorageError
from backupflow.filesets import (
    Member,
    ScanReport,
    content_key,
    decode_members,
    encode_members,
    open_source,
)
from backupflow.fsutil import create_private_file, make_dirs
from backupflow.keys import Keyring
from backupflow.models import Category, Manifest, StoredObject, iso, utc
from backupflow.pipeline import (
    CONTENT_ID_DIGEST,
    ENCRYPTED_SUFFIX,
    HashingReader,
    store_stream,
    verify_stored,
)
from backupflow.redact import known_secrets, mask
from backupflow.storage import Tier
from backupflow.storage.base import ObjectInfo, Storage, put_bytes
from backupflow.tiers import locate

__all__ = [
    "HOOK_BASE_ENV",
    "MARK_FORMAT",
    "ContentSweep",
    "HookResult",
    "condemned_prefix",
    "content_digest",
    "hook_environment",
    "latest_backup",
    "mark_key",
    "remove_unreferenced_content",
    "run_configured_hook",
    "run_hook",
    "store_contents",
    "sweep_content",
]

_CHUNK = 1 << 20


def latest_backup(
    tiers: Sequence[Tier], category: Category, name: str
) -> tuple[Manifest, Tier] | None:
    """The newest readable backup of a series on any tier (to reuse its file hashes)."""
    holdings = locate(tiers, category.value, name)
    for entry in reversed(holdings.sorted_entries()):
        try:
            return holdings.load(entry.id)
        except BackupflowError:
            continue
    return None


def content_digest(keyring: Keyring | None, sha256: str) -> str:
    """The id a file content whose SHA-256 is ``sha256`` is found by: its keyed content id
    when the signing key is held (:meth:`Keyring.content_id`), else its SHA-256 (tests,
    benchmarks: nothing to hide from)."""
    if keyring is None or keyring.signer is None:
        return sha256
    return keyring.content_id(sha256)


def _reuse_digest(obj: StoredObject, keyring: Keyring | None) -> str | None:
    """The keyed digest a content record can be reused by, or None when a new backup must
    not reuse it: with the signing key held, content stored under its plaintext SHA-256
    (before content ids were keyed) is stored once more under its keyed id, so new
    manifests neither name nor list plaintext hashes of encrypted content."""
    if obj.raw_digest == CONTENT_ID_DIGEST:
        return obj.raw_sha256 if keyring is not None and keyring.signer is not None else None
    if keyring is None or keyring.signer is None:
        return obj.raw_sha256
    if obj.encryption is not None or obj.role == f"{CONTENT_ROLE}{obj.raw_sha256}":
        return None
    return keyring.content_id(obj.raw_sha256)


def _record_id(record: StoredObject) -> str:
    return record.role.removeprefix(CONTENT_ROLE)


def store_contents(
    storage: Storage,
    job: BackupJob,
    members_file: Path,
    file_set: FileSetSettings,
    codec: Codec,
    report: ScanReport,
    *,
    previous: Manifest | None,
    scratch: Path,
    chunk_bytes: int,
    progress: Callable[[int], None] | None = None,
    keyring: Keyring | None = None,
) -> tuple[StoredObject, ...]:
    """Store each distinct file content once; content the tier already holds is reused.

    Content is stored under its keyed content id (:func:`content_digest`), never its
    plaintext SHA-256, and an encrypted content's record holds that id instead of the
    plaintext's SHA-256 too; the member list (encrypted with the backup) records each
    file's content id, so a restore finds it without the signing key.

    Content is reused only through a record of an authenticated manifest (the previous
    backup's, or any backup of the series in this tier), so an encrypted content object
    that a kept backup records is never overwritten with another encryption of the same
    content.  Content a prune has condemned (:func:`sweep_content`) is never reused nor
    written again under its key: it is stored anew under a fresh id.  Last, every content
    the backup lists is checked once more to be in the tier and not condemned (one LIST of
    the content folder and one of the condemned marks), and stored anew if it is not, so
    the manifest written next never lists content a prune is deleting.

    New content is first copied to ``scratch`` while hashed, so a file that changes while it
    is read is stored as read (and reported), never under a wrong hash.  The member list is
    rewritten with each file's content id (and its content when it differed from its scan).
    """
    category, name = job.category, job.database
    with open(members_file, "rb") as handle:
        members = decode_members(handle)
    encrypt = keyring is not None and keyring.encrypt
    others = Catalog(storage, keyring).scan(category, name).manifests if keyring is not None else ()
    known: dict[str, StoredObject] = {}
    for manifest in (*others, *((previous,) if previous else ())):
        for obj in manifest.objects:
            if obj.role.startswith(CONTENT_ROLE) and (obj.encryption is not None) == encrypt:
                digest = _reuse_digest(obj, keyring)
                if digest is not None:
                    known[digest] = obj
    present, condemned = _content_state(storage, category, name)
    store = _ContentWriter(
        storage, job, file_set, codec, report, scratch, chunk_bytes, progress, keyring
    )
    records: dict[str, StoredObject] = {}
    dropped: set[int] = set()
    make_dirs(scratch)
    for index, member in enumerate(members):
        if member.type != "file" or member.sha256 is None:
            continue
        if member.sha256 in records:
            continue
        reuse = known.get(content_digest(keyring, member.sha256))
        if (
            reuse is not None
            and present.get(reuse.key) == reuse.size
            and reuse.key not in condemned
        ):
            records[member.sha256] = reuse
            continue
        stored = store.from_file(member, condemned)
        if stored is None:
            dropped.add(index)  # a member without content would make the backup unrestorable
            continue
        sha, size, record = stored
        if sha != member.sha256:
            members[index] = replace(member, sha256=sha, size=size)
        records.setdefault(sha, record)
    if dropped:
        members = [m for i, m in enumerate(members) if i not in dropped]
    used = {m.sha256 for m in members if m.type == "file" and m.sha256 is not None}
    records = {sha: record for sha, record in records.items() if sha in used}
    _keep_present(store, records, members)
    members = [
        replace(m, content=_record_id(records[m.sha256]))
        if m.type == "file" and m.sha256 is not None
        else m
        for m in members
    ]
    with open(members_file, "wb") as out:
        for line in encode_members(members):
            out.write(line)
    return tuple(records.values())


#: Rounds of the last check (:func:`_keep_present`): each stores anew what a prune
#: condemned or removed meanwhile; one more is a storage error.
_CHECK_ROUNDS = 3


def _keep_present(
    store: _ContentWriter, records: dict[str, StoredObject], members: Sequence[Member]
) -> None:
    """Right before the manifest is written: every listed content must be in the tier at its
    size and not condemned; what is not is stored anew under a fresh id (copied from the
    tier while it is still there, else read again from its file)."""
    category, name = store.job.category, store.job.database
    for _round in range(_CHECK_ROUNDS):
        present, condemned = _content_state(store.storage, category, name)
        lost = {
            sha: record
            for sha, record in records.items()
            if present.get(record.key) != record.size or record.key in condemned
        }
        if not lost:
            return
        for sha, record in lost.items():
            records[sha] = store.again(sha, record, members)
    raise StorageError(
        f"the shared content of {category.value}/{name} in {store.storage.name} kept being "
        "removed while this backup ran; run the backup again after the prune has finished."
    )


class _ContentWriter:
    """Stores one file content of a content-addressed backup (see :func:`store_contents`)."""

    def __init__(
        self,
        storage: Storage,
        job: BackupJob,
        file_set: FileSetSettings,
        codec: Codec,
        report: ScanReport,
        scratch: Path,
        chunk_bytes: int,
        progress: Callable[[int], None] | None,
        keyring: Keyring | None,
    ) -> None:
        self.storage, self.job, self.file_set, self.codec = storage, job, file_set, codec
        self.report, self.scratch, self.chunk_bytes = report, scratch, chunk_bytes
        self.progress, self.keyring = progress, keyring

    def _new_id(self, sha256: str, condemned: Collection[str]) -> str:
        """The content's keyed id, or a fresh random id when a prune condemned the object at
        that id (it may be deleted at any moment: never written again, never relied on)."""
        content_id = content_digest(self.keyring, sha256)
        extension = self.codec.extension + (ENCRYPTED_SUFFIX if self._encrypt else "")
        if content_key(self.job.category, self.job.database, content_id, extension) in condemned:
            return secrets.token_hex(32)
        return content_id

    @property
    def _encrypt(self) -> bool:
        return self.keyring is not None and self.keyring.encrypt

    def from_file(
        self, member: Member, condemned: Collection[str]
    ) -> tuple[str, int, StoredObject] | None:
        """Copy the member's file to scratch while hashing it, then store that copy; None
        (and the file reported) when it vanished or cannot be read."""
        copy = self.scratch / "content"
        try:
            sha, size = _copy_file(self.file_set.root / member.path, copy)
        except FileNotFoundError:
            copy.unlink(missing_ok=True)
            self.report.vanished.append(member.path)
            return None
        except OSError:
            copy.unlink(missing_ok=True)
            self.report.unreadable.append(member.path)
            return None
        if sha != member.sha256:
            self.report.changed.append(member.path)
        try:
            with open(copy, "rb") as source:
                record = self._store(source, sha, self._new_id(sha, condemned))
        finally:
            copy.unlink(missing_ok=True)
        return sha, size, record

    def _store(self, source: BinaryIO, sha256: str, content_id: str) -> StoredObject:
        record = store_stream(
            self.storage,
            content_key(self.job.category, self.job.database, content_id, self.codec.extension),
            source,
            self.codec,
            role=f"{CONTENT_ROLE}{content_id}",
            chunk_bytes=self.chunk_bytes,
            progress=self.progress,
            keyring=self.keyring,
        )
        if record.raw_sha256 != sha256:
            raise IntegrityError(
                f"the scratch copy of a file changed while {record.key} was stored; run the "
                "backup again."
            )
        if record.encryption is not None and self.keyring is not None and self.keyring.signer:
            # the manifest is readable by whoever lists the bucket: no plaintext hash in it
            record = record.model_copy(
                update={
                    "raw_sha256": self.keyring.content_id(sha256),
                    "raw_digest": CONTENT_ID_DIGEST,
                }
            )
        return record

    def again(self, sha256: str, record: StoredObject, members: Sequence[Member]) -> StoredObject:
        """Store a content anew under a fresh id: its stored bytes copied while the tier
        still holds them, else its file read again (which must still hold that content)."""
        content_id = secrets.token_hex(32)
        key = content_key(self.job.category, self.job.database, content_id, "")
        key += record.key.rpartition(_record_id(record))[2]  # same codec and encryption
        try:
            _copy_stored(self.storage, record, key, self.chunk_bytes)
            return record.model_copy(update={"key": key, "role": f"{CONTENT_ROLE}{content_id}"})
        except (ObjectNotFoundError, IntegrityError):
            pass
        for member in members:
            if member.type != "file" or member.sha256 != sha256:
                continue
            copy = self.scratch / "content"
            try:
                got, _size = _copy_file(self.file_set.root / member.path, copy)
                if got == sha256:
                    with open(copy, "rb") as source:
                        return self._store(source, sha256, content_id)
            except OSError:
                continue
            finally:
                copy.unlink(missing_ok=True)
        raise StorageError(
            f"{record.key} was removed from {self.storage.name} while this backup ran and no "
            "file holds its content any more; run the backup again."
        )


# -- garbage collection of shared content --------------------------------------------------
#
# File-set backups do not hold the prune lock, and runs may be on different hosts, so content
# is deleted in two phases.  A prune condemns content no readable manifest lists (older than
# the grace period) by writing a mark beside the series' folder,
# ``<category>/<name>.gc/content/<fan>/<id><ext>``; a later prune deletes it only when its mark
# is at least the grace period old, the content was not written since, and it is still listed
# by no manifest when the manifests are read once more.  A backup never reuses (nor writes
# again) condemned content: it stores it anew under a fresh id, and right before its manifest
# is written it checks every content it lists once more (:func:`_keep_present`).  So a backup
# that saw no mark writes its manifest long before any prune may delete what it reuses (a mark
# written after its check is a grace period younger than that manifest), and a backup that
# saw one relies on other objects.

#: What a condemned mark holds (a short JSON object); anything else is replaced.
MARK_FORMAT = "backupflow.condemned"
#: The most bytes a condemned mark may have; a larger one is not read (and is replaced).
MAX_MARK_BYTES = 1024
#: How far a mark's own time may lie after ``now`` (clocks of two hosts) or before the time
#: the storage says it was written; a mark outside these bounds is replaced.
MARK_SKEW = timedelta(minutes=5)
_CONTENT_NAME = re.compile(
    r"^content/(?P<fan>[0-9a-f]{2})/(?P=fan)[0-9a-f]{62}(?:\.zst|\.gz)?(?:\.age)?$"
)


def _marks(storage: Storage, category: Category, name: str) -> dict[str, ObjectInfo]:
    """The condemned marks of a series, by the key of the content each condemns (names that
    are not a content's are ignored)."""
    marks, series = condemned_prefix(category, name), series_prefix(category, name)
    return {
        series + info.key.removeprefix(marks): info
        for info in storage.list(marks)
        if _CONTENT_NAME.match(info.key.removeprefix(marks))
    }


def _content_state(
    storage: Storage, category: Category, name: str
) -> tuple[dict[str, int], set[str]]:
    """The content objects of a series in ``storage`` (key: size) and the keys of those
    with a condemned mark (any mark, valid or not: condemned content is never relied on)."""
    present = {info.key: info.size for info in storage.list(content_prefix(category, name))}
    return present, set(_marks(storage, category, name))


def _mark_body(key: str, when: datetime) -> bytes:
    return json.dumps(
        {"format": MARK_FORMAT, "key": key, "condemned_at": iso(when)}, sort_keys=True
    ).encode()


def _condemned_at(storage: Storage, info: ObjectInfo, key: str, now: datetime) -> datetime | None:
    """When the content ``key`` was condemned, by its mark ``info``; None when the mark is not
    one a prune wrote (damaged, too large, another key, a time in the future or long before
    the storage says it was written): it is then written anew, which only delays deletion."""
    if info.size > MAX_MARK_BYTES:
        return None
    try:
        with storage.open(info.key) as handle:
            raw = handle.read(MAX_MARK_BYTES + 1)
        data = json.loads(raw)
        if len(raw) > MAX_MARK_BYTES or not isinstance(data, dict):
            return None
        when = utc(datetime.fromisoformat(data["condemned_at"]))
    except (BackupflowError, ValueError, TypeError, KeyError, RecursionError):
        return None
    if (
        data.get("format") != MARK_FORMAT
        or data.get("key") != key
        or when > now + MARK_SKEW
        or when < info.modified - MARK_SKEW
    ):
        return None
    return when


@dataclass(frozen=True)
class ContentSweep:
    """What one prune did to a series' shared content."""

    #: Content marked as condemned by this pass (deleted by a pass a grace period later).
    condemned: tuple[str, ...] = ()
    #: Content deleted by this pass.
    removed: tuple[str, ...] = ()


def sweep_content(
    storage: Storage,
    category: Category,
    name: str,
    *,
    now: datetime,
    grace: timedelta,
    keyring: Keyring | None = None,
) -> ContentSweep:
    """Condemn shared content that no readable manifest lists (older than ``grace``), and
    delete content condemned at least ``grace`` ago that no manifest lists when they are
    read once more; marks of content a backup lists again are removed.  Nothing is
    condemned or deleted while any manifest of the series is foreign or unreadable."""
    catalog = Catalog(storage, keyring)
    scan = catalog.scan(category, name)
    if scan.problems:
        return ContentSweep()
    used = {obj.key for m in scan.manifests for obj in m.objects}
    series = series_prefix(category, name)
    content = {
        info.key: info
        for info in storage.list(content_prefix(category, name))
        if _CONTENT_NAME.match(info.key.removeprefix(series))
    }
    marks = _marks(storage, category, name)
    for key, stale in marks.items():
        if key not in content or key in used:
            storage.delete(stale.key)  # deleted already, or listed again: the mark is done
    condemned: list[str] = []
    due: dict[str, datetime] = {}
    for key, info in content.items():
        if key in used or info.modified >= now - grace:
            continue
        mark = marks.get(key)
        when = _condemned_at(storage, mark, key, now) if mark is not None else None
        if when is None or info.modified > when:
            # not condemned yet (or by a mark that is not ours, or written again since)
            put_bytes(storage, mark_key(category, name, key), _mark_body(key, now))
            condemned.append(key)
            when = now
        if when <= now - grace:
            due[key] = when
    if not due:
        return ContentSweep(tuple(condemned))
    again = catalog.scan(category, name)  # read once more: a backup may list it by now
    if again.problems:
        return ContentSweep(tuple(condemned))
    used = {obj.key for m in again.manifests for obj in m.objects}
    removed: list[str] = []
    for key, when in sorted(due.items()):
        if key in used:
            continue
        try:
            if storage.stat(key).modified > when:
                continue  # written again since it was condemned
        except ObjectNotFoundError:
            pass
        storage.delete(key)  # the content first: its mark keeps anyone from relying on it
        storage.delete(mark_key(category, name, key))
        removed.append(key)
    return ContentSweep(tuple(condemned), tuple(removed))


def remove_unreferenced_content(
    storage: Storage,
    category: Category,
    name: str,
    *,
    now: datetime,
    grace: timedelta,
    keyring: Keyring | None = None,
) -> list[str]:
    """:func:`sweep_content`, returning the keys it deleted."""
    return list(
        sweep_content(storage, category, name, now=now, grace=grace, keyring=keyring).removed
    )


def _copy_file(path: Path, copy: Path) -> tuple[str, int]:
    """Copy a file being backed up to a private ``copy`` (replaced) while hashing it: its
    SHA-256 and size as read."""
    digest = hashlib.sha256()
    size = 0
    copy.unlink(missing_ok=True)
    with open_source(path) as src, os.fdopen(create_private_file(copy), "wb") as out:
        while block := src.read(_CHUNK):
            digest.update(block)
            size += len(block)
            out.write(block)
    return digest.hexdigest(), size


def _copy_stored(storage: Storage, record: StoredObject, key: str, chunk_bytes: int) -> None:
    """Copy the stored bytes of ``record`` to ``key`` in the same storage, checked against
    the record's size and SHA-256 (a copy that differs is removed again)."""
    with storage.open(record.key) as handle:
        reader = HashingReader(
            handle,
            limit=record.size,
            overflow=f"{record.key} in {storage.name} holds more than its recorded "
            f"{record.size} bytes; the stored copy is damaged.",
        )
        storage.put(key, iter(lambda: reader.read(chunk_bytes), b""))
    if reader.size != record.size or reader.sha256.hexdigest() != record.sha256:
        storage.delete(key)
        raise IntegrityError(
            f"{record.key} in {storage.name} does not match its recorded SHA-256; the stored "
            "copy is damaged."
        )
    if not storage.verified_writes:
        verify_stored(storage, record.model_copy(update={"key": key}), chunk_bytes=chunk_bytes)


@dataclass(frozen=True)
class HookResult:
    """What the post-restore command did."""

    command: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


#: What the post-restore command always gets from the environment; nothing else is inherited
#: unless the ``files.hook_env`` setting names it.
HOOK_BASE_ENV = ("PATH", "HOME", "LANG")


def hook_environment(allow: Sequence[str] = ()) -> dict[str, str]:
    """A minimal environment: PATH, HOME, LANG and the allowed names that are set."""
    return {k: os.environ[k] for k in (*HOOK_BASE_ENV, *allow) if k in os.environ}


def run_hook(
    command: Sequence[str],
    cwd: Path,
    timeout: float,
    *,
    allow_env: Sequence[str] = (),
    secrets: Sequence[str] = (),
) -> HookResult:
    """Run the post-restore command as an argument list (never through a shell), with a
    minimal environment; every known secret is masked in its captured output."""
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd if cwd.is_dir() else None,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=hook_environment(allow_env),
        )
    except FileNotFoundError:
        return HookResult(tuple(command), 127, f"{command[0]}: command not found")
    except PermissionError:
        return HookResult(tuple(command), 126, f"{command[0]}: permission denied")
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
        output = mask(output[-4000:], secrets)
        return HookResult(tuple(command), 124, output + f"\ntimed out after {timeout:.0f} s")
    output = mask((done.stdout + done.stderr)[-4000:], secrets)
    return HookResult(tuple(command), done.returncode, output)


def run_configured_hook(settings: Settings) -> HookResult:
    """The configured post-restore command, with the allowed environment only and every
    secret backupflow knows masked in its output."""
    files = settings.files
    return run_hook(
        files.post_restore_hook,
        files.post_restore_cwd,
        files.hook_timeout_seconds,
        allow_env=files.hook_env,
        secrets=known_secrets(settings),
    )
