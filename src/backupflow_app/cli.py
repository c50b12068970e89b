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
126   ``wal-fetch`` only: anything but "written" or "not archived" (damaged, no tier
      answered, bad settings or usage), so that PostgreSQL aborts recovery instead of
      ending it early
130   interrupted (Ctrl-C)
====  =====================================================================================

``wal-push`` and ``wal-fetch`` (PostgreSQL's ``archive_command`` and ``restore_command``) are
dispatched before Typer (:mod:`backupflow_app.cli_wal`, which has their whole exit-code
table): ``backupflow --help`` names them only in its epilog.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from backupflow.errors import BackupflowError, ConfigError, ParameterError
from backupflow.models import BackupKind, Category
from backupflow.parameters import use_vocabulary
from backupflow.reporting import local_and_utc, manifest_row
from backupflow.storage import TIER_NAMES, TierName, open_tiers
from backupflow.tiers import locate
from backupflow_app.cli_common import (
    FileSetChoice,
    TierChoice,
    cli_settings,
    console,
    debug,
    errors,
    flow_context,
    prefect_unavailable,
    quiet_prefect_tracebacks,
    run_flow,
)
from backupflow_app.cli_fleet import fleet_app, worker_cmd
from backupflow_app.cli_keygen import key_init_cmd, key_resign_cmd, key_rotate_cmd
from backupflow_app.cli_keys import key_app
from backupflow_app.cli_options import one_line
from backupflow_app.cli_repository import adopt_cmd, prune_cmd, replicate_cmd, verify_cmd
from backupflow_app.cli_restore import dr_app, restore_app
from backupflow_app.cli_wal import WAL_COMMANDS, run_wal

__all__ = ["EXIT_CODES", "app", "main", "run"]

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
    epilog="Exit codes: "
    + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items())
    + ". PostgreSQL runs two more commands, not listed above: wal-push (archive_command "
    "'backupflow wal-push %p'; exit 0 stored, 1 not stored, 2 usage, 3 configuration) and "
    "wal-fetch (a restore's restore_command; exit 0 written, 1 not archived, 126 anything "
    "else, so recovery aborts); see 'backupflow wal-push --help' and 'backupflow wal-fetch "
    "--help'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backup_app = typer.Typer(help="Take a backup now.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(backup_app, name="backup")
app.add_typer(restore_app, name="restore")
app.add_typer(config_app, name="config")
app.add_typer(dr_app, name="dr")
app.add_typer(key_app, name="key")
app.add_typer(fleet_app, name="fleet")
#: Defined on key_app in their own module; imported here so that they are registered.
KEY_COMMANDS = (key_init_cmd, key_rotate_cmd, key_resign_cmd)


@backup_app.command("database")
def backup_database_cmd(
    kind: Annotated[
        BackupKind, typer.Option("--type", "-t", help="full, diff (differential) or log.")
    ] = BackupKind.FULL,
) -> None:
    """Back up the configured database now (runs the backup-database flow)."""
    settings = cli_settings()
    from flows.backup_database import backup_database

    with flow_context(settings, show_progress=True):
        manifests = run_flow(backup_database, settings, kind=kind)
    if not manifests:  # a differential on an engine that has none (PostgreSQL)
        from backupflow.backup_run import skip_reason
        from backupflow.engines import open_engine

        reason = skip_reason(open_engine(settings), kind) or "no backup was taken"
        console.print(f"[yellow]{kind.value} backup skipped:[/yellow] {reason}.")
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
    settings = cli_settings()
    from flows.backup_files import backup_files

    with flow_context(settings, show_progress=True):
        manifest = run_flow(backup_files, settings, file_set=file_set.value)
    position = manifest.position
    console.print(
        f"[green]{file_set.value} backup {manifest.id}[/green]: {position.get('files')} files, "
        f"{position.get('bytes', 0):,} bytes; {manifest.stored_bytes:,} bytes referenced in "
        "each tier."
    )
    for note in manifest.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@app.command("catalog")
def catalog_cmd(
    tier: Annotated[
        TierChoice, typer.Option("--tier", help="Which tier(s) to list.")
    ] = TierChoice.ALL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the backups of the configured database and the tiers that hold each."""
    settings = cli_settings(for_flows=False)
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
    states = [
        {"tier": s.tier, "state": s.state, "cause": s.cause} for s in holdings.states.values()
    ]
    if as_json:
        print(json.dumps({"backups": rows, "tiers": states, "problems": problems}, indent=2))
    else:
        table = Table(title=f"Backups of {settings.database.name}")
        for column in rows[0] if rows else ("id", "tiers"):
            # Ids, times and sizes are copied from here: never cut or wrapped.
            longest = max((len(str(row[column])) + 2 for row in rows), default=0)
            keep = column in ("id", "parent", "restore_point")
            table.add_column(
                column.replace("_", " "),
                no_wrap=keep,
                min_width=min(longest, 64) if keep else None,
            )
        for row in rows:
            table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
        console.print(table)
        console.print(
            "tiers: " + ", ".join(f"{s['tier']} {s['state']}" for s in states), highlight=False
        )
        if not rows and not holdings.unread:
            console.print(f"no backups of {settings.database.name}: every tier answered empty.")
    for problem in problems:
        errors.print(f"[red]error:[/red] {problem}")
    if problems:
        raise typer.Exit(1)


app.command("replicate")(replicate_cmd)
app.command("prune")(prune_cmd)
app.command("adopt")(adopt_cmd)
app.command("verify")(verify_cmd)
app.command("worker")(worker_cmd)


@app.command("runs")
def runs_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="How many runs.")] = 20,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only runs that failed, crashed or were cancelled.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The latest backupflow runs on the Prefect API, newest first, each with why it ended
    as it did (the state's message, in one line)."""
    settings = cli_settings(for_flows=False)
    reason = prefect_unavailable(settings.prefect_wait_seconds)
    if reason is not None:
        raise ConfigError(f"{reason}; the backup log ({settings.backup_log}) has every run.")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    bad = [StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    wanted = (
        FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=bad)))
        if failed
        else None
    )
    import httpx

    try:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                flow_run_filter=wanted, sort=FlowRunSort.START_TIME_DESC, limit=limit
            )
    except (httpx.HTTPError, RuntimeError) as exc:
        raise ConfigError(
            f"the Prefect API stopped answering ({type(exc).__name__}); the backup log "
            f"({settings.backup_log}) has every run."
        ) from None
    rows = []
    for run in found:
        state = run.state
        started = run.start_time or run.expected_start_time
        rows.append(
            {
                "started": local_and_utc(started, settings.timezone) if started else "-",
                "run": run.name,
                "state": state.name if state else "-",
                "why": one_line((state.message or "") if state else "")[:300],
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="backupflow runs, newest first")
    for column in ("started", "run", "state", "why"):
        table.add_column(column, no_wrap=column != "why", overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@config_app.command("show")
def config_show_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings; secrets are masked."""
    settings = cli_settings(for_flows=False)
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

    quiet_prefect_tracebacks(None if debug() else logging.WARNING)
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
    if argv[:1] and argv[0] in WAL_COMMANDS:  # PostgreSQL's archive and restore commands
        return run_wal(argv)
    try:
        with use_vocabulary("cli"):  # messages name --replace, not replace=true
            code = app(args=argv, prog_name="backupflow", standalone_mode=False)
    except BackupflowError as exc:
        if debug():
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
        if debug():
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(
            f"{exc.strerror or type(exc).__name__}{where}; check that path and its permissions.",
            1,
        )
    except Exception as exc:
        if debug():
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
