"""Checks for flow parameters, run before a flow reads or writes anything.

Whoever can start a deployment chooses its parameters, so they are as untrusted as a
command-line option, and the same rules apply: a restore target must be absolute and lie
under an allowed root (or, for an engine whose databases live on a server, be a database
name), a database name follows the one name rule, and a target time must be a real moment
between 2000 and now.  Each refusal is a :class:`~backupflow.errors.ParameterError` whose one
sentence names the parameter as the deployment user typed it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from backupflow.config import Settings
from backupflow.engines.base import Engine
from backupflow.errors import ConfigError, ParameterError
from backupflow.names import check_database_name
from backupflow.targets import check_restore_target

__all__ = [
    "EARLIEST_YEAR",
    "check_database_parameter",
    "check_database_target",
    "check_target_time",
]

#: No backup of this system predates it; an earlier target time is a typo.
EARLIEST_YEAR = 2000
_MAX_PATH = 4096


def check_target_time(
    moment: datetime | None,
    timezone: str,
    now: datetime,
    parameter: str = "target_time",
    *,
    latest: str = "leave it empty for the latest state",
    shown: str | None = None,
) -> datetime | None:
    """``moment`` as an aware time (without an offset it is read in ``timezone``), or None
    for "the latest state"; refused when it cannot be converted, does not exist on the
    local clock (a daylight-saving gap), lies before :data:`EARLIEST_YEAR` or after ``now``."""
    if moment is None:
        return None
    shown = shown or moment.isoformat()
    try:
        local = moment
        if moment.tzinfo is None:
            zone = ZoneInfo(timezone)
            local = moment.replace(tzinfo=zone)
            if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
                raise ParameterError(
                    f"{parameter} {shown} does not exist in {timezone} (the clocks skip it); "
                    "give the time with its UTC offset."
                )
        at = local.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ParameterError(
            f"{parameter} {shown} is out of range; give a time between {EARLIEST_YEAR} and now."
        ) from None
    if at.year < EARLIEST_YEAR:
        raise ParameterError(
            f"{parameter} {shown} is before {EARLIEST_YEAR}, earlier than any backup; check "
            f"the year, or {latest}."
        )
    if at > now:
        raise ParameterError(
            f"{parameter} {shown} is {_duration(at - now)} later than now "
            f"({now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}); give a time in the past, or {latest}."
        )
    return local


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{max(seconds, 1)} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def check_database_parameter(name: str | None, parameter: str = "database") -> str | None:
    """``name`` if it follows the database name rule (None: the configured database)."""
    return None if name is None else _database_name(name, parameter)


def _database_name(name: str, parameter: str) -> str:
    try:
        return check_database_name(name, f"the {parameter} parameter")
    except ConfigError as exc:
        raise ParameterError(str(exc)) from None


def check_database_target(
    value: str, engine: Engine, settings: Settings, parameter: str = "into"
) -> Path:
    """Where a database restore given as ``parameter`` may go.

    An engine whose live database is a file (its live target is an absolute path) takes an
    absolute path under an allowed root that is not itself a link; an engine whose databases
    live on a server takes a database name.
    """
    if not value.strip():
        raise ParameterError(
            f"{parameter} is empty; leave it out for the default target, or give one."
        )
    if engine.live_target().is_absolute():
        if "\0" in value or len(value) > _MAX_PATH:
            raise ParameterError(
                f"{parameter} is not a usable path (it holds a NUL byte or is longer than "
                f"{_MAX_PATH} characters)."
            )
        target = check_restore_target(Path(value), settings, parameter)
        if os.path.islink(target):
            raise ParameterError(
                f"{parameter} {target} is a link; give the path of the database file itself."
            )
        return target
    return Path(_database_name(value, parameter))
