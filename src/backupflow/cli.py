"""The ``backupflow`` command line.

Every user mistake ends with one sentence on standard error and a non-zero exit code;
tracebacks are shown only with ``BACKUPFLOW_DEBUG=1``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import click
import typer
from rich.console import Console
from rich.progress import DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from backupflow.config import Settings, load_settings, use_settings
from backupflow.errors import BackupflowError
from backupflow.models import BackupKind, Category, localized
from backupflow.progress import report_progress
from backupflow.reporting import iso, manifest_row, plan_rows
from backupflow.storage import TIER_NAMES, TierName, open_tiers
from backupflow.tiers import locate

__all__ = ["app", "main"]

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


app = typer.Typer(
    name="backupflow",
    help="Backups and restores of the Gantt workload API, run as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backup_app = typer.Typer(help="Take a backup now.", no_args_is_help=True)
restore_app = typer.Typer(help="Restore from the backups.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
app.add_typer(config_app, name="config")
dr_app = typer.Typer(help="Disaster recovery: rebuild this host, or fail over to it.")
app.add_typer(dr_app, name="dr")


def _debug() -> bool:
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


def _quiet_prefect_tracebacks(level: int | None = None) -> None:
    """Keep Prefect's console logs (at ``level`` or above), without the tracebacks of
    failed runs."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for name in ["", *logging.root.manager.loggerDict]:
        for handler in getattr(logging.getLogger(name), "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _NoTraceback
            ):
                handler.setFormatter(_NoTraceback(handler.formatter))
            if isinstance(handler, PrefectConsoleHandler) and level is not None:
                handler.setLevel(level)


@contextmanager
def _flow_context(settings: Settings, *, show_progress: bool) -> Iterator[None]:
    if not _debug():
        _quiet_prefect_tracebacks()
    with use_settings(settings):
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


def _parse_time(value: str, timezone: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time such as 2026-11-26T10:30:00+09:00."
        ) from None
    return localized(moment, timezone)


@backup_app.command("database")
def backup_database_cmd(
    kind: Annotated[
        BackupKind, typer.Option("--type", "-t", help="full, diff (differential) or log.")
    ] = BackupKind.FULL,
) -> None:
    """Back up the configured database now (runs the backup-database flow)."""
    settings = load_settings()
    from flows.backup_database import backup_database

    with _flow_context(settings, show_progress=True):
        manifests = backup_database(kind=kind)
    for manifest in manifests:
        row = manifest_row(manifest)
        console.print(
            f"[green]{row['kind']} backup {row['id']}[/green] of {row['database']}: restore "
            f"point {row['restore_point']}, {row['raw_bytes']:,} bytes stored as "
            f"{row['stored_bytes']:,}."
        )
        for note in manifest.notes:
            console.print(f"[yellow]note:[/yellow] {note}")


@backup_app.command("files")
def backup_files_cmd(
    file_set: Annotated[
        FileSetChoice, typer.Option("--set", "-s", help="config, logs or uploads.")
    ] = FileSetChoice.CONFIG,
) -> None:
    """Back up one file set now (runs the backup-files flow)."""
    settings = load_settings()
    from flows.backup_files import backup_files

    with _flow_context(settings, show_progress=True):
        manifest = backup_files(file_set=file_set.value)
    position = manifest.position
    console.print(
        f"[green]{file_set.value} backup {manifest.id}[/green]: {position.get('files')} files, "
        f"{position.get('bytes', 0):,} bytes; {manifest.stored_bytes:,} bytes referenced in "
        "each tier."
    )
    for note in manifest.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@restore_app.command("files")
