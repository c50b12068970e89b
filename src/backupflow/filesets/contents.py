"""File-set backup steps that database backups do not have: shared content, the hook, GC."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from backupflow.backup import BackupJob, delete_unlocked
from backupflow.catalog import CONTENT_ROLE, Catalog
from backupflow.codecs import Codec
from backupflow.config import FileSetSettings, Settings
from backupflow.errors import BackupflowError
from backupflow.filesets import (
    ScanReport,
    content_key,
    decode_members,
    encode_members,
    open_source,
)
from backupflow.fsutil import create_private_file, make_dirs
from backupflow.keys import Keyring
from backupflow.models import Category, Manifest, StoredObject
from backupflow.pipeline import store_stream
from backupflow.redact import known_secrets, mask
from backupflow.storage import Tier
from backupflow.storage.base import Storage
from backupflow.tiers import locate

__all__ = [
    "HOOK_BASE_ENV",
    "HookResult",
    "hook_environment",
    "latest_backup",
    "remove_unreferenced_content",
    "run_configured_hook",
    "run_hook",
    "store_contents",
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

    Content is reused only through a record of an authenticated manifest (the previous
    backup's, or any backup of the series in this tier), so an encrypted content object
    that a kept backup records is never overwritten with another encryption of the same
    content.  Encrypted content keys derive from the plaintext SHA-256: a bucket reader
    learns which stored files are equal, never their content.

    New content is first copied to ``scratch`` while hashed, so a file that changes while it
    is read is stored as read (and reported), never under a wrong hash.  The member list is
    rewritten when a file's content differed from its scan.
    """
    category, name = job.category, job.database
    with open(members_file, "rb") as handle:
        members = decode_members(handle)
    encrypt = keyring is not None and keyring.encrypt
    others = Catalog(storage, keyring).scan(category, name).manifests if keyring is not None else ()
    known = {
        obj.raw_sha256: obj
        for manifest in (*others, *((previous,) if previous else ()))
        for obj in manifest.objects
        if obj.role.startswith(CONTENT_ROLE) and (obj.encryption is not None) == encrypt
    }
    present = {info.key: info.size for info in storage.list(f"{category.value}/{name}/content/")}
    records: dict[str, StoredObject] = {}
    changed = False
    dropped: set[int] = set()
    make_dirs(scratch)
    for index, member in enumerate(members):
        if member.type != "file" or member.sha256 is None:
            continue
        if member.sha256 in records:
            continue
        reuse = known.get(member.sha256)
        if reuse is not None and present.get(reuse.key) == reuse.size:
            records[member.sha256] = reuse
            continue
        copy = scratch / "content"
        digest = hashlib.sha256()
        size = 0
        try:
            copy.unlink(missing_ok=True)
            with (
                open_source(file_set.root / member.path) as src,
                os.fdopen(create_private_file(copy), "wb") as out,
            ):
                while block := src.read(_CHUNK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
        except FileNotFoundError:
            report.vanished.append(member.path)
            dropped.add(index)  # a member without content would make the backup unrestorable
            continue
        except OSError:
            report.unreadable.append(member.path)
            dropped.add(index)
            continue
        sha = digest.hexdigest()
        if sha != member.sha256:
            report.changed.append(member.path)
            members[index] = replace(member, sha256=sha, size=size)
            changed = True
        if sha not in records:
            with open(copy, "rb") as source:
                records[sha] = store_stream(
                    storage,
                    content_key(category, name, sha, codec.extension),
                    source,
                    codec,
                    role=f"{CONTENT_ROLE}{sha}",
                    chunk_bytes=chunk_bytes,
                    progress=progress,
                    keyring=keyring,
                )
        copy.unlink()
    if dropped:
        members = [m for i, m in enumerate(members) if i not in dropped]
        changed = True
    if changed:
        with open(members_file, "wb") as out:
            for line in encode_members(members):
                out.write(line)
    used = {m.sha256 for m in members if m.type == "file"}
    return tuple(record for sha, record in records.items() if sha in used)


def remove_unreferenced_content(
    storage: Storage,
    category: Category,
    name: str,
    *,
    now: datetime,
    grace: timedelta,
    keyring: Keyring | None = None,
) -> list[str]:
    """Delete shared content that no kept backup lists (after the grace period); nothing
    while any manifest of the series is foreign or unreadable."""
    unused = Catalog(storage, keyring).unreferenced_content(category, name, older_than=now - grace)
    return delete_unlocked(storage, unused)


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
