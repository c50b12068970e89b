"""PostgreSQL WAL file names and log positions (pure).

A WAL segment is named ``TTTTTTTTXXXXXXXXYYYYYYYY``: timeline, then the segment number split
in two (``XXXXXXXX`` = segno // segments-per-4-GiB, ``YYYYYYYY`` = the rest).  The archive
also receives ``<segment>.partial`` (the last, unfinished segment of a timeline left behind
by a promotion), ``<segment>.<offset>.backup`` (a base backup's history file) and
``<timeline>.history`` (a timeline's history).  Every name read from a server, a tier or a
command line is checked against these shapes before it becomes part of a key or a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "WAL_RECORD_ROLE",
    "WAL_ROLE",
    "WalName",
    "format_lsn",
    "history_name",
    "parse_lsn",
    "parse_wal_name",
    "parse_wal_path",
    "segment_name",
    "segment_of",
    "wal_path",
]

#: Roles of a PostgreSQL log backup's archived WAL files: ``wal:<sysid>/<name>`` (the file,
#: through the pipeline) and ``walrec:<sysid>/<name>`` (its signed archive record, stored as
#: is); ``<sysid>`` is the cluster's system identifier.  Both live in the series' ``wal/``
#: folder, where ``backupflow wal-push`` wrote them (:func:`backupflow.catalog.wal_key`).
WAL_ROLE = "wal:"
WAL_RECORD_ROLE = "walrec:"

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_HEX8 = "[0-9A-F]{8}"
_NAME = re.compile(
    rf"^(?P<tl>{_HEX8})(?:(?P<hi>{_HEX8})(?P<lo>{_HEX8})"
    rf"(?:(?P<partial>\.partial)|\.(?P<offset>{_HEX8})\.backup)?|(?P<history>\.history))$"
)
_LSN = re.compile(r"^(?P<hi>[0-9A-Fa-f]{1,8})/(?P<lo>[0-9A-Fa-f]{1,8})$")

WalKind = Literal["segment", "partial", "backup", "history"]


@dataclass(frozen=True, order=True)
class WalName:
    """One parsed archive file name.  Orders by (segment number, timeline, kind), which is
    the order PostgreSQL replays them in along one history."""

    segno: int
    timeline: int
    kind: WalKind
    name: str

    @property
    def is_segment(self) -> bool:
        return self.kind == "segment"


def parse_wal_name(name: str, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> WalName:
    """The parsed name; :class:`ValueError` (one sentence) for anything that is not a WAL
    archive file name (no paths, no lower case, nothing longer)."""
    match = _NAME.match(name) if len(name) <= 40 else None
    if match is None:
        raise ValueError(f"{name[:60]!r} is not a WAL file name")
    timeline = int(match["tl"], 16)
    if timeline == 0:
        raise ValueError(f"{name!r} names timeline 0, which does not exist")
    if match["history"]:
        return WalName(0, timeline, "history", name)
    per = _segments_per_id(segment_bytes)
    low = int(match["lo"], 16)
    if low >= per:
        raise ValueError(f"{name!r} is not a segment of {segment_bytes}-byte WAL")
    segno = int(match["hi"], 16) * per + low
    kind: WalKind = "partial" if match["partial"] else "backup" if match["offset"] else "segment"
    return WalName(segno, timeline, kind, name)


def wal_path(system_identifier: int, name: str) -> str:
    """Where a WAL file sits in a series' ``wal/`` folder: under its cluster's system
    identifier, so a new cluster (initdb) never meets the names of an old one."""
    return f"{system_identifier}/{name}"


def parse_wal_path(path: str) -> tuple[int, WalName]:
    """``<system identifier>/<WAL file name>``, checked; :class:`ValueError` otherwise."""
    sysid, slash, name = path.partition("/")
    if not slash or not sysid.isascii() or not sysid.isdigit() or len(sysid) > 20:
        raise ValueError(f"{path[:60]!r} is not <system identifier>/<WAL file name>")
    value = int(sysid)
    if value <= 0 or value >= 1 << 64 or str(value) != sysid:
        raise ValueError(f"{sysid!r} is not a cluster's system identifier")
    return value, parse_wal_name(name)


def segment_name(timeline: int, segno: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> str:
    """The name of segment ``segno`` on ``timeline``."""
    per = _segments_per_id(segment_bytes)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def history_name(timeline: int) -> str:
    """The name of a timeline's history file."""
    return f"{timeline:08X}.history"


def parse_lsn(text: str) -> int:
    """``'0/2000028'`` as a number; :class:`ValueError` for anything else."""
    match = _LSN.match(text.strip()) if len(text) <= 20 else None
    if match is None:
        raise ValueError(f"{text[:30]!r} is not a log sequence number")
    return (int(match["hi"], 16) << 32) | int(match["lo"], 16)


def format_lsn(lsn: int) -> str:
    """A log sequence number as PostgreSQL writes it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(lsn: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> int:
    """The number of the segment that holds ``lsn``."""
    return lsn // segment_bytes


def _segments_per_id(segment_bytes: int) -> int:
    if segment_bytes <= 0 or segment_bytes & (segment_bytes - 1) or segment_bytes > 1 << 30:
        raise ValueError(f"{segment_bytes} is not a WAL segment size")
    return 0x100000000 // segment_bytes
