"""The six scheduled jobs: when each runs and how long its backups are kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backupflow.config.checks import merge_nested_defaults

__all__ = ["Job", "JobSettings"]


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
        return merge_nested_defaults(cls, data)

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
