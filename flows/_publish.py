"""What the Prefect UI shows of a run: artifacts with stable keys, the moment the run's
clock starts (for RTO, docs/objectives.md) and run names that say what the run does.

A flow's body also runs without Prefect (``flow.fn``, when the CLI finds no Prefect API
answering: ``backupflow_app.cli_common.run_flow``).  Outside a flow run there is no run to
attach an artifact to: :func:`table_artifact` and :func:`markdown_artifact` then do nothing
(the backup log and the CLI's output say what happened), and :func:`run_logger` is the
``backupflow`` logger."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext

from backupflow.backup_run import BackupOutcome
from backupflow.config import current_settings
from backupflow.reporting import EMPTY, artifact_key, local_and_utc, name_time

__all__ = [
    "HISTORY_ROWS",
    "failed_row",
    "in_run",
    "log_target",
    "markdown_artifact",
    "prepend_history",
    "publish_backup",
    "run_logger",
    "run_name",
    "run_started",
    "run_timezone",
    "running_without_prefect",
    "short_reason",
    "subflow",
    "table_artifact",
    "without_prefect",
]


_WITHOUT_PREFECT: ContextVar[bool] = ContextVar("backupflow_without_prefect", default=False)


@contextmanager
def without_prefect() -> Iterator[None]:
    """Mark a flow body run without Prefect (its API did not answer): nothing in it may
    ask the API, not even for a concurrency slot."""
    token = _WITHOUT_PREFECT.set(True)
    try:
        yield
    finally:
        _WITHOUT_PREFECT.reset(token)


def running_without_prefect() -> bool:
    return _WITHOUT_PREFECT.get()


def in_run() -> bool:
    """Whether this code runs inside a Prefect flow run (not the CLI's run without Prefect)."""
    return FlowRunContext.get() is not None


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger, or the ``backupflow`` logger outside a run."""
    if not in_run():
        return logging.getLogger("backupflow")
    from prefect import get_run_logger

    return get_run_logger()


#: Rows kept in a history artifact (newest first).
HISTORY_ROWS = 100
_URL = re.compile(r"\b(?:s3|https?)://([^/\s,;)'\"]+)[^\s,;)'\"]*")
_REASON_CHARS = 240


def short_reason(exc: BaseException) -> str:
    """What went wrong, for a history row: one line, at most 240 characters, no HTML entity,
    and a URL shortened to its host or bucket."""
    text = html.unescape(str(exc) or type(exc).__name__)
    text = " ".join(_URL.sub(lambda found: found.group(1), text).split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def prepend_history(key: str, row: dict[str, Any], description: str) -> None:
    """Put ``row`` first in the table artifact ``key`` (a history, newest first, at most
    :data:`HISTORY_ROWS` rows); nothing outside a run.  Rows already there that are not
    objects are dropped: the artifact is input like any other."""
    if not in_run():
        return
    try:
        _prepend(key, row, description)
    except Exception as exc:  # the run's own outcome is what it reports
        run_logger().warning("the history %s could not be updated: %s", key, exc)


def _prepend(key: str, row: dict[str, Any], description: str) -> None:
    previous = latest_artifact(key)
    history: list[dict[str, Any]] = []
    if previous is not None and previous.data:
        try:
            data = json.loads(str(previous.data)[: 16 << 20])
        except (ValueError, RecursionError):
            data = []
        if isinstance(data, list):
            history = [r for r in data[:HISTORY_ROWS] if isinstance(r, dict)]
    table_artifact(key=key, table=[row, *history][:HISTORY_ROWS], description=description)


def failed_row(
    exc: BaseException, requested: datetime | str | None, timezone: str, target: str | None
) -> dict[str, Any]:
    """A history row of a restore that failed: the result, then why, short."""
    shown = str(requested)[:80] if requested else "latest"
    if isinstance(requested, datetime):
        with suppress(OverflowError, ValueError):
            shown = local_and_utc(requested, timezone)
    return {
        "result": "failed",
        "reason": short_reason(exc),
        "rto_seconds": EMPTY,
        "rpo_seconds": EMPTY,
        "requested": shown,
        "restore_point": EMPTY,
        "target": (target or EMPTY)[:200],
        "failed_at": local_and_utc(datetime.now(UTC), timezone),
    }


def log_target(target: datetime | None, timezone: str) -> None:
    """The run's first line about its target: how ``target_time`` was read."""
    if target is None:
        run_logger().info("target_time: none given, so the latest state")
    else:
        run_logger().info("target_time read as %s", local_and_utc(target, timezone))


def subflow(flow: Any, **parameters: Any) -> Any:
    """Call ``flow`` as a subflow of this run, or its body outside a run."""
    return flow(**parameters) if in_run() else flow.fn(**parameters)


def site_key(key: str) -> str:
    """``key`` as this host's site writes it: ``<site>-<key>`` in a fleet (several sites on
    one Prefect server may have a database of the same name), ``key`` alone otherwise."""
    site = current_settings().site
    return key if site is None or key.startswith(f"{site}-") else f"{site}-{key}"


def latest_artifact(key: str) -> Any:
    """The latest version of this site's artifact ``key`` (None when there is none)."""
    from prefect.artifacts import Artifact

    return Artifact.get(site_key(key))


def table_artifact(*, key: str, table: Any, description: str | None = None) -> None:
    """A table artifact of the current run, under this site's key; nothing outside a run."""
    if in_run():
        create_table_artifact(key=site_key(key), table=table, description=description)


def markdown_artifact(*, key: str, markdown: str, description: str | None = None) -> None:
    """A markdown artifact of the current run, under this site's key; nothing outside a run."""
    if in_run():
        create_markdown_artifact(key=site_key(key), markdown=markdown, description=description)


def publish_backup(outcome: BackupOutcome) -> None:
    """The latest backup of a series, as a one-row table (before a missing tier fails the
    run, so the UI shows where it was stored); its restore point in the settings' timezone
    and in UTC."""
    manifest = outcome.manifest
    row = outcome.row()
    # Read by an operator: in the settings' timezone, and in UTC.
    row["restore_point"] = local_and_utc(manifest.restore_point, current_settings().timezone)
    table_artifact(
        key=artifact_key("backup", manifest.category.value, manifest.database, manifest.kind.value),
        table=[row],
        description=f"Latest {manifest.kind.value} backup of {manifest.category.value} "
        f"{manifest.database}",
    )


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    # Prefect's own DateTime types are datetimes; rebuild a plain one.
    return datetime.fromtimestamp(moment.timestamp(), UTC) if moment.tzinfo else moment


def run_started(fallback: datetime) -> datetime:
    """When the run's clock starts for RTO: its scheduled start (a deployment's schedule),
    else when it was created, never later than ``fallback`` (the flow's own start)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None:
        return fallback
    for value in (run.expected_start_time, run.created, run.start_time):
        try:
            moment = _as_datetime(value)
        except (OverflowError, ValueError):
            continue
        if moment is not None and moment.tzinfo is not None:
            return min(moment, fallback)
    return fallback


def run_timezone() -> str:
    """The configured timezone, or UTC when the settings cannot be read (a run name must
    never fail a run)."""
    try:
        return current_settings().timezone
    except Exception:
        return "UTC"


def _target(value: Any, timezone: str) -> str:
    if value is None or value == "":
        return "latest"
    try:
        moment = _as_datetime(value)
        if moment is not None:
            if moment.tzinfo is None:
                from zoneinfo import ZoneInfo

                moment = moment.replace(tzinfo=ZoneInfo(timezone))
            return "to-" + name_time(moment, timezone)
    except (OverflowError, ValueError):
        pass  # the flow refuses it with its own message; the name shows what was given
    return "to-" + re.sub(r"[^0-9A-Za-z:+.-]+", "_", str(value))[:40]


def run_name(
    verb: str, *words: str, target: bool = False, at_start: bool = False
) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``verb``, then the values of the parameters named in
    ``words`` (``"source=dr"`` gives a default; empty values are left out), then the target
    (``to-2026-11-26T18:08+09:00`` or ``latest``) or the run's start in the configured
    timezone, then ``dry-run`` when the run only plans."""

    def name() -> str:
        from prefect.runtime import flow_run

        try:
            parameters: dict[str, Any] = dict(flow_run.parameters or {})
        except Exception:
            parameters = {}
        timezone = run_timezone()
        parts = [verb]
        for word in words:
            key, _, default = word.partition("=")
            value = parameters.get(key)
            value = default if value is None else getattr(value, "value", value)  # enums
            if isinstance(value, list | tuple):
                value = "-".join(str(v) for v in value)
            if value not in (None, "", False):
                parts.append(str(value))
        if target:
            parts.append(_target(parameters.get("target_time"), timezone))
        if at_start:
            parts.append(name_time(datetime.now(UTC), timezone))
        if parameters.get("dry_run"):
            parts.append("dry-run")
        return "-".join(parts)

    return name
