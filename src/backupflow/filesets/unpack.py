"""Unpacking a file-set backup into scratch, verified entry by entry.

A tar archive is read as a stream: each entry must be the member the (signed) member list
names, with that type, size and link target, seen once, and must pass
``tarfile.data_filter`` too; the stream is bounded by what the member list allows.  A
content-addressed backup is fetched one object per file, found by the content id its
member list records (so a restore needs no signing key), and checked against the member
list's SHA-256.  Files are written through a
:class:`~backupflow.safepaths.TreeBuilder` (sizes bounded, SHA-256 checked while written);
links are made last.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from backupflow.engines.base import BackupSource
from backupflow.errors import IntegrityError
from backupflow.filesets.members import Member
from backupflow.safepaths import TreeBuilder

__all__ = ["extract_tar", "fetch_contents"]


class _Bounded:
    """Reads at most ``limit`` bytes of ``stream``; one more is an :class:`IntegrityError`."""

    def __init__(self, stream: BinaryIO, limit: int, where: str) -> None:
        self._stream, self._left, self._where = stream, limit, where

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._stream.read(want)
        if len(data) > self._left:
            raise IntegrityError(
                f"the archive of {self._where} is larger than its member list allows; nothing "
                "was restored."
            )
        self._left -= len(data)
        return data


def _tar_bound(members: Sequence[Member]) -> int:
    """The most bytes a tar of ``members`` can take: data rounded to blocks, and headers
    (with a PAX header for long names) per member, plus the end-of-archive padding."""
    total = 1 << 16
    for m in members:
        names = len(m.path.encode("utf-8", "surrogateescape")) + len(
            (m.target or "").encode("utf-8", "surrogateescape")
        )
        total += -(-m.size // 512) * 512 + 4096 + 2 * names
    return total


def _check_tar_entry(
    info: tarfile.TarInfo, expected: dict[str, Member], seen: set[str], where: str
) -> Member:
    """The listed member a tar entry stands for: same path, type, size and link target,
    seen once; anything else is an :class:`IntegrityError`."""
    member = expected.get(info.name)
    kinds = {"file": info.isreg(), "dir": info.isdir(), "symlink": info.issym()}
    if member is None or not kinds[member.type] or info.name in seen:
        raise IntegrityError(
            f"the archive of {where} holds {info.name[:120]!r}, which its member list does not "
            "(or not of that type, or twice); nothing was restored."
        )
    if member.type == "file" and info.size != member.size:
        raise IntegrityError(
            f"{info.name[:120]!r} in the archive of {where} is {info.size} bytes but its member "
            f"list says {member.size}; nothing was restored."
        )
    if member.type == "symlink" and info.linkname != member.target:
        raise IntegrityError(
            f"the link {info.name[:120]!r} in the archive of {where} points elsewhere than its "
            "member list says; nothing was restored."
        )
    seen.add(info.name)
    return member


def extract_tar(
    source: BackupSource, members: Sequence[Member], builder: TreeBuilder, scratch: Path
) -> None:
    """Stream the archive: each entry must be its listed member (our check) and pass
    ``tarfile.data_filter`` (the standard library's, a second layer); files are written
    through ``builder``, links made last, after the whole archive was verified."""
    where = f"backup {source.manifest.id}"
    expected = {m.path: m for m in members}
    seen: set[str] = set()
    links: list[tuple[str, str]] = []
    with source.open_object("data") as stream:
        bounded = _Bounded(stream, _tar_bound(members), where)
        try:
            with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
                for info in tar:
                    member = _check_tar_entry(info, expected, seen, where)
                    info = tarfile.data_filter(info, str(scratch))
                    if info.issym():
                        links.append((info.name, info.linkname))
                    elif info.isdir():
                        builder.make_dir(info.name)
                    elif info.isreg() and (handle := tar.extractfile(info)) is not None:
                        builder.write_file(
                            info.name,
                            handle,
                            size=member.size,
                            sha256=member.sha256,
                            mode=member.mode,
                            mtime=member.mtime,
                        )
                    else:
                        raise IntegrityError(
                            f"the archive of {where} holds {info.name[:120]!r}, which is "
                            "not a file, folder or link; nothing was restored."
                        )
        except tarfile.FilterError as exc:
            raise IntegrityError(
                f"the archive of {where} is unsafe ({exc}); nothing was restored."
            ) from exc
        except tarfile.TarError as exc:
            raise IntegrityError(f"the archive of {where} is damaged: {exc}.") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(
            f"the archive of {where} lacks {missing[0][:120]!r} from its member list; "
            "nothing was restored."
        )
    for path, target in links:
        builder.make_link(path, target)


def fetch_contents(source: BackupSource, members: Sequence[Member], builder: TreeBuilder) -> None:
    """Fetch a content-addressed backup's files one object each, verified while written
    through ``builder``.  Folders and files first, links last: nothing is ever written
    through a link."""
    for member in members:
        if member.type == "dir":
            builder.make_dir(member.path)
        elif member.type == "file":
            # keyed content id; member lists written before it had the SHA-256 only
            with source.open_object(f"content:{member.content or member.sha256}") as stream:
                builder.write_file(
                    member.path,
                    stream,
                    size=member.size,
                    sha256=member.sha256,
                    mode=member.mode,
                    mtime=member.mtime,
                )
    for member in members:
        if member.type == "symlink":
            builder.make_link(member.path, member.target or "")
