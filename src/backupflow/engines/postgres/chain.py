"""PostgreSQL restore chains: a base backup plus a continuous run of archived WAL (pure).

Rules (design of issue 16, section 4):

* base: the newest full backup whose restore point is at or before the target; only log
  backups of the same cluster (system identifier) and WAL segment size are used with it;
* logs: every log backup whose WAL reaches the base's start segment, oldest restore point
  first, up to and including the first one whose restore point is at or after the target
  (no target: all of them).  Parent ids play no part: WAL is continuous whoever's child a
  log backup is;
* WAL: every segment number from the base's start segment to the last log's last segment
  must be listed by some chosen log.  A segment of timeline T > the base's continues its
  parent's WAL only when ``<T>.history`` is listed by a log backup of that cluster; the
  chain follows the newest such timeline up to the last log's timeline (what PostgreSQL
  does with ``recovery_target_timeline = latest``).
* a missing segment is a :class:`ChainGapError` naming it and the latest point that can
  still be restored.

Every field read from a manifest's ``position`` is checked; a damaged one is a
:class:`CatalogError` naming the backup.

Size: about 440 lines: the restore chain, verify's series check and prune's loose-WAL rule
read the same positions by the same rules, so they are kept in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backupflow.engines.postgres.walnames import (
    WalName,
    history_name,
    parse_lsn,
    parse_wal_name,
    parse_wal_path,
    segment_name,
)
from backupflow.errors import CatalogError, ChainGapError, NoBackupError, TargetInFutureError
from backupflow.models import BackupKind, Manifest, iso, utc
from backupflow.planning import PlanStep, RestorePlan
from backupflow.vocabulary import flag

if TYPE_CHECKING:
    from backupflow.engines.base import ChainCatalog

__all__ = [
    "Base",
    "LogRange",
    "check_series",
    "loose_wal",
    "plan_wal_chain",
    "read_base",
    "read_log",
]

#: More WAL file names than one log backup may list (an hour of 16 MiB segments at
#: 1 GB/s is about 220 000).
_MAX_FILES = 1_000_000
_MAX_TIMELINE = 0xFFFFFFFF


@dataclass(frozen=True)
class Base:
    """What a chain needs of a full (base) backup's position."""

    manifest: Manifest
    system_identifier: int
    timeline: int
    segment_bytes: int
    start_segment: int


@dataclass(frozen=True)
class LogRange:
    """What a chain needs of a log backup's position: the WAL files it lists."""

    manifest: Manifest
    system_identifier: int
    timeline: int
    segment_bytes: int
    first: int
    last: int
    files: tuple[WalName, ...]


def _damaged(manifest: Manifest, field: str) -> CatalogError:
    return CatalogError(
        f"backup {manifest.id} has no valid {field} in its manifest; it is damaged or was "
        "altered, so restore from another tier."
    )


def _field(manifest: Manifest, field: str) -> Any:
    if field not in manifest.position:
        raise _damaged(manifest, field)
    return manifest.position[field]


