"""The fleet file, read: one YAML file that lists every site of an estate.

A *site* is one database host (its engine, databases, file sets, owners, schedules) with a
worker of its own.  The file holds ``defaults`` (any settings, applied to every site) and
``sites`` (each a name, its host's work queue, and the settings where it differs)::

    version: 1
    fleet: {queue: fleet, tier_upload_slots: 4}
    defaults:
      timezone: Asia/Seoul
      repository: {secondary: {url: s3://estate-backups}, dr: {url: s3://estate-dr}}
    sites:
      - name: seoul
        database: {engine: postgres, name: gantt, pg_data_dir: /var/lib/postgresql/15/main}
        crypto: {verify_keys: ["bfverify1... series=database/gantt,config/*"]}
      - name: tokyo
        queue: tokyo-db
        database: {engine: sqlite, name: reports, sqlite_path: /srv/reports/reports.db}

This module only reads and merges; :mod:`backupflow.fleet` validates each site with the
settings models.  It is a leaf (no settings import), so the settings loader can use it: a
worker started with ``BACKUPFLOW_FLEET`` and ``BACKUPFLOW_SITE`` reads its site's values from
here, beneath its own environment and env-file, which hold the host's secrets.

Tiers are shared unless a site names its own: a tier URL a site inherits from ``defaults``
(or from the built-in defaults) gets ``/<site>`` appended, so sites sharing a bucket never
share a folder, and each site's prune, verify and replication see its own backups only.
The file is input someone else may have written: it is read bounded (1 MiB), must be a
regular UTF-8 file, may not hold a secret (secrets are named by reference: a Secret block or
the host's env-file), and every error is one sentence naming the site and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from backupflow.errors import ConfigError
from backupflow.fsutil import read_regular_file

__all__ = [
    "FLEET_ENV_VAR",
    "FLEET_KEYS",
    "MAX_SITES",
    "RUN_SITE_ENV_VAR",
    "SITE_ENV_VAR",
    "SITE_KEYS",
    "TIERS",
    "check_site_name",
    "merge",
    "read_fleet_file",
    "site_entry",
    "site_values",
]

FLEET_ENV_VAR = "BACKUPFLOW_FLEET"
SITE_ENV_VAR = "BACKUPFLOW_SITE"
#: Set by a fleet deployment: the site its runs are for (a worker refuses another site's run).
RUN_SITE_ENV_VAR = "BACKUPFLOW_RUN_SITE"

MAX_SITES = 1000
_LIMIT = 1 << 20
TIERS = ("primary", "secondary", "dr")
#: Keys of a site entry that describe the site itself, not its settings.
SITE_KEYS = frozenset({"name", "queue", "file_sets", "restore_test_queue"})
#: Keys of the top-level ``fleet`` mapping.
FLEET_KEYS = frozenset({"queue", "pool", "tier_upload_slots", "restore_test_queue"})
_TOP_KEYS = frozenset({"version", "fleet", "defaults", "sites"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")


def check_site_name(value: object, where: str) -> str:
    """``value`` when it is a site or queue name (lowercase letters, digits, inner dashes;
    at most 40), else a :class:`ConfigError` naming ``where``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{where} must be 1 to 40 lowercase letters, digits and inner dashes "
            "(it names deployments, work queues and folders)."
        )
    return value


def read_fleet_file(path: Path) -> dict[str, Any]:
    """The parsed fleet file at ``path``: a mapping with ``sites`` (a list of mappings with
    unique names); a :class:`ConfigError` for anything else."""
    where = f"the fleet file {path}"
    try:
        data = read_regular_file(path, _LIMIT)
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read ({exc.strerror or type(exc).__name__}); fix "
            f"{FLEET_ENV_VAR} or the file."
        ) from None
    if data is None:
        raise ConfigError(f"{where} is not a regular file; fix {FLEET_ENV_VAR}.")
    if len(data) > _LIMIT:
        raise ConfigError(f"{where} is larger than 1 MiB.")
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text.") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to read.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{line}.") from None
    return _check_document(document, where)


def _check_document(document: object, where: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ConfigError(f"{where} must be a mapping with a 'sites' list.")
    unknown = sorted(str(key) for key in document if key not in _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{where} has an unknown key {unknown[0]!r} (known: defaults, fleet, sites, version)."
        )
    if document.get("version", 1) != 1:
        raise ConfigError(f"{where} has version {document.get('version')!r}; this reads 1.")
    for key in ("defaults", "fleet"):
        if not isinstance(document.get(key) or {}, dict):
            raise ConfigError(f"{where}: {key} must be a mapping.")
    unknown = sorted(str(key) for key in (document.get("fleet") or {}) if key not in FLEET_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: fleet has an unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(FLEET_KEYS))})."
        )
    sites = document.get("sites")
    if not isinstance(sites, list) or not sites:
        raise ConfigError(f"{where} must list at least one site under 'sites'.")
    if len(sites) > MAX_SITES:
        raise ConfigError(f"{where} lists {len(sites)} sites; at most {MAX_SITES} are read.")
    seen: set[str] = set()
    for number, entry in enumerate(sites, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: site {number} must be a mapping with a name.")
        name = check_site_name(entry.get("name"), f"{where}: site {number}'s name")
        if name in seen:
            raise ConfigError(f"{where}: the site name {name!r} is listed twice.")
        seen.add(name)
    return document


def site_entry(document: Mapping[str, Any], site: str, where: str) -> dict[str, Any]:
    """The entry of ``site`` in a checked fleet document."""
    for entry in document["sites"]:
        if entry["name"] == site:
            return dict(entry)
    raise ConfigError(f"{where} lists no site {site!r}; fix {SITE_ENV_VAR} or the file.")


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, mappings merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(old, value)
        else:
            merged[key] = value
    return merged


def site_values(
    document: Mapping[str, Any],
    site: str,
    *,
    where: str,
    secret_paths: Iterable[tuple[str, ...]],
    tier_urls: Mapping[str, str],
) -> dict[str, Any]:
    """The settings values of ``site``: the defaults with the site's entry laid on them,
    ``site`` set, and each inherited tier URL given the site's own folder (``tier_urls``:
    the built-in default URL of each tier).  A secret anywhere in either is refused."""
    entry = site_entry(document, site, where)
    defaults = document.get("defaults") or {}
    own = {key: value for key, value in entry.items() if key not in SITE_KEYS}
    for path in secret_paths:
        for label, values in (("defaults", defaults), (f"site {site!r}", own)):
            if _lookup(values, path) not in (None, ""):
                dotted = ".".join(path)
                raise ConfigError(
                    f"{where}: {label} field {dotted} is a secret, which a fleet file may not "
                    f"hold; name it by reference ({dotted}_block, a Prefect Secret block) or "
                    "put it in the host's env-file."
                )
    values = merge(defaults, own)
    repository = values.get("repository")
    if repository is not None and not isinstance(repository, dict):
        raise ConfigError(f"{where}: site {site!r} field repository must be a mapping.")
    values["repository"] = dict(repository or {})
    for tier in TIERS:
        mine = _lookup(own, ("repository", tier, "url"))
        if mine is not None:
            continue
        inherited = _lookup(defaults, ("repository", tier, "url")) or tier_urls.get(tier)
        if not isinstance(inherited, str) or not inherited:
            continue
        section = values["repository"].get(tier)
        section = dict(section) if isinstance(section, dict) else {}
        section["url"] = inherited.rstrip("/") + "/" + site
        values["repository"][tier] = section
    values["site"] = site
    return values


def _lookup(values: object, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(values, Mapping):
            return None
        values = values.get(part)
    return values
