"""What the ``backupflow`` commands share: the consoles, the settings loaded at the edge,
the context flows run in, and the option choices."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from backupflow.config import CONFIG_ENV_VAR, Settings, load_settings, use_settings
from backupflow.errors import BackupflowError, ConfigError, ParameterError
from backupflow.progress import report_progress
from backupflow.vocabulary import use_vocabulary
from backupflow_app.cli_options import check_config_file, check_places, parse_target_time

__all__ = [
    "FileSetChoice",
    "SourceChoice",
    "TierChoice",
    "cli_settings",
    "console",
    "debug",
    "errors",
    "flow_context",
    "pick_target_time",
    "prefect_unavailable",
    "quiet_prefect_tracebacks",
    "run_flow",
]

console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class SourceChoice(StrEnum):
    AUTO = "auto"
    PRIMARY = "primary"
    SECONDARY = "secondary"
    DR = "dr"


class FileSetChoice(StrEnum):
    CONFIG = "config"
    LOGS = "logs"
    UPLOADS = "uploads"


class TierChoice(StrEnum):
    ALL = "all"
    PRIMARY = "primary"
    SECONDARY = "secondary"
    DR = "dr"


def debug() -> bool:
    """Whether BACKUPFLOW_DEBUG asks for tracebacks."""
    return os.environ.get("BACKUPFLOW_DEBUG", "") not in ("", "0", "false")


class _NoTraceback(logging.Formatter):
    """Formats records without their exception text: the CLI reports errors itself."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_prefect_tracebacks(level: int | None = None) -> None:
    """Keep Prefect's console logs (at ``level`` or above), without the tracebacks of
    failed runs."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    # Prefect's background services say "Still processing items" while they drain at exit,
    # after the command's own last line: nothing an operator can act on.
    for service in ("EventsWorker", "APILogWorker"):
        logging.getLogger(service).setLevel(logging.ERROR)
    for name in ["", *logging.root.manager.loggerDict]:
        for handler in getattr(logging.getLogger(name), "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _NoTraceback
            ):
                handler.setFormatter(_NoTraceback(handler.formatter))
            if isinstance(handler, PrefectConsoleHandler) and level is not None:
                handler.setLevel(level)


@contextmanager
def flow_context(settings: Settings, *, show_progress: bool) -> Iterator[None]:
    """Run flows with ``settings``, Prefect's tracebacks quiet, messages naming the CLI's
    flags (``--replace``, not ``replace=true``), and a transfer bar when ``show_progress``
    and standard output is a terminal.

    Backups run here are serialised as a deployment's are (``flows/_slots.py``): by the
    global concurrency limit when a Prefect API is configured, else by the host's lock file.
    """
    if not debug():
        quiet_prefect_tracebacks()
    with use_settings(settings), use_vocabulary("cli"):
        if not (show_progress and console.is_terminal):
            yield
            return
        with Progress(
            *Progress.get_default_columns()[:1],
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("transfer", total=None)
            with report_progress(lambda n: bar.advance(task, n)):
                yield


def cli_settings(*, for_flows: bool = True) -> Settings:
    """The settings, loaded once at the edge; anything that stops them loading is a
    configuration error.  For commands that run flows, the staging folder and the backup
    log are checked too."""
    check_config_file(os.environ.get(CONFIG_ENV_VAR), CONFIG_ENV_VAR)
    try:
        settings = load_settings()
    except BackupflowError:
        raise
    except (RecursionError, ValueError, TypeError, OSError) as exc:
        raise ConfigError(
            f"the settings cannot be read ({type(exc).__name__}); check the BACKUPFLOW_* "
            f"variables and {CONFIG_ENV_VAR}."
        ) from None
    if for_flows:
        check_places(settings)
    return settings


def pick_target_time(at: str | None, latest: bool, settings: Settings) -> datetime | None:
    """``--at`` or ``--latest``, exactly one of them."""
    if at is not None and latest:
        raise ParameterError("give --at TIME or --latest, not both.")
    if at is None and not latest:
        raise ParameterError("give --at TIME (ISO-8601) or --latest to say what to restore.")
    return None if at is None else parse_target_time(at, settings.timezone)


def prefect_unavailable(wait: float) -> str | None:
    """Why no Prefect API can run this command's flow, or None when one answers: none is
    configured (``PREFECT_API_URL``; the CLI starts no temporary server), or the one
    configured did not answer its health check within ``wait`` seconds (refused, down, or
    accepting connections and never answering)."""
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value() or "").rstrip("/")
    if not url:
        return "no Prefect API is configured (PREFECT_API_URL)"
    import httpx

    try:
        with httpx.Client(timeout=httpx.Timeout(wait, connect=min(wait, 10.0))) as client:
            answer = client.get(f"{url}/health")
    except httpx.TimeoutException:
        return f"the Prefect API at {url} did not answer within {wait:.0f} s"
    except httpx.HTTPError as exc:
        return f"the Prefect API at {url} cannot be reached ({type(exc).__name__})"
    if answer.status_code >= 500:
        return f"the Prefect API at {url} answered HTTP {answer.status_code}"
    return None


def run_flow(flow: Any, settings: Settings, **parameters: Any) -> Any:
    """Run ``flow`` as a Prefect flow run when the Prefect API answers; otherwise run the
    same body without Prefect (``flow.fn``: the same core run, checks and exit codes, no
    artifacts), saying so in one line and recording it in the backup log.  An operator's
    backup or restore never waits on an orchestrator that is down with everything else."""
    reason = prefect_unavailable(settings.prefect_wait_seconds)
    if reason is None:
        return flow(**parameters)
    errors.print(
        f"[yellow]note:[/yellow] {reason}: {flow.name} runs without Prefect (recorded in the "
        "backup log; the Prefect UI will not show it).",
        highlight=False,
    )
    from backupflow.backuplog import BackupLog

    with suppress(BackupflowError):
        BackupLog(settings.backup_log).append(
            "run-without-prefect", status="started", flow=flow.name, reason=reason
        )
    _log_to_stderr()
    from flows._publish import without_prefect

    with without_prefect():
        return flow.fn(**parameters)


def _log_to_stderr() -> None:
    """The ``backupflow`` logger's INFO lines on standard error, as a flow run's would be."""
    logger = logging.getLogger("backupflow")
    if not any(getattr(h, "_backupflow_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S")
        )
        handler._backupflow_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