def _int(manifest: Manifest, field: str, low: int, high: int) -> int:
    value = _field(manifest, field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _damaged(manifest, field)
    return value


def _sysid(manifest: Manifest) -> int:
    value = _field(manifest, "system_identifier")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
        if 0 < number < 1 << 64:
            return number
    raise _damaged(manifest, "system_identifier")


def _segment_bytes(manifest: Manifest) -> int:
    value = _int(manifest, "segment_bytes", 1 << 20, 1 << 30)
    if value & (value - 1):
        raise _damaged(manifest, "segment_bytes")
    return value


def _name(manifest: Manifest, field: str, value: Any, segment_bytes: int) -> WalName:
    if not isinstance(value, str):
        raise _damaged(manifest, field)
    try:
        return parse_wal_name(value, segment_bytes)
    except ValueError:
        raise _damaged(manifest, field) from None


def _segment(manifest: Manifest, field: str, segment_bytes: int) -> WalName:
    name = _name(manifest, field, _field(manifest, field), segment_bytes)
    if not name.is_segment:
        raise _damaged(manifest, field)
    return name


def read_base(manifest: Manifest) -> Base:
    """The checked position of a full backup."""
    segment_bytes = _segment_bytes(manifest)
    timeline = _int(manifest, "timeline", 1, _MAX_TIMELINE)
    start = _segment(manifest, "start_segment", segment_bytes)
    if start.timeline != timeline:
        raise _damaged(manifest, "start_segment")
    for field in ("start_lsn", "end_lsn"):
        value = _field(manifest, field)
        try:
            parse_lsn(value if isinstance(value, str) else "")
        except ValueError:
            raise _damaged(manifest, field) from None
    return Base(manifest, _sysid(manifest), timeline, segment_bytes, start.segno)


def read_log(manifest: Manifest) -> LogRange:
    """The checked position of a log backup."""
    segment_bytes = _segment_bytes(manifest)
    timeline = _int(manifest, "timeline", 1, _MAX_TIMELINE)
    first = _segment(manifest, "first", segment_bytes)
    last = _segment(manifest, "last", segment_bytes)
    raw = _field(manifest, "files")
    if not isinstance(raw, list) or len(raw) > _MAX_FILES:
        raise _damaged(manifest, "files")
    files = tuple(_name(manifest, "files", value, segment_bytes) for value in raw)
    if last.segno < first.segno or last.timeline != timeline:
        raise _damaged(manifest, "last")
    return LogRange(
        manifest, _sysid(manifest), timeline, segment_bytes, first.segno, last.segno, files
    )


@dataclass(frozen=True)
class _Walk:
    """How far the WAL runs without a hole from a base's start segment."""

    #: The first segment number missing (None: continuous to the end), and its name.
    missing: int | None = None
    missing_name: str = ""
    why: str = ""


def _walk(base: Base, logs: Sequence[LogRange], histories: set[int], end: int) -> _Walk:
    """Walk segment numbers from the base's start to ``end`` along the timelines the logs
    reach (never past the last log's timeline)."""
    target_tl = logs[-1].timeline if logs else base.timeline
    present: dict[int, set[int]] = {}
    for log in logs:
        for wal in log.files:
            if wal.is_segment:
                present.setdefault(wal.segno, set()).add(wal.timeline)
    current = base.timeline
    for segno in range(base.start_segment, end + 1):
        here = present.get(segno, set())
        usable = [
            tl for tl in here if current <= tl <= target_tl and (tl == current or tl in histories)
        ]
        if usable:
            current = max(usable)
            continue
        orphans = sorted(tl for tl in here if tl > current and tl not in histories)
        if orphans:
            why = (
                f"segment {segment_name(orphans[0], segno, base.segment_bytes)} is on timeline "
                f"{orphans[0]}, whose history file {history_name(orphans[0])} no log backup "
                "lists"
            )
        else:
            why = "no log backup lists it"
        return _Walk(segno, segment_name(current, segno, base.segment_bytes), why)
    if current != target_tl and end >= base.start_segment:
        return _Walk(
            end,
            segment_name(target_tl, end, base.segment_bytes),
            f"the WAL never reaches timeline {target_tl}"
            + (
                ""
                if target_tl in histories
                else f" (no log backup lists {history_name(target_tl)})"
            ),
        )
    return _Walk()


def _histories(logs: Sequence[LogRange]) -> set[int]:
    return {w.timeline for log in logs for w in log.files if w.kind == "history"}


def _select_logs(base: Base, logs: Sequence[LogRange], limit: datetime | None) -> list[LogRange]:
    """The logs of the base's cluster that reach its start segment, up to and including the
    first one at or after ``limit``."""
    chosen: list[LogRange] = []
    for log in sorted(logs, key=lambda r: (r.manifest.restore_point, r.last, r.manifest.id)):
        if (
            log.system_identifier != base.system_identifier
            or log.segment_bytes != base.segment_bytes
            or log.last < base.start_segment
        ):
            continue
        chosen.append(log)
        if limit is not None and log.manifest.restore_point >= limit:
            break
    return chosen


def plan_wal_chain(
    catalog: ChainCatalog, database: str, target: datetime | None, now: datetime
) -> RestorePlan[Manifest]:
    """The base backup and the log backups whose WAL restores ``database`` to ``target``
    (None: the latest archived point), read from every manifest of the series."""
    now = utc(now)
    if target is not None:
        target = utc(target)
        if target > now:
            raise TargetInFutureError(
                f"the target {iso(target)} is later than now ({iso(now)}); "
                f"give a time in the past or {flag('latest')}."
            )
    manifests: list[Manifest] = []
    for entry in catalog.sorted_entries():
        try:
            manifests.append(catalog.manifest(entry.id))
        except CatalogError as exc:
            catalog.problems.append(f"{exc}; planning without it")
    if not manifests:
        raise NoBackupError(f"there are no backups of {database} in these tiers.")
    return select_wal_chain(manifests, database, target, now)


def select_wal_chain(
    manifests: Sequence[Manifest], database: str, target: datetime | None, now: datetime
) -> RestorePlan[Manifest]:
    """:func:`plan_wal_chain` over manifests already read."""
    now = utc(now)
    limit = utc(target) if target is not None else None
    bases = [read_base(m) for m in manifests if m.kind is BackupKind.FULL]
    logs = [read_log(m) for m in manifests if m.kind is BackupKind.LOG]
    usable = [b for b in bases if b.manifest.restore_point <= (limit or now)]
    if not usable:
        first = min(bases, key=lambda b: b.manifest.restore_point, default=None)
        where = (
            f"the earliest restore point of {database} is {iso(first.manifest.restore_point)}"
            if first
            else f"{database} has no full backup at all"
        )
        raise NoBackupError(
            f"no full backup of {database} restores to {iso(limit or now)}: {where}."
        )
    base = max(usable, key=lambda b: (b.manifest.restore_point, b.manifest.id))
    chosen = _select_logs(base, logs, limit)
    if limit is not None and limit <= base.manifest.restore_point:
        chosen = []
    histories = _histories([g for g in logs if g.system_identifier == base.system_identifier])
    end = max((g.last for g in chosen), default=base.start_segment - 1)
    walk = _walk(base, chosen, histories, end)
    if walk.missing is not None:
        _gap(database, base, chosen, walk)
    steps = [PlanStep(base.manifest, _base_reason(base))]
    steps += [PlanStep(g.manifest, _log_reason(g)) for g in chosen]
    reached = chosen[-1].manifest.restore_point if chosen else base.manifest.restore_point
    notes: tuple[str, ...] = ()
    if limit is not None:
        if reached < limit:
            # WAL archived after the last log backup (or after the base) is replayed up to
            # the target; recovery itself says whether the archive reaches it.
            notes = (
                f"the target {iso(limit)} lies after the last backup of {database} "
                f"({iso(reached)}): the WAL archived since is replayed up to it",
            )
        reached = limit
    return RestorePlan(database, limit, tuple(steps), reached, now, notes)


def _gap(database: str, base: Base, chosen: Sequence[LogRange], walk: _Walk) -> None:
    assert walk.missing is not None
    before = [g.manifest.restore_point for g in chosen if g.last < walk.missing]
    point = max([base.manifest.restore_point, *before])
    raise ChainGapError(
        f"the WAL of {database} has a gap at segment {walk.missing_name} ({walk.why}); the "
        f"latest point that can be restored is {iso(point)} (--at {iso(point)})."
    )


def _base_reason(base: Base) -> str:
    return (
        f"base backup: cluster {base.system_identifier}, timeline {base.timeline}, WAL from "
        f"{segment_name(base.timeline, base.start_segment, base.segment_bytes)}"
    )


def _log_reason(log: LogRange) -> str:
    first = next((w.name for w in log.files if w.is_segment and w.segno == log.first), None)
    first = first or segment_name(log.timeline, log.first, log.segment_bytes)
    last = segment_name(log.timeline, log.last, log.segment_bytes)
    return f"log: WAL {first} to {last} ({len(log.files)} files)"


def check_series(manifests: Sequence[Manifest]) -> list[str]:
    """What would stop a restore somewhere in the series' window: damaged positions, holes
    in the WAL after each cluster's oldest base backup, timelines without a history file,
    and log backups whose cluster has no base backup.  Empty when every point from the
    oldest base backup to the newest log backup can be restored."""
    problems: list[str] = []
    bases: list[Base] = []
    logs: list[LogRange] = []
    for manifest in sorted(manifests, key=lambda m: (m.restore_point, m.id)):
        try:
            if manifest.kind is BackupKind.FULL:
                bases.append(read_base(manifest))
            elif manifest.kind is BackupKind.LOG:
                logs.append(read_log(manifest))
        except CatalogError as exc:
            problems.append(str(exc).rstrip("."))
    clusters: Mapping[int, list[Base]] = _by_cluster(bases)
    for sysid in sorted({g.system_identifier for g in logs} - set(clusters)):
        orphan = next(g for g in logs if g.system_identifier == sysid)
        problems.append(
            f"log backup {orphan.manifest.id} holds WAL of cluster {sysid}, which has no base "
            "backup in this tier"
        )
    for sysid, cluster_bases in clusters.items():
        oldest = min(cluster_bases, key=lambda b: (b.manifest.restore_point, b.manifest.id))
        mine = _select_logs(oldest, logs, None)
        histories = _histories([g for g in logs if g.system_identifier == sysid])
        start = oldest
        while mine:
            end = max(g.last for g in mine)
            walk = _walk(start, mine, histories, end)
            if walk.missing is None:
                break
            problems.append(
                f"the WAL after base backup {oldest.manifest.id} has a gap at segment "
                f"{walk.missing_name} ({walk.why})"
            )
            # Go on after the hole: the next log backup that starts beyond it.
            later = [g for g in mine if g.first > walk.missing]
            if not later:
                break
            resume = later[0]
            start = Base(
                resume.manifest,
                sysid,
                next((w.timeline for w in resume.files if w.segno == resume.first), 1),
                start.segment_bytes,
                resume.first,
            )
            mine = [g for g in mine if g.last >= resume.first]
    return problems


def _by_cluster(bases: Sequence[Base]) -> dict[int, list[Base]]:
    found: dict[int, list[Base]] = {}
    for base in bases:
        found.setdefault(base.system_identifier, []).append(base)
    return found


#: ``<system identifier>/<WAL file name>`` then the pipeline's extensions or ``.rec``.
_WAL_OBJECT = re.compile(
    r"^(?P<path>[0-9]{1,20}/[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?"
    r"|\.history))(?P<ext>(?:\.p[0-9a-f]{16})?(?:\.zst|\.gz)?(?:\.age)?|\.rec)$"
)


def loose_wal(
    archived: Sequence[tuple[str, datetime]],
    prefix: str,
    manifests: Sequence[Manifest],
    cutoff: datetime,
) -> list[str]:
    """The keys of archived WAL (``(key, modified)`` under ``prefix``, the series' ``wal/``
    folder) that no restore can use any more, records before their files.

    A WAL file is loose when no backup lists it, it was written before ``cutoff`` (the
    grace period: ``wal-push`` writes WAL before any log backup lists it) and it lies
    before the start segment of the oldest base backup of its cluster that is kept.  The
    WAL of a cluster with no base backup (a new cluster before its first full) and every
    timeline history file are kept; so is anything with a name that is not a WAL file."""
    listed = {obj.key for m in manifests for obj in m.objects}
    start: dict[int, int] = {}
    for manifest in manifests:
        if manifest.kind is BackupKind.FULL:
            base = read_base(manifest)
            first = start.get(base.system_identifier, base.start_segment)
            start[base.system_identifier] = min(first, base.start_segment)
    records: list[str] = []
    files: list[str] = []
    for key, modified in archived:
        match = _WAL_OBJECT.match(key.removeprefix(prefix)) if key.startswith(prefix) else None
        if match is None or key in listed or utc(modified) >= utc(cutoff):
            continue
        try:
            sysid, name = parse_wal_path(match["path"])
        except ValueError:
            continue
        if name.kind == "history" or sysid not in start or name.segno >= start[sysid]:
            continue
        (records if match["ext"] == ".rec" else files).append(key)
    return sorted(records) + sorted(files)


def superseded_pushes(
    archived: Sequence[tuple[str, datetime]],
    prefix: str,
    manifests: Sequence[Manifest],
    cutoff: datetime,
) -> dict[tuple[int, str], list[str]]:
    """Per archived WAL file ``(system identifier, name)``: the keys of its pushed objects
    (keys with a push id) that may be unreferenced, for the files whose record must be read
    to tell: those with more than one pushed object, or with no record at all (a push
    killed between its object and its record, or the loser of a race).  Only objects
    written before ``cutoff`` (the grace period: a push in progress writes its object
    before its record) and listed by no backup are candidates."""
    listed = {obj.key for m in manifests for obj in m.objects}
    records: set[tuple[int, str]] = set()
    pushed: dict[tuple[int, str], list[tuple[str, bool]]] = {}
    for key, modified in archived:
        match = _WAL_OBJECT.match(key.removeprefix(prefix)) if key.startswith(prefix) else None
        if match is None:
            continue
        try:
            sysid, name = parse_wal_path(match["path"])
        except ValueError:
            continue
        if match["ext"] == ".rec":
            records.add((sysid, name.name))
        elif match["ext"].startswith(".p"):
            old = key not in listed and utc(modified) < utc(cutoff)
            pushed.setdefault((sysid, name.name), []).append((key, old))
    found: dict[tuple[int, str], list[str]] = {}
    for file, objects in pushed.items():
        if len(objects) > 1 or file not in records:
            candidates = [key for key, old in objects if old]
            if candidates:
                found[file] = sorted(candidates)
    return found
