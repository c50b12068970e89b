"""The settings object and how it is built: its sources (keyword arguments, the environment,
the env-file named by ``BACKUPFLOW_CONFIG``, a fleet site, the seed's backup.conf keys), the
loader's one-sentence errors, and the settings of the current run."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from backupflow.config.checks import check_timezone
from backupflow.config.database import DatabaseSettings
from backupflow.config.files import FilesSettings
from backupflow.config.jobs import JobSettings
from backupflow.config.keys import KeySettings
from backupflow.config.people import DrillSettings, FailoverSettings, OwnersSettings
from backupflow.config.repository import PipelineSettings, RepositorySettings
from backupflow.config.sites import FleetSource, check_route, route_site
from backupflow.errors import ConfigError
from backupflow.fleetfile import FLEET_ENV_VAR, SITE_ENV_VAR, check_site_name
from backupflow.fsutil import read_regular_file

__all__ = [
    "CONFIG_ENV_VAR",
    "LEGACY_KEYS",
    "Settings",
    "current_settings",
    "load_settings",
    "secret_paths",
    "use_settings",
]


CONFIG_ENV_VAR = "BACKUPFLOW_CONFIG"

#: The seed's backup.conf keys and where they land in the settings.
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "DB_SERVER": ("database", "server"),
    "DB_USER": ("database", "user"),
    "DB_PASSWORD": ("database", "password"),
    "DB_NAME": ("database", "name"),
}


class _LegacyConfSource(PydanticBaseSettingsSource):
    """Reads the seed's ``DB_SERVER=``-style keys from the env-file."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Path | None) -> None:
        super().__init__(settings_cls)
        self._env_file = env_file

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        if self._env_file is None or not self._env_file.is_file():
            return {}
        values: dict[str, Any] = {}
        for key, value in dotenv_values(self._env_file).items():
            target = LEGACY_KEYS.get(key)
            if target is None or value is None:
                continue
            section, field = target
            values.setdefault(section, {})[field] = value
        return values


def secret_paths(model: type[BaseModel] | None = None) -> list[tuple[str, ...]]:
    """Every secret field of the settings, as a path of field names."""
    found: list[tuple[str, ...]] = []
    for name, field in (model or Settings).model_fields.items():
        annotation = field.annotation
        if annotation is SecretStr:
            found.append((name,))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += [(name, *rest) for rest in secret_paths(annotation)]
    return found


