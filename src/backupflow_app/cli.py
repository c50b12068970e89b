"""The ``backupflow`` command line.

Every user mistake ends with one line on standard error (``error: <one sentence>``) and the
exit code of its kind; tracebacks are shown only with ``BACKUPFLOW_DEBUG=1``.

====  =====================================================================================
code  meaning
====  =====================================================================================
0     done
1     the operation failed: storage, integrity, catalog, restore plan or target, an
      operating-system error (each with one sentence); ``catalog`` found unreadable backups
2     usage: unknown command or option, a missing or bad option value, options that
      conflict, a bad ``--at`` time, a ``--into``/``--undo`` path that is not allowed
3     configuration: a bad ``BACKUPFLOW_*`` variable or ``BACKUPFLOW_CONFIG`` file
70    internal error (a bug): run again with ``BACKUPFLOW_DEBUG=1`` and report it
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from backupflow.config import CONFIG_ENV_VAR, Settings, load_settings, use_settings
from backupflow.errors import BackupflowError, ConfigError, ParameterError
from backupflow.models import BackupKind, Category
from backupflow.progress import report_progress
from backupflow.reporting import artifact_key, iso, manifest_row, plan_rows
from backupflow.storage import TIER_NAMES, TierName, open_tiers
from backupflow.tiers import locate
from backupflow_app.cli_keys import key_app
from backupflow_app.cli_options import (
    check_config_file,
    check_database_option,
    check_places,
    check_undo_folder,
    one_line,
    parse_target_time,
    restore_path,
)

__all__ = ["EXIT_CODES", "app", "main", "run"]

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


EXIT_CODES = {
    0: "done",
    1: "the operation failed",
    2: "usage error (command, option or value)",
    3: "configuration error (BACKUPFLOW_* or BACKUPFLOW_CONFIG)",
    70: "internal error (run again with BACKUPFLOW_DEBUG=1 and report it)",
    130: "interrupted",
}

app = typer.Typer(
    name="backupflow",
    help="Backups and restores of the Gantt workload API, run as Prefect flows.",
    epilog="Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + ".",
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
app.add_typer(key_app, name="key")


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


def _settings(*, for_flows: bool = True) -> Settings:
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


def _target_time(at: str | None, latest: bool, settings: Settings) -> datetime | None:
    """``--at`` or ``--latest``, exactly one of them."""
    if at is not None and latest:
        raise ParameterError("give --at TIME or --latest, not both.")
    if at is None and not latest:
        raise ParameterError("give --at TIME (ISO-8601) or --latest to say what to restore.")
    return None if at is None else parse_target_time(at, settings.timezone)


def _target_is_a_path(settings: Settings) -> bool:
    """Whether the database engine restores into a path (SQLite) rather than a name."""
    from backupflow.engines import open_engine

    return open_engine(settings).live_target().is_absolute()


@backup_app.command("database")
def backup_database_cmd(
    kind: Annotated[
        BackupKind, typer.Option("--type", "-t", help="full, diff (differential) or log.")
    ] = BackupKind.FULL,
) -> None:
    """Back up the configured database now (runs the backup-database flow)."""
    settings = _settings()
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
    settings = _settings()
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
        str | None,
        typer.Option(
            "--into",
            help="An empty or new folder to restore into (relative: to the current folder).",
        ),
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
        str | None,
        typer.Option("--undo", help="Undo an in-place restore from the folder it kept aside."),
    ] = None,
) -> None:
    """Restore a file set (config, logs, uploads), verified file by file."""
    settings = _settings()
    chosen = getattr(settings.files, file_set.value)
    if undo is not None:
        given = [
            flag
            for flag, used in (
                ("--at", at is not None),
                ("--latest", latest),
                ("--into", into is not None),
                ("--in-place", in_place),
                ("--dry-run", dry_run),
                ("--from", source is not SourceChoice.AUTO),
            )
            if used
        ]
        if given:
            raise ParameterError(
                f"--undo cannot be combined with {', '.join(given)}; give --set and --undo only."
            )
        from backupflow.filesets.undo import UNDO_FILE, undo_in_place

        folder = check_undo_folder(undo, chosen.root, UNDO_FILE)
        count = undo_in_place(folder, chosen.root)
        console.print(f"[green]undone:[/green] {count} entries of {chosen.root} put back.")
        return
    if in_place and into is not None:
        raise ParameterError("give --into DIR or --in-place, not both.")
    target_time = _target_time(at, latest, settings)
    target = restore_path(into, settings) if into is not None else None
    from flows.restore_files import restore_files

    with _flow_context(settings, show_progress=not dry_run):
        report = restore_files(
            file_set=file_set.value,
            target_time=target_time,
            into=str(target) if target is not None else None,
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
        str | None,
        typer.Option(
            "--into",
            help="Write the restored database to this path (relative: to the current folder; "
            "SQL Server: a database name).",
        ),
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
    settings = _settings()
    target_time = _target_time(at, latest, settings)
    if database is not None:
        database = check_database_option(database, "--database")
    target: str | None = None
    if into is not None:
        if _target_is_a_path(settings):
            target = str(restore_path(into, settings))
        else:
            target = check_database_option(into, "--into")
    from flows.restore_database import restore_database

    with _flow_context(settings, show_progress=not dry_run):
        report = restore_database(
            target_time=target_time,
            into=target,
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
    settings = _settings(for_flows=False)
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
    settings = _settings()
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
    settings = _settings()
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


@app.command("adopt")
def adopt_cmd(
    file_set: Annotated[
        FileSetChoice | None,
        typer.Option("--set", "-s", help="Adopt a file set's backups instead of the database's."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="Which database (default: the configured DB_NAME)."),
    ] = None,
) -> None:
    """Sign the unsigned backups made before keys existed, once every object's SHA-256 has
    been read and checked (one log line per adopted backup)."""
    if file_set is not None and database is not None:
        raise ParameterError("give --set or --database, not both.")
    if database is not None:
        database = check_database_option(database, "--database")
    settings = _settings()
    from flows.adopt_backups import adopt_backups

    category = file_set.value if file_set is not None else Category.DATABASE.value
    with _flow_context(settings, show_progress=True):
        reports = adopt_backups(category=category, name=database)
    problems = 0
    for report in reports:
        for backup_id in report.adopted:
            console.print(f"[green]adopted[/green] {backup_id} (every object's SHA-256 checked)")
        for skipped in report.skipped:
            console.print(f"skipped {skipped}")
        for problem in report.problems:
            errors.print(f"[red]not adopted:[/red] {escape(one_line(problem))}", highlight=False)
        problems += len(report.problems)
    adopted = sum(len(r.adopted) for r in reports)
    console.print(f"{adopted} backups adopted, {problems} refused.")
    if problems:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    read_data: Annotated[
        float | None,
        typer.Option(
            "--read-data",
            min=0.0,
            max=100.0,
            help="Percent of the stored bytes to read back, decrypt and hash (a rotating "
            "sample; default: enough to read every byte once a month).",
        ),
    ] = None,
) -> None:
    """Check every tier: manifests' signatures, objects' presence and size, chains, tiers'
    agreement, a sample of full reads; exit 1 on any finding."""
    settings = _settings()
    from backupflow.verify import VerificationFailedError
    from flows.verify_backups import verify_backups

    labels = [settings.database.name, "config", "logs", "uploads"]
    try:
        with _flow_context(settings, show_progress=False):
            report = verify_backups(read_data_percent=read_data)
    except VerificationFailedError:
        # The run failed on its findings: show the tables it recorded, then its sentence.
        for label in labels:
            _print_verify_table(label, _verify_artifact(label))
        raise
    for label in labels:
        _print_verify_table(label, report.table(label))
    console.print(
        f"[green]every tier verified[/green]: {report.requests:,} requests, "
        f"{report.bytes_read:,} bytes read."
    )


def _verify_artifact(label: str) -> list[dict[str, Any]]:
    """The rows of the latest ``verify-<series>`` table artifact (empty when unreadable)."""
    from prefect.artifacts import Artifact

    try:
        artifact: Any = Artifact.get(artifact_key("verify", label))
        rows = json.loads(str(artifact.data)) if artifact is not None else []
    except Exception:
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def _print_verify_table(label: str, rows: list[dict[str, Any]]) -> None:
    """One series: a table of what each tier holds, then each finding as one whole line
    (keys are never cut to the terminal's width)."""
    if not rows:
        return
    table = Table(title=f"verify: {label}")
    for column in ("tier", "kind", "detail"):
        table.add_column(column, overflow="fold")
    findings = []
    for row in rows:
        tier, kind, detail = (one_line(str(row.get(c, ""))) for c in ("tier", "kind", "detail"))
        if kind == "summary":
            table.add_row(escape(tier), escape(kind), escape(detail))
        else:
            findings.append(f"finding: {tier} {kind}: {detail}")
    console.print(table)
    for line in findings:
        print(line)


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
    if source is SourceChoice.AUTO:
        raise ParameterError("name one tier with --from (primary, secondary or dr), not auto.")
    settings = _settings()
    target_time = parse_target_time(at, settings.timezone) if at is not None else None
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
    settings = _settings()
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
    settings = _settings(for_flows=False)
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
        str, typer.Option("--workdir", help="Folder for the demo's database and backups.")
    ] = ".demo",
) -> None:
    """Run the end-to-end demo on a sample Gantt-workload SQLite database (no services)."""
    if not workdir.strip():
        raise ParameterError("--workdir is empty (an unset shell variable?); give a folder.")
    from backupflow_app.demo import run_demo

    _quiet_prefect_tracebacks(None if _debug() else logging.WARNING)
    ok = run_demo(Path(workdir).resolve(), console)
    if not ok:
        raise typer.Exit(1)


