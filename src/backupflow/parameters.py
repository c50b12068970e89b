"""Checks for flow parameters, run before a flow reads or writes anything.

Whoever can start a deployment chooses its parameters, so they are as untrusted as a
command-line option, and the same rules apply: a restore target must be absolute and lie
under an allowed root (or, for an engine whose databases live on a server, be a database
name), a database name follows the one name rule, and a target time must be a real moment
between 2000 and now.  Each refusal is a :class:`~backupflow.errors.ParameterError` whose one
sentence names the parameter as the deployment user typed it.

Messages deeper in the core (an engine refusing an existing target, a file set refusing a
folder that is not empty) name an option too, and must name it as the caller gave it: a
CLI flag (``--replace``) from the command line, a flow parameter (``replace=true``) from a
deployment run.  :mod:`backupflow.vocabulary` says which (:func:`flag`, :func:`use_vocabulary`,
re-exported here).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

from pydantic import WithJsonSchema

from backupflow.config import Settings
from backupflow.errors import ConfigError, ParameterError
from backupflow.names import check_database_name
from backupflow.targets import check_restore_target
from backupflow.vocabulary import Vocabulary, flag, use_vocabulary, vocabulary

if TYPE_CHECKING:
    from backupflow.engines.base import Engine

__all__ = [
    "EARLIEST_YEAR",
    "LocalTime",
    "Vocabulary",
    "check_database_parameter",
    "check_database_target",
    "check_target_time",
    "flag",
    "use_vocabulary",
    "vocabulary",
]

#: A flow's time parameter as the run form shows it: a text box, not Prefect's date-time
#: picker (which fills in UTC: 18:12 typed in Seoul would be sent as 18:12Z).  The run form
#: sends the text as typed; it is parsed as ISO-8601 (``2026-12-07 18:12``,
#: ``2026-12-07T18:12:00+09:00``, ``...Z``), and a time without an offset is read in the
#: settings' timezone by :func:`check_target_time`.
LocalTime = Annotated[
    datetime | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "examples": ["2026-12-07 18:12", "2026-12-07T18:12:00+09:00"],
        }
    ),
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
