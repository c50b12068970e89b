"""Where and how backups are stored: the three tiers (a folder or an S3 bucket each), their
retention overrides, and the pipeline that compresses, hashes and stores a stream."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from backupflow.config.checks import merge_nested_defaults

__all__ = ["PipelineSettings", "RepositorySettings", "RetentionOverrides", "TierSettings"]


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
        return merge_nested_defaults(cls, data)


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
