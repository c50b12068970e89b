"""Settings: one pydantic-settings object, built once at the edge and passed down.

Sources, highest priority first:

1. keyword arguments (tests, the demo);
2. environment variables ``BACKUPFLOW_*``, nested with ``__``
   (``BACKUPFLOW_DATABASE__NAME=gantt``);
3. the env-file named by ``BACKUPFLOW_CONFIG``: ``BACKUPFLOW_*`` lines, and also the seed's
   shell-style ``/etc/workload-optimization/backup.conf`` keys ``DB_SERVER``, ``DB_USER``,
   ``DB_PASSWORD`` and ``DB_NAME``;
4. the defaults below, which reproduce the seed's strategy.

Secrets are :class:`~pydantic.SecretStr`: they print as ``**********``.  Every field has a
description and its bounds; ``docs/configuration.md`` is generated from them
(``python -m backupflow.settings_doc``).  The six jobs' schedules here are the source of
truth for schedules: ``prefect.yaml`` copies them and a test keeps the two equal.

Size: about 900 lines, because this is one settings tree: every nested model sits beside the
object that holds it, so the environment-variable names can be read off the nesting, and the
loader's checks (env-file, error sentences) belong with it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from backupflow.errors import ConfigError
from backupflow.fleetfile import (
    FLEET_ENV_VAR,
    RUN_SITE_ENV_VAR,
    SITE_ENV_VAR,
    check_site_name,
    read_fleet_file,
    site_values,
)
from backupflow.names import DATABASE_NAME_PATTERN, is_database_name

__all__ = [
    "CONFIG_ENV_VAR",
    "Contact",
    "DatabaseSettings",
    "DrillSettings",
    "FailoverSettings",
    "FileSetSettings",
    "FilesSettings",
    "Job",
    "JobSettings",
    "KeySettings",
    "OwnersSettings",
    "PipelineSettings",
    "RepositorySettings",
    "RetentionOverrides",
    "Settings",
    "TierSettings",
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


def _merge_nested_defaults(cls: type[BaseModel], data: Any) -> Any:
    """Setting one field of a nested default (``BACKUPFLOW_JOBS__LOGS__RETENTION_DAYS``)
    keeps that default's other fields instead of replacing it whole."""
    if not isinstance(data, dict):
        return data
    merged = dict(data)
    for name, value in data.items():
        field = cls.model_fields.get(name)
        if field is not None and isinstance(value, dict) and isinstance(field.default, BaseModel):
            merged[name] = {**field.default.model_dump(), **value}
    return merged


class Job(BaseModel):
    """One scheduled backup job: when it runs and how long its backups are kept."""

    model_config = ConfigDict(frozen=True)

    schedule: str = Field(
        description="Cron expression (five fields) in the settings' timezone; the source of "
        "truth for the job's deployment in prefect.yaml, which must match (docs/operations.md)."
    )
    retention_days: int = Field(ge=1, le=3650, description="Days a backup of this job is kept.")

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"cron expression {value!r} must have five fields")
        try:
            CronSim(value, datetime(2026, 1, 1))
        except (CronSimError, ValueError) as exc:
            raise ValueError(f"cron expression {value!r} is not valid ({exc})") from None
        return value


class JobSettings(BaseModel):
    """The six jobs of the seed's backup policy."""

    @model_validator(mode="before")
    @classmethod
    def _merge(cls, data: Any) -> Any:
        return _merge_nested_defaults(cls, data)

    database_full: Job = Field(
        default=Job(schedule="0 2 * * *", retention_days=30),
        description="Full database backup: daily at 02:00, kept 30 days.",
    )
    database_diff: Job = Field(
        default=Job(schedule="0 */4 * * *", retention_days=7),
        description="Differential database backup: every 4 hours, kept 7 days.",
    )
    database_log: Job = Field(
        default=Job(schedule="0 * * * *", retention_days=3),
        description="Transaction log backup: hourly, kept 3 days.",
    )
    config: Job = Field(
        default=Job(schedule="0 3 * * *", retention_days=30),
        description="Configuration files: daily at 03:00, kept 30 days.",
    )
    logs: Job = Field(
        default=Job(schedule="0 4 * * *", retention_days=14),
        description="Application logs: daily at 04:00, kept 14 days.",
    )
    uploads: Job = Field(
        default=Job(schedule="0 3 * * *", retention_days=30),
        description="User uploads: daily at 03:00, kept 30 days.",
    )