def _fail(message: str, code: int) -> int:
    """Print ``message`` as the one line of an error; return ``code``."""
    errors.print(f"[red]error:[/red] {escape(one_line(message))}", highlight=False)
    return code


def _usage_message(exc: typer.TyperException) -> str:
    """Click's message for a usage error, with where to look for help, as one sentence."""
    message = exc.format_message().replace("Value error, ", "").strip().rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "backupflow"
    return f"{message}; see '{command} --help'."


def run(args: Sequence[str] | None = None) -> int:
    """Run the command line on ``args`` (default: ``sys.argv[1:]``) and return its exit code;
    every error is one line on standard error (codes in the module docstring)."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        code = app(args=argv, prog_name="backupflow", standalone_mode=False)
    except BackupflowError as exc:
        if _debug():
            raise
        return _fail(str(exc), exc.exit_code)
    except NoArgsIsHelpError as exc:
        # Typer has printed the help (the list of commands) on standard output.
        command = exc.ctx.command_path if exc.ctx is not None else "backupflow"
        return _fail(f"'{command}' needs a command; they are listed above.", exc.exit_code)
    except UsageError as exc:
        return _fail(_usage_message(exc), 2)
    except typer.TyperException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted.", 130)
    except OSError as exc:
        if _debug():
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(
            f"{exc.strerror or type(exc).__name__}{where}; check that path and its permissions.",
            1,
        )
    except Exception as exc:
        if _debug():
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} "
            "(run again with BACKUPFLOW_DEBUG=1 to see where, and report it)",
            70,
        )
    if code == 130:  # Typer turned Ctrl-C into this code
        return _fail("interrupted.", 130)
    return code if isinstance(code, int) else 0


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the command line and exit with its code."""
    # The temporary Prefect server a command starts (no PREFECT_API_URL) must not try to send
    # telemetry: this network is closed, and the failure prints an ERROR line.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
