"""A fleet: every site of an estate, each validated by the settings models, and the plan of
what the Prefect API must hold for it.

:func:`load_fleet` reads the fleet file (:mod:`backupflow.fleetfile`) and builds each site's
:class:`~backupflow.config.Settings` from the file alone (no environment: the bootstrap and
the fleet views must see what every host sees, not what this shell holds).  A single
installation is a fleet of one (:func:`fleet_of_one`).

The planners are pure: :func:`plan_deployments` gives one :class:`DeploymentSpec` per site
and job (``backup-database/<site>-full`` ... routed to the site's work queue) plus the
fleet's own jobs; :func:`plan_limits` the global concurrency limits (one database backup per
site at a time; a fleet-wide cap per tier on concurrent uploads).  ``deployments/bootstrap.py``
carries them out.  Each spec has a fingerprint, kept in the deployment's ``version``, so a
rerun that changes nothing writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from backupflow.config import RepositorySettings, Settings, secret_paths
from backupflow.engines.registry import engine_spec
from backupflow.errors import ConfigError
from backupflow.fleetfile import (
    TIERS,
    check_site_name,
    read_fleet_file,
    site_values,
)

__all__ = [
    "FILE_SETS",
    "FLEET_TAG",
    "DeploymentSpec",
    "Fleet",
    "Site",
    "drill_cron",
    "fleet_of_one",
    "load_fleet",
    "plan_deployments",
    "plan_limits",
    "restore_test_pairs",
    "site_limit",
    "tier_limit_prefix",
]

FILE_SETS = ("config", "logs", "uploads")
#: Every deployment the fleet bootstrap owns carries this tag (and ``site:<name>``).
FLEET_TAG = "backupflow-fleet"
_LIMIT_PREFIX = "backupflow"


class _FileOnly(Settings):
    """The settings built from given values only: no environment, no env-file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@dataclass(frozen=True)
class Site:
    """One database host of the fleet."""

    name: str
    queue: str
    settings: Settings
    file_sets: tuple[str, ...] = FILE_SETS
    restore_test_queue: str = ""

    @property
    def test_queue(self) -> str:
        """The work queue of this site's restore tests (its own, unless another host can
        host the engine)."""
        return self.restore_test_queue or self.queue


@dataclass(frozen=True)
class Fleet:
    """The sites, and the fleet's own work queue, pool and per-tier upload cap."""

    sites: tuple[Site, ...]
    queue: str = "fleet"
    pool: str = "backupflow"
    tier_upload_slots: int = 4
    path: Path | None = None

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise ConfigError(f"the fleet has no site {name!r}.")


def load_fleet(path: Path) -> Fleet:
    """The fleet file at ``path``, every site validated; one :class:`ConfigError` sentence
    naming the site and field for the first problem."""
    where = f"the fleet file {path}"
    document = read_fleet_file(path)
    options = document.get("fleet") or {}
    queue = check_site_name(options.get("queue", "fleet"), f"{where}: fleet.queue")
    pool = check_site_name(options.get("pool", "backupflow"), f"{where}: fleet.pool")
    slots = options.get("tier_upload_slots", 4)
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 64:
        raise ConfigError(f"{where}: fleet.tier_upload_slots must be a whole number from 1 to 64.")
    default_test_queue = options.get("restore_test_queue")
    secrets = secret_paths()
    urls = _default_urls()
    sites = []
    for entry in document["sites"]:
        name = entry["name"]
        sites.append(_site(document, name, where, secrets, urls, default_test_queue, entry))
    queues = {site.queue: site.name for site in sites}
    if queue in queues:
        raise ConfigError(
            f"{where}: the fleet's queue {queue!r} is also site {queues[queue]!r}'s; give "
            "fleet.queue another name."
        )
    return Fleet(tuple(sites), queue=queue, pool=pool, tier_upload_slots=slots, path=path)


