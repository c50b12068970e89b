"""Shared task options."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

__all__ = ["SIDE_EFFECTS"]

#: Options for every task with side effects: never cached, results never persisted.
SIDE_EFFECTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