class RetentionOverrides(BaseModel):
    """Per-tier retention in days, overriding the job's (unset = the job's own)."""

    database_full: int | None = Field(
        default=None, ge=1, le=36500, description="Days full database backups are kept here."
    )
    database_diff: int | None = Field(
        default=None, ge=1, le=36500, description="Days differential backups are kept here."
    )
    database_log: int | None = Field(
        default=None, ge=1, le=36500, description="Days log backups are kept here."
    )
    config: int | None = Field(
        default=None, ge=1, le=36500, description="Days configuration backups are kept here."
    )
    logs: int | None = Field(
        default=None, ge=1, le=36500, description="Days application-log backups are kept here."
    )
    uploads: int | None = Field(
        default=None, ge=1, le=36500, description="Days upload backups are kept here."
    )


class TierSettings(BaseModel):
    """One storage tier: a local folder or an S3 bucket (with its own region)."""

    url: str = Field(
        description="A folder (/var/backups, file:///var/backups) or s3://bucket[/prefix]."
    )
    enabled: bool = Field(default=True, description="Write to and read from this tier.")
    region: str | None = Field(default=None, description="S3: the bucket's region.")
    endpoint_url: str | None = Field(
        default=None, description="S3: endpoint of an S3-compatible store (MinIO, ...)."
    )
    credentials_block: str | None = Field(
        default=None,
        description="S3: name of a prefect-aws AwsCredentials block; else boto3's default "
        "credential chain (environment, profile, instance role). Credentials never come from a "
        "flow parameter or a command-line flag.",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="S3: bucket addressing (path for most S3-compatible stores)."
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field(
        default="AES256",
        description="S3: server-side encryption: AES256 = SSE-S3, aws:kms = SSE-KMS with "
        "kms_key_id, or none.",
    )
    kms_key_id: str | None = Field(default=None, description="S3: KMS key id for aws:kms.")
    storage_class: str = Field(default="STANDARD", description="S3: storage class of objects.")
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = Field(
        default=None,
        description="S3: Object Lock retention for every object (the bucket must have Object "
        "Lock enabled); none by default.",
    )
    object_lock_days: int = Field(
        default=30, ge=1, le=36500, description="S3: days an object stays locked."
    )
    retention: RetentionOverrides = Field(
        default_factory=RetentionOverrides,
        description="Retention days for this tier, per job (e.g. a shorter primary on a "
        "small disk, a longer DR tier); unset jobs use the job's retention.",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the tier URL is empty")
        if "://" not in value and not value.startswith("/"):
            raise ValueError(f"tier folder {value!r} must be an absolute path")
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(f"tier URL {value!r} must be a folder, file://... or s3://...")
        if value.startswith("s3://") and not value[5:].split("/", 1)[0]:
            raise ValueError(f"tier URL {value!r} names no bucket")
        return value

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


class RepositorySettings(BaseModel):
    """Where backups are kept: three tiers, tried in this order when restoring."""

    primary: TierSettings = Field(
        default=TierSettings(url="/var/backups"),
        description="Primary tier: the local backup server.",
    )
    secondary: TierSettings = Field(
        default=TierSettings(
            url="s3://workload-optimization-backups",
            region="ap-northeast-2",
            storage_class="STANDARD_IA",
        ),
        description="Secondary tier: an S3 bucket.",
    )
    dr: TierSettings = Field(
        default=TierSettings(
            url="s3://dr-workload-optimization-backups",
            region="ap-northeast-1",
            storage_class="STANDARD_IA",
        ),
        description="Disaster-recovery tier: an S3 bucket in another region.",
    )
    part_bytes: int = Field(
        default=8 << 20,
        ge=5 << 20,
        le=512 << 20,
        description="S3 multipart part size; memory per upload is about part_bytes x "
        "(max_concurrency + 1).",
    )
    max_concurrency: int = Field(default=4, ge=1, le=32, description="S3 parts in flight.")
    request_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per S3 request (throttling, 5xx, resets)."
    )
    min_full_backups: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Retention always keeps this many newest full backups (and what they "
        "need), whatever their age.",
    )

    @model_validator(mode="before")
    @classmethod
    def _merge(cls, data: Any) -> Any:
        return _merge_nested_defaults(cls, data)


class DatabaseSettings(BaseModel):
    """The database that is backed up (the seed's DB_* keys)."""

    engine: Literal["sqlite", "sqlserver", "postgres"] = Field(
        default="sqlite",
        description="Database engine: sqlite (embedded, the demo's), sqlserver (the seed's) "
        "or postgres (a PostgreSQL 15+ cluster: base backups and archived WAL).",
    )
    name: str = Field(
        default="gantt_workload",
        min_length=1,
        max_length=128,
        pattern=DATABASE_NAME_PATTERN,
        description="Database name; also its folder in the repository.",
    )
    databases: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Databases a backup run covers: empty = just `name`; a list of names; or "
        '["*"] = every online user database (SQL Server).',
    )
    server: str = Field(default="localhost", description="Database server.")
    user: str = Field(default="", description="Database login.")
    password: SecretStr = Field(
        default=SecretStr(""),
        description="Database password: from the environment or the env-file only, never a "
        "flag or a flow parameter; never printed.",
    )
    sqlite_path: Path = Field(
        default=Path("/var/lib/workload-optimization/gantt_workload.db"),
        description="SQLite engine: the live database file.",
    )
    port: int = Field(
        default=1433,
        ge=1,
        le=65535,
        description="Server TCP port (SQL Server: 1433; PostgreSQL: 5432 unless set).",
    )
    odbc_driver: str = Field(
        default="ODBC Driver 18 for SQL Server",
        description="SQL Server: the ODBC driver (or FreeTDS's).",
    )
    encrypt: bool = Field(default=True, description="SQL Server: encrypt the connection.")
    trust_server_certificate: bool = Field(
        default=False, description="SQL Server: accept a self-signed server certificate."
    )
    password_block: str | None = Field(
        default=None,
        description="SQL Server: name of a Prefect Secret block holding the password "
        "(else DB_PASSWORD / BACKUPFLOW_DATABASE__PASSWORD).",
    )
    server_backup_dir: str = Field(
        default="/var/opt/mssql/backup",
        description="SQL Server: folder, as the server sees it, where BACKUP writes files.",
    )
    worker_backup_dir: Path = Field(
        default=Path("/var/opt/mssql/backup"),
        description="SQL Server: the same folder as this worker sees it (same host or a "
        "shared mount).",
    )
    server_timezone: str = Field(
        default="UTC", description="SQL Server: the server's timezone (STOPAT is local time)."
    )
    server_data_dir: str | None = Field(
        default=None,
        max_length=260,
        description="SQL Server: folder, as the server sees it, for the data files of a "
        "database restored under a new name (MOVE); default: the server's own default data "
        "folder. Must be absolute, with no share; never taken from a backup's file list.",
    )
    server_log_dir: str | None = Field(
        default=None,
        max_length=260,
        description="SQL Server: the same for log files; default: the server's default log folder.",
    )
    native_compression: bool = Field(
        default=True, description="SQL Server: BACKUP ... WITH COMPRESSION (edition permitting)."
    )
    verify_backup: bool = Field(
        default=True, description="SQL Server: RESTORE VERIFYONLY ... WITH CHECKSUM afterwards."
    )
    tail_log_before_replace: bool = Field(
        default=True,
        description="SQL Server: before restoring over a database with --replace, back up "
        "the tail of its log (COPY_ONLY, to <server_backup_dir>/<name>_tail_<stamp>.trn; "
        "not in the SIMPLE recovery model); the database itself stays as it is, and is kept "
        "aside offline when the restored copy is put in place.",
    )
    pg_bin_dir: Path | None = Field(
        default=None,
        description="PostgreSQL: folder of the server's programs (pg_basebackup, pg_ctl, "
        "pg_verifybackup, pg_amcheck); default: the one `pg_config --bindir` names, else "
        "/usr/lib/postgresql/<newest>/bin.",
    )
    pg_data_dir: Path = Field(
        default=Path("/var/lib/postgresql/15/main"),
        description="PostgreSQL: the live cluster's data folder (what --replace replaces).",
    )
    pg_os_user: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="PostgreSQL: the OS user that owns the cluster; when the worker runs as "
        "root, the server's programs run as this user (default: postgres).",
    )
    pg_superuser: str = Field(
        default="postgres",
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="PostgreSQL: the superuser a restored copy is checked as (pg_amcheck, "
        "over the copy's private socket; never a network login).",
    )
    pg_backupflow_command: str = Field(
        default="backupflow",
        max_length=512,
        pattern=r"^[^\n\r%'\"]+$",
        description="PostgreSQL: the backupflow command as the cluster's own processes run it "
        "(a restore's restore_command is `<this> wal-fetch ...`; archive_command should be "
        "`<this> wal-push %p`); it must be runnable by the cluster's OS user.",
    )
    archive_wait_seconds: int = Field(
        default=120,
        ge=1,
        le=3600,
        description="PostgreSQL: how long the log job waits for the server to archive the "
        "segment it just switched (archive_command = backupflow wal-push).",
    )
    archiver_idle_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="PostgreSQL: the resident WAL archiver exits after this long with no "
        "segment to push or copy (the next wal-push starts it again).",
    )
    recovery_wait_seconds: int = Field(
        default=4 * 3600,
        ge=10,
        le=7 * 86400,
        description="PostgreSQL: how long a restore waits for the copy to replay WAL to its "
        "target before it gives up (the copy is discarded; nothing live is touched).",
    )
    missing_full: Literal["promote", "fail"] = Field(
        default="promote",
        description="When a differential or log backup finds no full backup: take a full "
        "backup instead (promote) or fail.",
    )

    @field_validator("worker_backup_dir", "pg_data_dir")
    @classmethod
    def _absolute_dirs(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

    @model_validator(mode="after")
    def _postgres_port(self) -> DatabaseSettings:
        if self.engine == "postgres" and "port" not in self.model_fields_set:
            self.port = 5432
        return self

    @field_validator("pg_backupflow_command")
    @classmethod
    def _command_splits(cls, value: str) -> str:
        import shlex

        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"the command cannot be split into words ({exc})") from None
        if not parts:
            raise ValueError("the command is empty")
        return value

    @field_validator("server_timezone")
    @classmethod
    def _server_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("databases")
    @classmethod
    def _database_names(cls, value: list[str]) -> list[str]:
        if value == ["*"]:
            return value
        for item in value:
            if not is_database_name(item):
                raise ValueError(
                    "each database must be a name of 1 to 128 letters, digits, '_', '.' or '-' "
                    "starting with a letter, digit or '_' (or the list must be exactly [\"*\"])"
                )
        return value