def _site(
    document: Mapping[str, Any],
    name: str,
    where: str,
    secrets: list[tuple[str, ...]],
    urls: dict[str, str],
    default_test_queue: object,
    site_entry_of: Mapping[str, Any],
) -> Site:
    label = f"{where}: site {name!r}"
    queue = check_site_name(site_entry_of.get("queue", name), f"{label} field queue")
    sets = site_entry_of.get("file_sets", list(FILE_SETS))
    if (
        not isinstance(sets, list)
        or any(s not in FILE_SETS for s in sets)
        or len(set(sets)) != len(sets)
    ):
        raise ConfigError(
            f"{label} field file_sets must list some of {', '.join(FILE_SETS)}, each once."
        )
    test_queue = site_entry_of.get("restore_test_queue", default_test_queue) or ""
    if test_queue:
        check_site_name(test_queue, f"{label} field restore_test_queue")
    values = site_values(document, name, where=where, secret_paths=secrets, tier_urls=urls)
    try:
        settings = _FileOnly(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"{label} field {dotted}: {first['msg']}.") from None
    return Site(name, queue, settings, tuple(sets), str(test_queue))


def _default_urls() -> dict[str, str]:
    repository = RepositorySettings()
    return {tier: getattr(repository, tier).url for tier in TIERS}


def fleet_of_one(settings: Settings) -> Fleet:
    """A single installation as a fleet: one site named after ``settings.site`` (or
    ``default``) on the ``default`` queue, with the settings as they are."""
    name = settings.site or "default"
    return Fleet((Site(name, "default", settings),))


def site_limit(site: str) -> str:
    """The global concurrency limit every database backup of ``site`` holds (one slot)."""
    return f"{_LIMIT_PREFIX}-database-{site}"


def tier_limit_prefix() -> str:
    """The prefix of the fleet-wide per-tier upload limits (``<prefix>-<tier>``)."""
    return f"{_LIMIT_PREFIX}-uploads"