def restore_files_cmd(
    file_set: Annotated[
        FileSetChoice, typer.Option("--set", "-s", help="config, logs or uploads.")
    ] = FileSetChoice.CONFIG,
    at: Annotated[str | None, typer.Option("--at", help="Target time, ISO-8601.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Restore the latest state.")] = False,
    into: Annotated[
        Path | None, typer.Option("--into", help="An empty or new folder to restore into.")
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="Put the files over the live ones (kept aside first), then run the "
            "post-restore command.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would change; change nothing.")
    ] = False,
    source: Annotated[
        SourceChoice, typer.Option("--from", help="Tier to restore from.")
    ] = SourceChoice.AUTO,
    no_hook: Annotated[
        bool, typer.Option("--no-hook", help="Do not run the post-restore command.")
    ] = False,
    undo: Annotated[
        Path | None,
        typer.Option("--undo", help="Undo an in-place restore from the folder it kept aside."),
    ] = None,
) -> None:
    """Restore a file set (config, logs, uploads), verified file by file."""
    settings = load_settings()
    chosen = getattr(settings.files, file_set.value)
    if undo is not None:
        from backupflow.engines.files import UNDO_FILE, undo_in_place

        if not (undo / UNDO_FILE).is_file():
            raise typer.BadParameter(f"{undo} is not a folder kept aside by an in-place restore.")
        count = undo_in_place(undo, chosen.root)
        console.print(f"[green]undone:[/green] {count} entries of {chosen.root} put back.")
        return
    if (at is None) == (not latest):
        raise typer.BadParameter("give exactly one of --at TIME or --latest.")
    if in_place and into is not None:
        raise typer.BadParameter("give --into DIR or --in-place, not both.")
    target_time = _parse_time(at, settings.timezone) if at else None
    from flows.restore_files import restore_files

    with _flow_context(settings, show_progress=not dry_run):
        report = restore_files(
            file_set=file_set.value,
            target_time=target_time,
            into=str(into) if into else None,
            in_place=in_place,
            dry_run=dry_run,
            source=source.value,
            run_post_restore_hook=not no_hook,
        )
    for problem in report.problems:
        errors.print(f"[yellow]warning:[/yellow] {problem}")
    changed = [(p, a) for p, a in report.changes if a != "unchanged"]
    table = Table(title=f"{file_set.value} at {iso(report.plan.restore_point)} -> {report.target}")
    table.add_column("path")
    table.add_column("change")
    for path, action in changed:
        table.add_row(path, action)
    console.print(table)
    unchanged = len(report.changes) - len(changed)
    if report.outcome is None:
        console.print(f"dry run: {len(changed)} to change, {unchanged} unchanged; nothing written.")
        return
    console.print(
        f"[green]restored[/green] {len(report.changes)} entries into {report.target} "
        f"(every file's SHA-256 verified)."
    )
    for aside in report.outcome.kept_aside:
        console.print(
            f"the replaced files were kept in {aside}; undo with: backupflow restore files "
            f"--set {file_set.value} --undo {aside}"
        )
    if report.hook is not None:
        console.print(f"post-restore command exited {report.hook.returncode}.")


