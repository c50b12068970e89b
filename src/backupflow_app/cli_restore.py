"""``backupflow restore files | database`` and ``backupflow dr restore-system | failover``:
the commands that put backups back."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from backupflow.config import Settings
from backupflow.errors import ParameterError
from backupflow.reporting import iso, plan_rows
from backupflow_app.cli_common import (
    FileSetChoice,
    SourceChoice,
    cli_settings,
    console,
    errors,
    flow_context,
    pick_target_time,
    run_flow,
)
from backupflow_app.cli_options import (
    check_database_option,
    check_undo_folder,
    parse_target_time,
    restore_path,
)

__all__ = ["dr_app", "restore_app"]

restore_app = typer.Typer(help="Restore from the backups.", no_args_is_help=True)
dr_app = typer.Typer(help="Disaster recovery: rebuild this host, or fail over to it.")


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
    accept_earlier: Annotated[
        bool,
        typer.Option(
            "--accept-earlier",
            help="When the backups end before --at, restore the latest point it reaches "
            "instead of failing (the report names that point).",
        ),
    ] = False,
) -> None:
    """Restore a file set (config, logs, uploads), verified file by file."""
    settings = cli_settings()
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
    target_time = pick_target_time(at, latest, settings)
    target = restore_path(into, settings) if into is not None else None
    from flows.restore_files import restore_files

    with flow_context(settings, show_progress=not dry_run):
        report = run_flow(
            restore_files,
            settings,
            file_set=file_set.value,
            target_time=target_time,
            into=str(target) if target is not None else None,
            in_place=in_place,
            dry_run=dry_run,
            source=source.value,
            run_post_restore_hook=not no_hook,
            accept_earlier=accept_earlier,
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
        typer.Option(
            "--database",
            help="Which database (default: the configured one, BACKUPFLOW_DATABASE__NAME).",
        ),
    ] = None,
    accept_earlier: Annotated[
        bool,
        typer.Option(
            "--accept-earlier",
            help="When the archive ends before --at, restore the latest point it reaches "
            "instead of failing (the report names that point).",
        ),
    ] = False,
) -> None:
    """Restore the configured database to a point in time (--at) or its latest state."""
    settings = cli_settings()
    target_time = pick_target_time(at, latest, settings)
    if database is not None:
        database = check_database_option(database, "--database")
    target: str | None = None
    if into is not None:
        if target_is_a_path(settings):
            target = str(restore_path(into, settings))
        else:
            target = check_database_option(into, "--into")
    from flows.restore_database import restore_database

    with flow_context(settings, show_progress=not dry_run):
        report = run_flow(
            restore_database,
            settings,
            target_time=target_time,
            into=target,
            replace=replace,
            dry_run=dry_run,
            source=source.value,
            database=database,
            accept_earlier=accept_earlier,
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
    side = [a for a in outcome.kept_aside if str(a).endswith(("-wal", "-shm", "-journal"))]
    for aside in outcome.kept_aside:
        if aside not in side:
            console.print(f"the replaced database was kept as {aside}")
    if side:
        console.print(f"with its side files {', '.join(str(a) for a in side)}")


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


def target_is_a_path(settings: Settings) -> bool:
    """Whether the database engine restores into a path (SQLite) rather than a name."""
    from backupflow.engines import open_engine

    return open_engine(settings).live_target().is_absolute()


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
    settings = cli_settings()
    target_time = parse_target_time(at, settings.timezone) if at is not None else None
    from flows.restore_system import restore_system

    with flow_context(settings, show_progress=not dry_run):
        report = run_flow(
            restore_system,
            settings,
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
    settings = cli_settings()
    from flows.failover import failover

    with flow_context(settings, show_progress=not dry_run):
        report = run_flow(failover, settings, replace=replace, dry_run=dry_run)
    table = Table(title="Failover" + (" (dry run: nothing changed)" if dry_run else ""))
    for column in ("time", "step", "seconds", "result", "detail"):
        table.add_column(column)
    for step in report.steps:
        table.add_row(*(str(step[c]) for c in ("time", "step", "seconds", "result", "detail")))
    console.print(table)