def plan_limits(fleet: Fleet) -> dict[str, int]:
    """Every global concurrency limit the fleet needs, with its slots."""
    limits = {site_limit(site.name): 1 for site in fleet.sites}
    limits.update({f"{tier_limit_prefix()}-{tier}": fleet.tier_upload_slots for tier in TIERS})
    return limits


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as the fleet wants it."""

    flow: str  # the flow's name, e.g. backup-database
    entrypoint: str
    name: str  # e.g. seoul-full
    queue: str
    description: str
    site: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    env: dict[str, str] = field(default_factory=dict)
    concurrency_limit: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"

    @property
    def tags(self) -> list[str]:
        return [FLEET_TAG] + ([f"site:{self.site}"] if self.site else [])

    def fingerprint(self, pool: str) -> str:
        """A short digest of everything the bootstrap writes for this spec."""
        text = json.dumps([pool, asdict(self)], sort_keys=True, default=str)
        return "fleet-" + hashlib.sha256(text.encode()).hexdigest()[:16]


_DATABASE = "flows/backup_database.py:backup_database"
_FILES = "flows/backup_files.py:backup_files"
_DATABASE_JOBS = (("full", "database_full"), ("diff", "database_diff"), ("log", "database_log"))


def drill_cron(index: int) -> str:
    """The quarterly drill of the ``index``-th site: drills rotate through the quarter's
    three months and the month's first 28 days, so each site is drilled once a quarter and
    no two of the first 84 sites on the same day."""
    month = index % 3 + 1
    day = (index // 3) % 28 + 1
    months = ",".join(str(month + 3 * q) for q in range(4))
    return f"0 10 {day} {months} *"


def plan_deployments(fleet: Fleet) -> list[DeploymentSpec]:
    """Every deployment of the fleet: per site its backups (on its schedules, in its
    timezone), its restore test, restores and quarterly drill; then the fleet's health
    check on the fleet's queue."""
    specs: list[DeploymentSpec] = []
    for index, site in enumerate(fleet.sites):
        settings = site.settings
        tz = settings.timezone
        # The worker's own BACKUPFLOW_SITE says which site its host serves; a run names its
        # site apart, so a run that reaches another site's worker is refused, not run there.
        base = {"BACKUPFLOW_RUN_SITE": site.name}
        uploads = {**base, "BACKUPFLOW_TIER_UPLOAD_LIMIT": tier_limit_prefix()}
        database = settings.database.name
        for kind, job in _DATABASE_JOBS:
            if kind == "diff" and not engine_spec(settings.database.engine).differential:
                continue  # e.g. PostgreSQL takes no differentials (docs/postgres.md)
            schedule = getattr(settings.jobs, job)
            specs.append(
                DeploymentSpec(
                    "backup-database",
                    _DATABASE,
                    f"{site.name}-{kind}",
                    site.queue,
                    f"{kind.capitalize()} backup of {database} on site {site.name} "
                    f"({schedule.schedule} {tz}; kept {schedule.retention_days} days).",
                    site.name,
                    {"kind": kind},
                    schedule.schedule,
                    tz,
                    {**uploads, "BACKUPFLOW_CONCURRENCY_LIMIT": site_limit(site.name)},
                    1,
                )
            )
        for file_set in site.file_sets:
            schedule = getattr(settings.jobs, file_set)
            specs.append(
                DeploymentSpec(
                    "backup-files",
                    _FILES,
                    f"{site.name}-{file_set}",
                    site.queue,
                    f"The {file_set} file set of site {site.name} ({schedule.schedule} {tz}; "
                    f"kept {schedule.retention_days} days).",
                    site.name,
                    {"file_set": file_set},
                    schedule.schedule,
                    tz,
                    uploads,
                    1,
                )
            )
        specs += [
            DeploymentSpec(
                "restore-test",
                "flows/restore_test.py:restore_test",
                site.name,
                site.test_queue,
                f"Restore test of site {site.name}: started by the automation "
                f"backupflow-restore-test-{site.name} after each full backup.",
                site.name,
                env=base,
                concurrency_limit=1,
            ),
            DeploymentSpec(
                "restore-database",
                "flows/restore_database.py:restore_database",
                site.name,
                site.queue,
                f"Restore {database} on site {site.name} to a time or its latest state.",
                site.name,
                env=base,
            ),
            DeploymentSpec(
                "dr-drill",
                "flows/dr_drill.py:dr_drill",
                site.name,
                site.test_queue,
                f"Quarterly DR drill of site {site.name} from the DR tier (rotating).",
                site.name,
                {"source": "dr"},
                drill_cron(index),
                tz,
                base,
                1,
            ),
        ]
        if site.file_sets:
            specs.append(
                DeploymentSpec(
                    "restore-files",
                    "flows/restore_files.py:restore_files",
                    site.name,
                    site.queue,
                    f"Restore a file set of site {site.name}.",
                    site.name,
                    env=base,
                )
            )
    timezone = fleet.sites[0].settings.timezone
    specs.append(
        DeploymentSpec(
            "fleet-health",
            "flows/fleet_health.py:fleet_health",
            "fleet",
            fleet.queue,
            "Health of every site and tier, worst first, every 15 minutes.",
            cron="*/15 * * * *",
            timezone=timezone,
            concurrency_limit=1,
        )
    )
    specs += [
        DeploymentSpec(
            "fleet-verify",
            "flows/fleet_verify.py:fleet_verify",
            "fleet",
            fleet.queue,
            "Verify every site's backups in every tier, weekly (Sunday 05:00).",
            cron="0 5 * * 0",
            timezone=timezone,
            concurrency_limit=1,
        ),
        DeploymentSpec(
            "fleet-review",
            "flows/fleet_review.py:fleet_review",
            "fleet",
            fleet.queue,
            "The quarterly review over every site: restore tests, drills, next drills.",
            cron="0 9 2 1,4,7,10 *",
            timezone=timezone,
        ),
    ]
    return specs


def restore_test_pairs(specs: list[DeploymentSpec]) -> list[tuple[str, str, str]]:
    """(site, full backup deployment, restore test deployment) for every site."""
    fulls = {
        s.site: s.full_name
        for s in specs
        if s.flow == "backup-database" and s.parameters.get("kind") == "full"
    }
    tests = {s.site: s.full_name for s in specs if s.flow == "restore-test"}
    return [(str(site), fulls[site], tests[site]) for site in fulls if site in tests]