@restore_app.command("database")
def restore_database_cmd(
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Target time, ISO-8601 (without an offset: the settings' timezone).",
        ),
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Restore the latest state.")] = False,
    into: Annotated[
        Path | None, typer.Option("--into", help="Write the restored database to this path.")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace an existing target (the live database without --into); "
            "the current file is kept aside.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    source: Annotated[
        SourceChoice,
        typer.Option(
            "--from",
            help="Tier to restore from; auto tries primary, secondary, then DR and falls back "
            "when a copy is missing or damaged.",
        ),
    ] = SourceChoice.AUTO,
    database: Annotated[
        str | None,
        typer.Option("--database", help="Which database (default: the configured DB_NAME)."),
    ] = None,
) -> None:
    """Restore the configured database to a point in time (--at) or its latest state."""
    if (at is None) == (not latest):
        raise typer.BadParameter("give exactly one of --at TIME or --latest.")
    settings = load_settings()
    target_time = _parse_time(at, settings.timezone) if at else None
    from flows.restore_database import restore_database

    with _flow_context(settings, show_progress=not dry_run):
        report = restore_database(
            target_time=target_time,
            into=str(into) if into else None,
            replace=replace,
            dry_run=dry_run,
            source=source.value,
            database=database,
        )
    for problem in report.problems:
        errors.print(f"[yellow]warning:[/yellow] {problem}")
    console.print(_plan_table(report.plan.database, plan_rows(report.plan)))
    for note in report.plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.script:
        console.print("T-SQL that the restore would run (review it, or run it with sqlcmd):")
        print("\n".join(report.script))
    if report.outcome is None:
        console.print(
            f"dry run: would restore to {iso(report.plan.restore_point)} into {report.target}; "
            "nothing was changed."
        )
        return
    outcome = report.outcome
    used = ", ".join(sorted(set(outcome.tiers_used.values())))
    console.print(
        f"[green]restored[/green] {report.plan.database} to {iso(report.plan.restore_point)} "
        f"into {outcome.target} in {outcome.seconds:.2f} s from {used} (integrity check passed)."
    )
    for aside in outcome.kept_aside:
        console.print(f"the replaced file was kept as {aside}")


def _plan_table(database: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Restore plan for {database}")
    for column in ("step", "id", "kind", "restore_point", "stored_bytes", "why"):
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("step", "id", "kind", "restore_point")),
            f"{row['stored_bytes']:,}",
            row["why"],
        )
    return table


