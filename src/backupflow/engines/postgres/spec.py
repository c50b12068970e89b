"""The PostgreSQL engine's :class:`~backupflow.engines.spec.EngineSpec`: a cluster's base
backups plus the WAL that ``backupflow wal-push`` archives beside them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from backupflow.engines.postgres.settings import PostgresFields
from backupflow.engines.postgres.walnames import WAL_RECORD_ROLE, WAL_ROLE, parse_wal_path
from backupflow.engines.spec import EngineSpec

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine
    from backupflow.models import Category, Manifest, StoredObject
    from backupflow.storage import Tier

__all__ = ["SPEC"]


def _open(settings: Settings) -> Engine:
    from backupflow.engines.postgres.engine import PostgresEngine
    from backupflow.engines.registry import database_password
    from backupflow.errors import ConfigError
    from backupflow.models import TIER_NAMES
    from backupflow.storage import open_tiers

    names = [n for n in TIER_NAMES if getattr(settings.repository, n).enabled]

    def first_tier() -> Tier:
        tiers = open_tiers(settings)
        if not tiers:
            raise ConfigError("no storage tier is enabled; enable the primary tier.")
        return tiers[0]

    return PostgresEngine(
        settings.database,
        lambda: database_password(settings),
        first_tier=first_tier,
        tier_names=names,
        tiers=lambda: open_tiers(settings),
        chunk_bytes=settings.pipeline.chunk_bytes,
    )


def _restore_root(settings: Settings) -> Path:
    return settings.database.pg_data_dir.parent


def _object_key(manifest: Manifest, obj: StoredObject, extension: str) -> str:
    """An archived WAL file (``wal:<sysid>/<name>``) or its record (``walrec:...``) lives in
    the series' ``wal/`` folder, where wal-push wrote it."""
    from backupflow.catalog import wal_key, wal_push_id, wal_record_key

    try:
        parse_wal_path(obj.role.partition(":")[2])
    except ValueError:
        return f"(no key: {obj.role[:60]!r} names no WAL file)"
    if obj.role.startswith(WAL_RECORD_ROLE):
        return wal_record_key(
            manifest.category, manifest.database, obj.role.removeprefix(WAL_RECORD_ROLE)
        )
    return wal_key(
        manifest.category,
        manifest.database,
        obj.role.removeprefix(WAL_ROLE),
        extension,
        wal_push_id(obj.key),
    )


def _check_chains(manifests: Sequence[Manifest], series: str) -> list[str]:
    """Continuous WAL from each cluster's oldest base backup, new timelines only through
    their history files."""
    from backupflow.engines.postgres.chain import check_series

    return list(check_series(manifests))


def _remove_loose(
    tier: Tier, category: Category, name: str, now: datetime, grace: timedelta
) -> list[str]:
    from backupflow.engines.postgres.pruning import remove_loose_wal

    return remove_loose_wal(tier, category, name, now=now, grace=grace)


SPEC = EngineSpec(
    name="postgres",
    fields=PostgresFields,
    open=_open,
    restore_root=_restore_root,
    object_roles=(WAL_RECORD_ROLE, WAL_ROLE),
    object_key=_object_key,
    check_chains=_check_chains,
    remove_loose=_remove_loose,
    differential=False,
    no_differential=(
        "PostgreSQL has no differential backups; nothing was taken: the WAL archive and the "
        "hourly log backups cover the time since the full"
    ),
)
