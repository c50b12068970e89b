"""The demo's DR drill and health check, and how it keeps an expected failure quiet.

The drill and the health check are the deployments' own flows (``dr-drill``,
``backup-health``); this module only says in words what they measured: RTO and RPO against
the objectives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console

from backupflow.config import Settings
from backupflow.errors import BackupflowError
from backupflow.reporting import iso

__all__ = ["duration", "expected_failure", "run_drill", "run_health"]


def duration(delta: timedelta) -> str:
    """A duration as an operator reads it: ``1.42 s``, ``3.5 min``, ``4 h``."""
    seconds = delta.total_seconds()
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def expected_failure() -> Iterator[None]:
    """Keep Prefect's console quiet about a failure the demo provokes on purpose: its ERROR
    lines are not printed (the run still records them on the server)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = {
        handler
        for name in ["", *logging.root.manager.loggerDict]
        for handler in getattr(logging.getLogger(name), "handlers", [])
        if isinstance(handler, PrefectConsoleHandler)
    }
    drop = _DropErrors()
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def run_drill(console: Console) -> bool:
    """The DR drill (flow ``dr-drill``) from the DR tier alone; says its RTO and RPO."""
    from flows.dr_drill import dr_drill

    try:
        result = dr_drill(source="dr").result
    except BackupflowError as exc:
        console.print(f"[red]DR drill failed:[/red] {exc}")
        return False
    verdict = "[green]passed[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"DR drill from the DR tier alone {verdict}: restored to {iso(result.restore_point)} "
        "in a scratch database, checked, dropped"
    )
    console.print(
        f"  RTO {duration(result.rto)} (objective {duration(result.rto_objective)}): "
        "from the declared disaster to a restored and checked database"
    )
    console.print(
        f"  RPO {duration(result.rpo)} (objective {duration(result.rpo_objective)}): "
        "the writes after the newest restore point, which a disaster now would lose"
    )
    return result.passed


def run_health(settings: Settings, console: Console) -> bool:
    """Heal the new primary folder (flow ``replicate-backups``), then the health check (flow
    ``backup-health``); says how old the newest database backup is: the RPO right now."""
    from flows.backup_health import backup_health
    from flows.replicate_backups import replicate_backups

    try:
        copied = replicate_backups().copied
        console.print(f"healing: {len(copied)} backup copies made into the new primary folder")
        rows = backup_health()
    except BackupflowError as exc:
        console.print(f"[red]health check failed:[/red] {exc}")
        return False
    ages = [r.age for r in rows if r.job.startswith("database") and r.age is not None]
    worst = max(ages) if ages else None
    objective = timedelta(hours=settings.drill.rpo_hours)
    console.print(
        f"health check [green]ok[/green]: {len(rows)} job/tier pairs, each newest backup within "
        "its schedule"
        + (
            f"; the newest database backup is {duration(worst)} old in the tier furthest "
            f"behind, so RPO right now is {duration(worst)} (objective {duration(objective)})"
            if worst is not None
            else ""
        )
    )
    return worst is not None and worst <= objective
