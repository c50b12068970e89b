"""The file sets (configuration, logs, uploads) and what runs after a file restore."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from backupflow.config.checks import merge_nested_defaults

__all__ = ["API_ROOT", "FileSetSettings", "FilesSettings"]


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
        return merge_nested_defaults(cls, data)
