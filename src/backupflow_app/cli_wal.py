"""``backupflow wal-push`` and ``backupflow wal-fetch``: the commands PostgreSQL runs.

They are dispatched before the rest of the command line (no Typer, no Prefect): the
server runs ``wal-push`` once per 16 MiB segment and ``wal-fetch`` once per file a restore
replays, so start-up time is archive latency.

==========  ====  ==========================================================================
command     code  meaning
==========  ====  ==========================================================================
wal-push    0     stored durably (or already stored with the same content)
wal-push    1     not stored: PostgreSQL keeps the file and retries (one sentence says why)
wal-push    2     usage: a bad option, or a path that is no WAL file
wal-push    3     configuration: a bad ``BACKUPFLOW_*`` setting or a missing key
wal-fetch   0     written to the destination, verified
wal-fetch   1     not archived: PostgreSQL probes names that do not exist, this is normal
wal-fetch   126   anything else (damaged on every tier holding it, no tier answered, bad
                  settings, bad usage): PostgreSQL aborts recovery instead of ending it
                  early at the wrong point
==========  ====  ==========================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["WAL_COMMANDS", "run_wal"]

WAL_COMMANDS = ("wal-push", "wal-fetch", "wal-archiver")
#: What PostgreSQL must read as "abort recovery" (above 125).
FETCH_ABORT = 126


_ABOUT = {
    "wal-push": "Archive one finished WAL file into the first enabled tier (PostgreSQL's "
    "archive_command: 'backupflow wal-push %p'). Exit 0 once it is stored durably and "
    "recorded (or already was, with the same content); non-zero otherwise, and PostgreSQL "
    "keeps the file and retries.",
    "wal-archiver": "Run the resident WAL archiver of the cluster in --data-dir in the "
    "foreground (wal-push starts it on demand; it exits when idle).",
    "wal-fetch": "Write one archived WAL file, verified and decrypted, to DEST (a restore's "
    "restore_command: 'backupflow wal-fetch --plan FILE %f %p'). Exit 0 written, 1 not "
    "archived, 126 anything else (damaged, no tier answered, bad settings): PostgreSQL then "
    "aborts recovery instead of ending it early.",
}


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{message}; see 'backupflow {self.prog.split()[-1]} --help'.")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"backupflow {command}", description=_ABOUT[command])
    parser.add_argument("--database", help="The series name (default: BACKUPFLOW_DATABASE__NAME).")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="The cluster's data folder (default: the current folder, where PostgreSQL runs it).",
    )
    if command == "wal-push":
        parser.add_argument("path", type=Path, help="%%p: the WAL file to archive.")
    elif command == "wal-archiver":
        pass
    else:
        parser.add_argument("--plan", type=Path, help="A restore's fetch plan (JSON).")
        parser.add_argument("name", help="%%f: the WAL file name PostgreSQL asks for.")
        parser.add_argument("dest", type=Path, help="%%p: where to write it.")
    return parser


def _say(message: str) -> None:
    text = " ".join(message.split())
    sys.stderr.write(f"error: {text}\n")


def _push(args: argparse.Namespace) -> int:
    from backupflow.codecs import codec_for
    from backupflow.config import load_settings
    from backupflow.engines.postgres.archive import push_wal
    from backupflow.errors import ConfigError
    from backupflow.storage import open_tiers

    settings = load_settings()
    tiers = open_tiers(settings)
    if not tiers:
        raise ConfigError("every tier is disabled, so wal-push has nowhere to archive.")
    push_wal(
        tiers[0],
        args.database or settings.database.name,
        args.path,
        data_dir=(args.data_dir or Path.cwd()),
        codec=codec_for(settings.pipeline),
        warn=lambda text: sys.stderr.write(f"warning: {text}\n"),
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from backupflow.codecs import codec_for
    from backupflow.config import load_settings
    from backupflow.engines.postgres.archiver import Archiver, state_dir
    from backupflow.errors import ConfigError
    from backupflow.storage import open_tiers

    settings = load_settings()
    tiers = open_tiers(settings)
    if not tiers:
        raise ConfigError("every tier is disabled, so the archiver has nowhere to archive.")
    data_dir = (args.data_dir or Path.cwd()).absolute()
    return Archiver(
        tiers,
        args.database or settings.database.name,
        data_dir,
        state_dir(data_dir),
        codec_for(settings.pipeline),
        idle_seconds=settings.database.archiver_idle_seconds,
    ).serve()


def _fetch(args: argparse.Namespace) -> int:
    from backupflow.config import load_settings
    from backupflow.engines.postgres.archive import (
        append_report,
        check_wal_name,
        fetch_wal,
        planned_object,
        read_plan,
        system_identifier_of,
    )
    from backupflow.storage import open_tiers

    check_wal_name(args.name)
    settings = load_settings()
    if args.plan is not None:
        plan = read_plan(args.plan)
        tiers = open_tiers(settings, plan.tiers)
        outcome = fetch_wal(
            tiers,
            plan.database,
            int(plan.system_identifier),
            args.name,
            args.dest,
            planned=planned_object(plan, args.name),
            lookup=plan.loose,
        )
        if plan.report is not None:
            append_report(plan.report, outcome)
    else:
        sysid = system_identifier_of(args.data_dir or Path.cwd())
        outcome = fetch_wal(
            open_tiers(settings),
            args.database or settings.database.name,
            sysid,
            args.name,
            args.dest,
        )
    if outcome.outcome == "fetched":
        if outcome.error:  # served, but another tier's copy failed first: said
            _say(f"wal-fetch {args.name}: served from the {outcome.tier} tier ({outcome.error})")
        return 0
    if outcome.outcome == "missing":
        return 1
    _say(f"wal-fetch {args.name}: {outcome.outcome}: {outcome.error}")
    return FETCH_ABORT


def run_wal(argv: Sequence[str]) -> int:
    """Run ``wal-push`` / ``wal-fetch`` on ``argv`` (the command first); return the exit code."""
    command, rest = argv[0], list(argv[1:])
    fetch = command == "wal-fetch"
    debug = os.environ.get("BACKUPFLOW_DEBUG", "") not in ("", "0", "false")
    try:
        args = _parser(command).parse_args(rest)
        if command == "wal-archiver":
            return _serve(args)
        return _fetch(args) if fetch else _push(args)
    except SystemExit as exc:  # --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return FETCH_ABORT if fetch and code not in (0, 1) else code
    except _Usage as exc:
        _say(str(exc))
        return FETCH_ABORT if fetch else 2
    except KeyboardInterrupt:
        _say("interrupted.")
        return FETCH_ABORT if fetch else 130
    except Exception as exc:
        if debug:
            raise
        from backupflow.errors import BackupflowError

        if isinstance(exc, BackupflowError):
            _say(str(exc))
            return FETCH_ABORT if fetch else exc.exit_code
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            _say(
                f"{exc.strerror or type(exc).__name__}{where}; check that path and its permissions."
            )
            return FETCH_ABORT if fetch else 1
        _say(
            f"internal error: {type(exc).__name__}: {exc} (run again with BACKUPFLOW_DEBUG=1 "
            "to see where, and report it)"
        )
        return FETCH_ABORT if fetch else 70