class FileSetSettings(BaseModel):
    """A set of files backed up together: a root folder and glob patterns relative to it."""

    root: Path = Field(description="Folder the patterns are relative to; restored into it.")
    include: list[str] = Field(description="Glob patterns of what to back up ('**' recurses).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns to leave out.")

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"the folder {value} must be an absolute path")
        return value


API_ROOT = Path("/var/www/gantt-workload-api")


class FilesSettings(BaseModel):
    """The three file sets of the seed and what runs after a file restore."""

    config: FileSetSettings = Field(
        default=FileSetSettings(root=API_ROOT, include=["config/**", ".env*"]),
        description="The API's configuration: config/ and .env* (the seed's config backup).",
    )
    logs: FileSetSettings = Field(
        default=FileSetSettings(root=API_ROOT, include=["logs/**"], exclude=["**/*.tmp"]),
        description="Application logs (the seed names no folder: logs/ of the API by default).",
    )
    uploads: FileSetSettings = Field(
        default=FileSetSettings(root=API_ROOT, include=["uploads/**"]),
        description="User uploads (the seed names no folder: uploads/ of the API by default); "
        "stored content-addressed, each distinct file once.",
    )
    post_restore_hook: list[str] = Field(
        default_factory=list,
        description="Command (an argument list, not a shell string) run after an in-place "
        'restore, e.g. ["pm2", "reload", "ecosystem.config.js", "--env", "production"].',
    )
    post_restore_cwd: Path = Field(default=API_ROOT, description="Folder the hook runs in.")
    hook_timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="Seconds the post-restore command may run before it is stopped and the "
        "run fails.",
    )
    hook_env: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Names of environment variables passed to the post-restore command "
        "besides PATH, HOME and LANG (e.g. PM2_HOME); nothing else is inherited.",
    )

    @field_validator("post_restore_cwd")
    @classmethod
    def _absolute_cwd(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

    @field_validator("hook_env")
    @classmethod
    def _variable_names(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", item):
                raise ValueError("each entry must be an environment variable name")
        return value

    @model_validator(mode="before")
    @classmethod
    def _merge(cls, data: Any) -> Any:
        return _merge_nested_defaults(cls, data)


class Contact(BaseModel):
    """One of the seed's three roles: who, and how Prefect tells them."""

    name: str = Field(default="", description="The person holding the role.")
    email: str = Field(default="", description="Their e-mail address.")
    phone: str = Field(default="", description="Their phone number.")
    notification_block: str | None = Field(
        default=None, description="Name of a Prefect notification block that reaches them."
    )


class OwnersSettings(BaseModel):
    """Backup administrator, recovery owner and DR lead (the seed's responsibilities)."""

    backup_administrator: Contact = Field(
        default_factory=Contact, description="Told when a backup fails."
    )
    recovery_owner: Contact = Field(
        default_factory=Contact, description="Told when a restore fails."
    )
    dr_lead: Contact = Field(
        default_factory=Contact, description="Told when a drill or the health check fails."
    )


class DrillSettings(BaseModel):
    """Recovery objectives the quarterly drill must show, and how late a backup may be before
    the health check fails."""

    rto_hours: float = Field(default=4.0, gt=0, le=168, description="Recovery time objective.")
    rpo_hours: float = Field(default=1.0, gt=0, le=168, description="Recovery point objective.")
    health_grace_minutes: int = Field(
        default=30, ge=0, le=1440, description="How late a backup may be before health fails."
    )


class FailoverSettings(BaseModel):
    """Failover to the standby: the DNS record to switch and the health probe afterwards."""

    hosted_zone_id: str | None = Field(default=None, description="Route 53 hosted zone id.")
    record_name: str = Field(
        default="api.workload-optimization.example.", description="The application's record."
    )
    record_type: Literal["A", "AAAA", "CNAME"] = Field(default="A", description="Record type.")
    ttl: int = Field(default=60, ge=1, le=86400, description="TTL of the switched record.")
    standby_address: str | None = Field(
        default=None, description="The standby's address (IP for A/AAAA, name for CNAME)."
    )
    health_url: str | None = Field(
        default=None, description="URL probed after the switch (2xx = healthy)."
    )
    health_attempts: int = Field(
        default=10, ge=1, le=1000, description="Health probes after the switch before it fails."
    )
    health_interval_seconds: float = Field(
        default=3.0, ge=0, le=600, description="Seconds between two health probes."
    )
    change_timeout_seconds: int = Field(
        default=300, ge=1, le=3600, description="How long to wait for Route 53 INSYNC."
    )
    route53_endpoint_url: str | None = Field(default=None, description="Route 53 endpoint.")
    credentials_block: str | None = Field(
        default=None, description="prefect-aws AwsCredentials block for Route 53."
    )
    create_record: bool = Field(
        default=False,
        description="Create the record when the hosted zone lacks it; off by default, so a "
        "misspelt record name fails instead of creating a new record.",
    )

    @field_validator("record_name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _is_hostname(value):
            raise ValueError(f"{value!r} is not a DNS name")
        return value

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
            raise ValueError("the health URL must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _address_fits_type(self) -> FailoverSettings:
        address = self.standby_address
        if address is None:
            return self
        if self.record_type == "CNAME":
            if not _is_hostname(address):
                raise ValueError(f"standby_address {address!r} is not a DNS name (CNAME record)")
            return self
        version = 4 if self.record_type == "A" else 6
        try:
            fits = ipaddress.ip_address(address).version == version
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"standby_address {address!r} is not an IPv{version} address "
                f"({self.record_type} record)"
            )
        return self


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc
    return value


def _is_hostname(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    label = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
    return len(name) <= 253 and re.fullmatch(rf"{label}(\.{label})*", name) is not None


class KeySettings(BaseModel):
    """Repository keys (see docs/security.md): age recipients encrypt, age identities
    decrypt, the signing key signs manifests, verify keys check them.  Losing the
    identities or the signing key's escrow copy means losing the backups."""

    encrypt: bool = Field(
        default=True,
        description="Encrypt every stored object with age (client side, after compression).",
    )
    recipients: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="age public keys (age1...) new backups are encrypted to: the current key, "
        "plus an escrow key if you keep one.",
    )
    identities: SecretStr = Field(
        default=SecretStr(""),
        description="age secret keys (AGE-SECRET-KEY-1...), one a line: the current and every "
        "older key whose backups must stay restorable.  Only where restores run.",
    )
    identities_block: str | None = Field(
        default=None, description="Prefect Secret block holding the identities instead."
    )
    signing_key: SecretStr = Field(
        default=SecretStr(""),
        description="The manifest signing key (BACKUPFLOW-SIGNING-KEY-1...); where backups "
        "are written.",
    )
    signing_key_block: str | None = Field(
        default=None, description="Prefect Secret block holding the signing key instead."
    )
    wal_signing_key: SecretStr = Field(
        default=SecretStr(""),
        description="The WAL signing key (BACKUPFLOW-SIGNING-KEY-1...): signs archived WAL "
        "records only; held by PostgreSQL's OS user (archive_command), never the manifest key.",
    )
    verify_keys: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Public verify keys (bfverify1...) trusted to sign, each optionally "
        "followed by its scope: kinds=manifest|wal and series=category/name,... (see "
        "docs/security.md).  Without a scope a key is trusted for every record.",
    )


class PipelineSettings(BaseModel):
    """How backup streams are compressed, hashed and stored."""

    codec: Literal["zstd", "gzip"] = Field(
        default="zstd", description="Compression; gzip matches the seed's .gz files."
    )
    zstd_level: int = Field(default=3, ge=1, le=19, description="zstd compression level.")
    zstd_threads: int = Field(
        default=-1, ge=-1, le=64, description="zstd worker threads; -1 = one per core, 0 = none."
    )
    gzip_level: int = Field(default=6, ge=1, le=9, description="gzip compression level.")
    chunk_bytes: int = Field(
        default=1 << 20,
        ge=64 << 10,
        le=64 << 20,
        description="Size of the chunks streamed through the pipeline (memory per stream).",
    )
    verify_after_write: bool = Field(
        default=True,
        description="Read a stored object back and check its SHA-256 before the manifest is "
        "written, on tiers whose writes prove nothing themselves (an S3-compatible store that "
        "does not check checksums). Folders and S3 check their writes without a read-back.",
    )


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


class _FleetSource(PydanticBaseSettingsSource):
    """A fleet site's values (``$BACKUPFLOW_FLEET``, site ``$BACKUPFLOW_SITE``), beneath the
    host's environment and env-file (:mod:`backupflow.fleetfile`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        path, site = os.environ.get(FLEET_ENV_VAR), os.environ.get(SITE_ENV_VAR)
        if not path or not site:
            return {}
        check_site_name(site, SITE_ENV_VAR)
        return site_values(
            read_fleet_file(Path(path)),
            site,
            where=f"the fleet file {path}",
            secret_paths=secret_paths(),
            tier_urls={
                name: tier.url
                for name, tier in (
                    ("primary", RepositorySettings().primary),
                    ("secondary", RepositorySettings().secondary),
                    ("dr", RepositorySettings().dr),
                )
            },
        )


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
        return _check_timezone(value)

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
            _FleetSource(settings_cls),
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
    wanted = os.environ.get(RUN_SITE_ENV_VAR)
    if wanted and wanted != settings.site:
        raise ConfigError(
            f"this run is for the site {wanted!r} but this host serves "
            f"{settings.site or 'no fleet site'!r} ({SITE_ENV_VAR}); its deployment's work "
            "queue routes it to the wrong worker, so it was refused."
        )
    return settings


_ENV_FILE_LIMIT = 1 << 20


def _check_env_file(path: Path) -> None:
    """The env-file must be a readable UTF-8 text file of bounded size."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the worker.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(
                    f"{CONFIG_ENV_VAR} names {path}, which is not a readable file (not a "
                    "regular file); fix the path or unset it."
                )
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read(_ENV_FILE_LIMIT + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(
            f"{CONFIG_ENV_VAR} names {path}, which is not a readable file "
            f"({exc.strerror or type(exc).__name__}); fix the path or unset it."
        ) from None
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