@app.command("catalog")
def catalog_cmd(
    tier: Annotated[
        TierChoice, typer.Option("--tier", help="Which tier(s) to list.")
    ] = TierChoice.ALL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the backups of the configured database and the tiers that hold each."""
    settings = load_settings()
    names = TIER_NAMES if tier is TierChoice.ALL else (cast(TierName, tier.value),)
    holdings = locate(open_tiers(settings, names), Category.DATABASE.value, settings.database.name)
    problems = list(holdings.problems)
    rows = []
    for entry in holdings.sorted_entries():
        try:
            manifest, _where = holdings.load(entry.id)
        except BackupflowError as exc:
            problems.append(str(exc))
            continue
        rows.append({**manifest_row(manifest), "tiers": ", ".join(holdings.tier_names(entry.id))})
    if as_json:
        print(json.dumps({"backups": rows, "problems": problems}, indent=2))
    else:
        table = Table(title=f"Backups of {settings.database.name}")
        for column in rows[0] if rows else ("id", "tiers"):
            table.add_column(column.replace("_", " "))
        for row in rows:
            table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
        console.print(table)
    for problem in problems:
        errors.print(f"[red]error:[/red] {problem}")
    if problems:
        raise typer.Exit(1)


@app.command("replicate")
def replicate_cmd() -> None:
    """Copy every backup to each tier that lacks it, verifying checksums (idempotent)."""
    settings = load_settings()
    from flows.replicate_backups import replicate_backups

    with _flow_context(settings, show_progress=True):
        report = replicate_backups()
    for backup_id, source, dest in report.copied:
        console.print(f"copied {backup_id} from {source} to {dest}")
    console.print(f"[green]all tiers hold every backup[/green] ({len(report.copied)} copied).")


@app.command("prune")
def prune_cmd(
    tier: Annotated[
        TierChoice, typer.Option("--tier", help="Which tier(s) to prune.")
    ] = TierChoice.ALL,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan with its reasons; delete nothing.")
    ] = False,
) -> None:
    """Apply retention: delete what no rule keeps (see the README), never a needed backup."""
    settings = load_settings()
    from flows.prune_backups import prune_backups

    names = None if tier is TierChoice.ALL else [tier.value]
    now = datetime.now(UTC)
    with _flow_context(settings, show_progress=False):
        results = prune_backups(tiers=names, dry_run=dry_run)  # type: ignore[arg-type]
    for result in results:
        table = Table(title=f"Retention in {result.tier}" + (" (dry run)" if dry_run else ""))
        for column in ("id", "kind", "restore point", "age", "decision", "reason"):
            table.add_column(column)
        for decision in result.plan.decisions:
            backup = decision.backup
            age = now - backup.restore_point
            table.add_row(
                backup.id,
                backup.kind.value,
                iso(backup.restore_point),
                f"{age.total_seconds() / 86400:.1f} d",
                "[green]keep[/green]" if decision.keep else "[red]delete[/red]",
                decision.reason,
            )
        console.print(table)
        if result.report is not None:
            console.print(
                f"{result.tier}: deleted {len(result.report.deleted)}, still locked "
                f"{len(result.report.locked)}."
            )
    if dry_run:
        console.print("dry run: nothing was deleted.")


@dr_app.command("restore-system")
def dr_restore_system_cmd(
    source: Annotated[
        SourceChoice, typer.Option("--from", help="The tier to rebuild from.")
    ] = SourceChoice.DR,
    at: Annotated[str | None, typer.Option("--at", help="Target time, ISO-8601.")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a database that already exists here.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
) -> None:
    """Restore the database, configuration and uploads onto this host, then reload the app."""
    settings = load_settings()
    if source is SourceChoice.AUTO:
        raise typer.BadParameter("name one tier with --from (primary, secondary or dr).")
    target_time = _parse_time(at, settings.timezone) if at else None
    from flows.restore_system import restore_system

    with _flow_context(settings, show_progress=not dry_run):
        report = restore_system(  # type: ignore[call-overload]
            source=source.value,
            target_time=target_time,
            replace=replace,
            dry_run=dry_run,
        )
    table = Table(title="Whole-system restore" + (" (dry run: nothing changed)" if dry_run else ""))
    for column in ("step", "seconds", "result", "restore_point", "rto_so_far_s", "rpo_s", "detail"):
        table.add_column(column.replace("_", " "))
    for step in report.steps:
        table.add_row(
            *(
                str(step[c])
                for c in (
                    "step",
                    "seconds",
                    "result",
                    "restore_point",
                    "rto_so_far_s",
                    "rpo_s",
                    "detail",
                )
            )
        )
    console.print(table)


@dr_app.command("failover")
def dr_failover_cmd(
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a database that already exists here.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Pre-flight and plan only: no restore, no DNS.")
    ] = False,
) -> None:
    """On the standby: pre-flight, restore everything from DR, switch DNS, probe the app."""
    settings = load_settings()
    from flows.failover import failover

    with _flow_context(settings, show_progress=not dry_run):
        report = failover(replace=replace, dry_run=dry_run)
    table = Table(title="Failover" + (" (dry run: nothing changed)" if dry_run else ""))
    for column in ("time", "step", "seconds", "result", "detail"):
        table.add_column(column)
    for step in report.steps:
        table.add_row(*(str(step[c]) for c in ("time", "step", "seconds", "result", "detail")))
    console.print(table)


@config_app.command("show")
def config_show_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings; secrets are masked."""
    settings = load_settings()
    data = settings.model_dump(mode="json")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="Effective settings (secrets masked)")
    table.add_column("setting")
    table.add_column("value")
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    console.print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Folder for the demo's database and backups.")
    ] = Path(".demo"),
) -> None:
    """Run the end-to-end demo on a sample Gantt-workload SQLite database (no services)."""
    from backupflow.demo import run_demo

    _quiet_prefect_tracebacks(None if _debug() else logging.WARNING)
    ok = run_demo(workdir.resolve(), console)
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: run the app and turn errors into one sentence and an exit code."""
    try:
        code = app(standalone_mode=False)
    except BackupflowError as exc:
        if _debug():
            raise
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        errors.print("interrupted.")
        sys.exit(130)
    except Exception as exc:
        if _debug():
            raise
        errors.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} "
            "(run again with BACKUPFLOW_DEBUG=1 to see where)",
            highlight=False,
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
