"""Checks and helpers the settings models share: nested defaults kept when one field is set,
IANA timezones, DNS names."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel

__all__ = ["check_timezone", "is_hostname", "merge_nested_defaults"]


def merge_nested_defaults(cls: type[BaseModel], data: Any) -> Any:
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


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc
    return value


def is_hostname(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    label = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
    return len(name) <= 253 and re.fullmatch(rf"{label}(\.{label})*", name) is not None
