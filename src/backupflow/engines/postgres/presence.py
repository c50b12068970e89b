"""Before a restore starts its copy: is every WAL file it needs still on some tier?

The chain planner works from the manifests; a WAL file a manifest lists may since have been
deleted from the tiers (by hand, by a lifecycle rule, by a broken disk).  PostgreSQL takes a
file its ``restore_command`` cannot find for the end of the archive: it would stop there and,
for ``--latest``, promote silently.  So the restore lists each tier's WAL folder once and
refuses a chain with a hole, naming the first missing file and the latest point that can
still be restored.  For ``--latest`` the archived files after the chain's last log backup
must also be continuous: a hole there would end recovery early without a word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backupflow.catalog import wal_prefix
from backupflow.errors import BackupflowError, CatalogError, ChainGapError
from backupflow.models import Category, Manifest, StoredObject, iso
from backupflow.storage import Tier

from .walnames import DEFAULT_SEGMENT_BYTES, WalName, parse_wal_name, segment_name

__all__ = ["check_presence"]


def _listed(tiers: Sequence[Tier], database: str, sysid: int) -> tuple[set[str], list[str]]:
    """Every key under the cluster's WAL folder on any tier, and the tiers that could not be
    listed."""
    prefix = f"{wal_prefix(Category.DATABASE, database)}{sysid}/"
    keys: set[str] = set()
    unlisted: list[str] = []
    for tier in tiers:
        try:
            keys.update(info.key for info in tier.storage.list(prefix))
        except BackupflowError:
            unlisted.append(tier.name)
    return keys, unlisted


def _segment_bytes(chain: Sequence[Manifest]) -> int:
    value = chain[0].position.get("segment_bytes", DEFAULT_SEGMENT_BYTES)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            parse_wal_name("000000010000000000000000", value)
            return value
        except ValueError:
            pass
    raise CatalogError(
        f"backup {chain[0].id} records no valid WAL segment size; it is damaged or was "
        "altered, so restore from another tier."
    )


def check_presence(
    chain: Sequence[Manifest],
    files: dict[str, StoredObject],
    tiers: Callable[[], Sequence[Tier]],
    *,
    database: str,
    sysid: int,
    latest: bool,
) -> None:
    """Raise :class:`ChainGapError` when a WAL file the restore needs is on no tier."""
    opened = tiers()
    keys, unlisted = _listed(opened, database, sysid)
    if unlisted and len(unlisted) == len(opened):
        return  # nothing could be listed: wal-fetch will say which tier failed
    segment_bytes = _segment_bytes(chain)
    missing = sorted(
        (parse_wal_name(name, segment_bytes) for name, obj in files.items() if obj.key not in keys)
    )
    if missing:
        first = missing[0]
        raise ChainGapError(
            f"WAL file {first.name} (listed by backup {_holder(chain, first.name)}) is on no "
            f"tier{_unlisted(unlisted)}, so the chain has a gap there; "
            f"{_latest_point(chain, first)}."
        )
    if latest:
        _check_after_chain(chain, keys, files, segment_bytes, unlisted)


def _holder(chain: Sequence[Manifest], name: str) -> str:
    for manifest in chain:
        if any(obj.role.endswith(f"/{name}") for obj in manifest.objects):
            return manifest.id
    return "?"


def _unlisted(unlisted: list[str]) -> str:
    return f" that could be listed ({', '.join(unlisted)} could not)" if unlisted else ""


def _latest_point(chain: Sequence[Manifest], first_missing: WalName) -> str:
    """The restore point of the last backup of the chain that needs nothing from the hole on."""
    latest = chain[0]
    for manifest in chain[1:]:
        names = [
            obj.role.rpartition("/")[2] for obj in manifest.objects if obj.role.startswith("wal:")
        ]
        try:
            parsed = [parse_wal_name(n) for n in names]
        except ValueError:
            break
        if any(not (name < first_missing) for name in parsed):
            break
        latest = manifest
    when = iso(latest.restore_point)
    return f"the latest point that can be restored is {when} (--at {when})"


def _check_after_chain(
    chain: Sequence[Manifest],
    keys: set[str],
    files: dict[str, StoredObject],
    segment_bytes: int,
    unlisted: list[str],
) -> None:
    """The archived segments after the chain's last listed one, on its timeline, must follow
    each other without a hole (a hole ends recovery early, silently)."""
    listed = sorted(parse_wal_name(n, segment_bytes) for n in files)
    segments = [n for n in listed if n.is_segment]
    if segments:
        last = segments[-1]
    else:  # a base alone: the archive must run on from the segment before its start
        start = str(chain[0].position.get("start_segment", ""))
        try:
            first = parse_wal_name(start, segment_bytes)
        except ValueError:
            return
        last = WalName(first.segno - 1, first.timeline, "segment", start)
    later: set[int] = set()
    for key in keys:
        name = key.rpartition("/")[2]
        if not name.endswith(".rec"):
            continue
        try:
            parsed = parse_wal_name(name.removesuffix(".rec"), segment_bytes)
        except ValueError:
            continue
        if parsed.is_segment and parsed.timeline == last.timeline and parsed.segno > last.segno:
            later.add(parsed.segno)
    if not later:
        return
    expected = set(range(last.segno + 1, max(later) + 1))
    holes = sorted(expected - later)
    if holes:
        hole = segment_name(last.timeline, holes[0], segment_bytes)
        when = iso(chain[-1].restore_point)
        raise ChainGapError(
            f"WAL file {hole} is on no tier{_unlisted(unlisted)}, but later files are: "
            f"recovery to the latest point would stop before it without a word; restore to "
            f"a time before it (the chain's last backup reaches {when}: --at {when})."
        )
