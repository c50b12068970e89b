"""What an engine supplies besides its :class:`~backupflow.engines.base.Engine`: one
:class:`EngineSpec` per engine, listed in :mod:`backupflow.engines.registry`.

Generic code (the settings' restore roots, the catalog's object keys, verification, pruning,
a backup run's skip reason) asks the registry for the spec of an engine and calls its hooks;
it never branches on an engine's name.  A spec module imports only light modules at its top
(its hooks import the engine's heavy modules when called), so the catalog and the targets can
import the registry without an import circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine
    from backupflow.models import Category, Manifest, StoredObject
    from backupflow.storage import Tier

__all__ = ["ChainCheck", "EngineSpec", "LooseRemover", "ObjectKey"]

#: The key of one of a backup's objects whose role the engine owns: (manifest, object,
#: the object's extension: codec then ``.age``) -> key.
ObjectKey = Callable[["Manifest", "StoredObject", str], str]
#: What would stop a restore in one tier's series: (the series' manifests of this engine,
#: oldest first not guaranteed; the series' name) -> one sentence per problem.
ChainCheck = Callable[[Sequence["Manifest"], str], list[str]]
#: After a prune: delete what the engine keeps beside its backups that no restore can use any
#: more -> the keys removed.
LooseRemover = Callable[["Tier", "Category", str, datetime, timedelta], list[str]]


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its name (``BACKUPFLOW_DATABASE__ENGINE``), settings, factory and hooks."""

    #: The engine's name in the settings and in its manifests.
    name: str
    #: Its own fields of :class:`~backupflow.config.DatabaseSettings` (pydantic only).
    fields: type[BaseModel]
    #: Builds the engine the settings describe (what :func:`~backupflow.engines.open_engine`
    #: returns).
    open: Callable[[Settings], Engine]
    #: The folder a restore target given as a path may lie under, besides the file sets'
    #: roots, the staging folder and ``restore_roots`` (:mod:`backupflow.targets`).
    restore_root: Callable[[Settings], Path]
    #: Role prefixes of the objects the engine stores outside a backup's own folder (in any
    #: manifest), and where each of them must be (:func:`backupflow.catalog.expected_key`).
    object_roles: tuple[str, ...] = ()
    object_key: ObjectKey | None = None
    #: The engine's own chain rules for weekly verification (:mod:`backupflow.verify.tier`).
    check_chains: ChainCheck | None = None
    #: Run after every prune of a series on a tier (:mod:`backupflow.maintenance`).
    remove_loose: LooseRemover | None = None
    #: Why a differential run takes nothing with this engine (display text only: whether to
    #: skip is decided by ``Capabilities.differential``); None: the generic sentence.
    no_differential: str | None = None
    #: Whether the engine takes differential backups at all (a fleet deploys no differential
    #: job for one that does not; the engine's ``Capabilities`` say the same at run time).
    differential: bool = True