class Settings(BaseSettings):
    """Every setting of backupflow; defaults reproduce the seed's strategy."""

    model_config = SettingsConfigDict(
        env_prefix="BACKUPFLOW_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    timezone: str = Field(
        default="Asia/Seoul",
        description="Timezone (IANA name) of every schedule and of times given without an "
        "offset (--at, target_time).",
    )
    backup_log: Path = Field(
        default=Path("/var/log/workload-optimization/backup.log"),
        description="Backup log: one JSON line per backup or restore.",
    )
    staging_dir: Path = Field(
        default=Path("/var/tmp/backupflow"),
        description="Scratch folder for snapshots and restores in progress (created 0700; "
        "refused when it is a link, not ours, or group/world-writable).",
    )
    restore_roots: list[Path] = Field(
        default_factory=list,
        max_length=100,
        description="Extra folders (absolute) that restore targets (--into, into, scratch) may "
        "lie under, besides the live database's folder, each file set's root and staging_dir.",
    )
    orphan_grace_minutes: int = Field(
        default=60,
        ge=0,
        le=7 * 24 * 60,
        description="Left-overs of interrupted backups older than this are removed by the "
        "next run: data objects without a manifest, unfinished S3 multipart uploads, and "
        "staging folders of backups and scratch copies of restores whose process is gone.",
    )
    repository: RepositorySettings = Field(
        default_factory=RepositorySettings,
        description="Where backups are kept: the primary, secondary and DR tiers.",
    )
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings, description="The database that is backed up."
    )
    jobs: JobSettings = Field(
        default_factory=JobSettings,
        description="The six backup jobs: schedule and retention (prefect.yaml copies the "
        "schedules; see docs/operations.md).",
    )
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings,
        description="How backup streams are compressed, hashed and stored.",
    )
    files: FilesSettings = Field(
        default_factory=FilesSettings,
        description="The file sets (configuration, logs, uploads) and the post-restore command.",
    )
    owners: OwnersSettings = Field(
        default_factory=OwnersSettings,
        description="Who is told when a backup, restore, drill or health check fails.",
    )
    drill: DrillSettings = Field(
        default_factory=DrillSettings,
        description="Recovery objectives (RTO, RPO) and the health check's grace period.",
    )
    failover: FailoverSettings = Field(
        default_factory=FailoverSettings,
        description="Failover to the standby: the DNS record and the health probe.",
    )
    crypto: KeySettings = Field(
        default_factory=KeySettings,
        description="Repository keys: encryption (age) and manifest signing (Ed25519).",
    )
    concurrency_limit: str | None = Field(
        default=None,
        description="Name of a Prefect global concurrency limit (created by the bootstrap) that "
        "every database backup holds, strictly: backups never overlap.",
    )
    site: str | None = Field(
        default=None,
        description="The fleet site this host serves (set with BACKUPFLOW_FLEET, the fleet "
        "file, which gives the site's settings beneath this host's own; docs/fleet.md). Unset: "
        "a single installation.",
    )
    tier_upload_limit: str | None = Field(
        default=None,
        description="Prefix of the fleet-wide Prefect global concurrency limits "
        "'<prefix>-<tier>' (created by the bootstrap) that every upload to a tier holds, so "
        "the hourly storm of a fleet spreads instead of swamping a bucket. Unset: no limit.",
    )
    prefect_wait_seconds: float = Field(
        default=30.0,
        ge=1.0,
        le=600.0,
        description="How long a CLI backup or restore waits for the Prefect API (PREFECT_API_URL) "
        "to answer before it runs without Prefect (said in one line, recorded in the backup log).",
    )

    @field_validator("staging_dir", "backup_log")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

    @field_validator("restore_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for item in value:
            if not item.is_absolute():
                raise ValueError(f"{item} must be an absolute path")
        return value

    def upload_limit(self, tier: str) -> str | None:
        """The fleet-wide limit on concurrent uploads to ``tier`` (``<prefix>-<tier>``), if any."""
        prefix = self.tier_upload_limit
        return f"{prefix}-{tier}" if prefix else None

    @field_validator("site")
    @classmethod
    def _site_name(cls, value: str | None) -> str | None:
        return None if value is None else check_site_name(value, "the site")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_file: Path | None = None
        if isinstance(dotenv_settings, DotEnvSettingsSource) and isinstance(
            dotenv_settings.env_file, str | Path
        ):
            env_file = Path(dotenv_settings.env_file)
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            FleetSource(settings_cls),
            _LegacyConfSource(settings_cls, env_file),
            file_secret_settings,
        )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment and ``$BACKUPFLOW_CONFIG``.

    Raises :class:`ConfigError` with one sentence naming the first bad setting; the
    offending value is never echoed (it may be a secret).
    """
    env_file = os.environ.get(CONFIG_ENV_VAR) or None
    if env_file is not None:
        _check_env_file(Path(env_file))
    overrides = route_site(overrides)
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except SettingsError as exc:
        raise ConfigError(
            f"{_settings_error(exc)}; check the BACKUPFLOW_* variables and {CONFIG_ENV_VAR}."
        ) from None
    except RecursionError:
        raise ConfigError(
            "a setting cannot be read (it is nested too deeply); check the BACKUPFLOW_* "
            f"variables and {CONFIG_ENV_VAR}."
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(
            f"the settings file named by {CONFIG_ENV_VAR} cannot be read "
            f"({type(exc).__name__}); it must be a UTF-8 text file of KEY=value lines."
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        fleet, site = os.environ.get(FLEET_ENV_VAR), os.environ.get(SITE_ENV_VAR)
        also = f", or site {site!r} in the fleet file {fleet}" if fleet and site else ""
        raise ConfigError(
            f"invalid setting {where}: {first['msg']}; check BACKUPFLOW_"
            f"{where.upper().replace('.', '__')} or {CONFIG_ENV_VAR}{also}."
        ) from None
    check_route(settings.site)
    return settings


_ENV_FILE_LIMIT = 1 << 20


def _check_env_file(path: Path) -> None:
    """The env-file must be a readable UTF-8 text file of bounded size."""
    try:
        data = read_regular_file(path, _ENV_FILE_LIMIT)
    except OSError as exc:
        raise ConfigError(
            f"{CONFIG_ENV_VAR} names {path}, which is not a readable file "
            f"({exc.strerror or type(exc).__name__}); fix the path or unset it."
        ) from None
    if data is None:
        raise ConfigError(
            f"{CONFIG_ENV_VAR} names {path}, which is not a readable file (not a regular "
            "file); fix the path or unset it."
        )
    if len(data) > _ENV_FILE_LIMIT:
        raise ConfigError(f"{CONFIG_ENV_VAR} names {path}, which is larger than 1 MiB.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{CONFIG_ENV_VAR} names {path}, which is not UTF-8 text; it must hold KEY=value lines."
        ) from None
    if "\0" in text:
        raise ConfigError(
            f"{CONFIG_ENV_VAR} names {path}, which is a binary file; it must hold KEY=value lines."
        )


def _settings_error(exc: SettingsError) -> str:
    """One sentence from pydantic-settings' parse error, naming the variable only."""
    match = re.search(r'field "([^"]+)"', str(exc))
    if match:
        return f"the setting {match.group(1)} cannot be parsed (lists and objects are JSON)"
    return "a setting cannot be parsed (lists and objects are JSON)"


_current: ContextVar[Settings | None] = ContextVar("backupflow_settings", default=None)


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` what :func:`current_settings` returns in this context (CLI, demo)."""
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)


def current_settings() -> Settings:
    """The settings for a flow run: the ones set by :func:`use_settings`, else loaded from the
    environment (what a worker does)."""
    return _current.get() or load_settings()
