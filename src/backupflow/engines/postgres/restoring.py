"""How a restored copy recovers: its recovery settings, its fetch plan, waiting for it, and
what a copy that stopped early means.

What each restore sets (on the copy's command line, never in its configuration):

* a target covered by a log of the chain (the last log's restore point is at or after it):
  ``recovery_target_time = <target, UTC>`` (inclusive: rows committed at that second are
  in).  A log backup commits a marker transaction *after* reading its restore point, so
  every log's WAL holds a commit later than any target it covers and recovery stops there
  instead of running out of WAL;
* a target after the last log (or after a base with no log): ``recovery_target_time`` over
  a loose plan (every authenticated file archived since); if the archive ends first,
  PostgreSQL fails and :func:`copy_failed` names the last transaction it replayed
  (:class:`~backupflow.errors.TargetNotReachedError`);
* a base backup's own restore point (or earlier): ``recovery_target = immediate``;
* the latest point (no target): no ``recovery_target_*``; the fetch plan is ``loose``, so
  every segment recorded in the tiers is replayed, and recovery ends where the archive does;
  ``recovery_target_timeline`` is the timeline of the chain's last backup (a history file
  another restored copy pushed must not lead recovery onto its fork).

Always ``recovery_target_action = promote`` and (but for the latest point)
``recovery_target_timeline = latest``, a
``recovery.signal`` file, ``archive_mode = on`` with an empty ``archive_command`` (the copy
never pushes, but keeps its new timeline's files ready for when it is installed), and
``restore_command = <pg_backupflow_command> wal-fetch --plan <plan> %f %p``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from backupflow.engines.postgres.layout import position_int, position_str
from backupflow.engines.postgres.server import Copy, last_error_line
from backupflow.engines.postgres.walnames import parse_wal_path
from backupflow.errors import ChainGapError, EngineError, IntegrityError, TargetNotReachedError
from backupflow.models import BackupKind, Manifest, StoredObject
from backupflow.vocabulary import flag

__all__ = [
    "Recovery",
    "check_report",
    "copy_failed",
    "plan_files",
    "recovery_for",
    "restore_command",
    "row_counts",
    "wait",
]

PLAN_FILE = "fetch-plan.json"
REPORT_FILE = "fetch-report.jsonl"


@dataclass(frozen=True)
class Recovery:
    """What the copy is told, and how the report describes it."""

    settings: dict[str, str]
    loose: bool
    describe: str


#: Set on every copy before its own target: recovery settings the backed-up configuration
#: may carry (left from a manual recovery, harmless on the live cluster without
#: recovery.signal) would otherwise stop, delay or misdirect the copy, run commands, archive
#: through a library, or overwrite the live cluster's pid file.
RECOVERY_RESETS: dict[str, str] = {
    "recovery_target": "",
    "recovery_target_time": "",
    "recovery_target_xid": "",
    "recovery_target_name": "",
    "recovery_target_lsn": "",
    "recovery_target_inclusive": "on",
    "recovery_min_apply_delay": "0",
    "recovery_end_command": "",
    "archive_cleanup_command": "",
    "archive_library": "",
    "external_pid_file": "",
}


def recovery_for(chain: Sequence[Manifest], until: datetime | None) -> Recovery:
    """The recovery target for ``chain`` (base first, then logs) and the requested time."""
    logs = [m for m in chain if m.kind is BackupKind.LOG]
    if until is None:
        # Loose: any recorded name is served, so only the chain's own timeline is followed
        # (a history file pushed by some other restored copy must not lead recovery away).
        timeline = str(position_int(chain[-1], "timeline"))
        return Recovery(
            {"recovery_target_timeline": timeline},
            True,
            f"recovery to the end of the archived WAL of timeline {timeline} (latest)",
        )
    if not logs and until <= chain[0].restore_point:
        return Recovery({"recovery_target": "immediate"}, False, "recovery to the base backup")
    moment = until.astimezone(UTC).isoformat(sep=" ")
    if logs and until <= logs[-1].restore_point:
        return Recovery(
            {"recovery_target_time": moment}, False, f"recovery to {moment} (recovery_target_time)"
        )
    # After the last backup: every authenticated segment archived since is served (loose),
    # on the chain's own timeline; PostgreSQL fails if the archive ends before the target.
    return Recovery(
        {"recovery_target_time": moment},
        True,
        f"recovery to {moment} (recovery_target_time) through WAL archived after the last backup",
    )


def plan_files(chain: Sequence[Manifest], sysid: int) -> dict[str, StoredObject]:
    """Every archived WAL file the chain's logs list: name -> its stored object."""
    files: dict[str, StoredObject] = {}
    for manifest in chain:
        for obj in manifest.objects:
            if not obj.role.startswith("wal:"):
                continue
            try:
                found, name = parse_wal_path(obj.role[4:])
            except ValueError:
                continue
            if found == sysid:
                files[name.name] = obj
    return files


def system_identifier(chain: Sequence[Manifest]) -> int:
    text = position_str(chain[0], "system_identifier")
    if not text.isdigit():
        raise EngineError(f"backup {chain[0].id} records an unreadable system identifier.")
    return int(text)


def fetch_command(command: str, plan: Path) -> str:
    """``<command> wal-fetch --plan <plan>``, every part shell-quoted (for a script)."""
    parts = [*shlex.split(command), "wal-fetch", "--plan", str(plan)]
    return " ".join(shlex.quote(p) for p in parts)


def restore_command(command: str, plan: Path) -> str:
    """``<command> wal-fetch --plan <plan> %f %p``, every part shell-quoted, ``%`` doubled."""
    return f"{fetch_command(command, plan).replace('%', '%%')} %f %p"


def read_report(path: Path) -> list[dict[str, object]]:
    """The fetch report's lines (its last 32 MiB, never through a link: the scratch folder
    belongs to the cluster's OS user)."""
    from backupflow.engines.postgres.server import read_bounded

    lines: list[dict[str, object]] = []
    try:
        text = read_bounded(path, 32 << 20, tail=True)
    except OSError:
        return lines
    for line in text.splitlines()[-10000:]:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            lines.append(item)
    return lines


def copy_failed(copy: Copy, until: datetime | None) -> Exception:
    """Why the copy stopped before it was promoted, as the error a user reads."""
    report = read_report(copy.scratch / REPORT_FILE)
    damaged = [r for r in report if r.get("outcome") == "damaged"]
    if damaged:
        item = damaged[-1]
        return IntegrityError(
            f"archived WAL file {item.get('name')} is damaged on every tier that holds it "
            f"({item.get('error') or 'checksum mismatch'}); caught by its checksum before "
            "PostgreSQL read it, and recovery stopped."
        )
    unavailable = [r for r in report if r.get("outcome") == "unavailable"]
    if unavailable:
        item = unavailable[-1]
        return EngineError(
            f"archived WAL file {item.get('name')} could not be read from any tier "
            f"({item.get('error') or 'no tier answered'}); recovery stopped, nothing live was "
            "touched; restore again when the tiers answer."
        )
    log = copy.log_tail(200)
    if "recovery ended before configured recovery target was reached" in log:
        gaps = [
            str(r.get("name"))
            for r in report
            if r.get("outcome") == "missing" and r.get("planned") is True
        ]
        shown = until.astimezone(UTC).isoformat() if until else "the target"
        if gaps:
            return ChainGapError(
                f"WAL segment {gaps[-1]} is missing from the archive, so recovery ended before "
                f"{shown}; restore to an earlier time."
            )
        reached = last_transaction(log)
        point = (
            f"the latest point it reaches is {reached.isoformat()} (its last transaction)"
            if reached
            else "no transaction was replayed after the base backup"
        )
        return TargetNotReachedError(
            f"the archived WAL ends before {shown}: {point}; restore to that time, or accept "
            f"it with {flag('accept_earlier')}.",
            reached,
        )
    return EngineError(f"the restored copy stopped during recovery: {last_error_line(log)}")


_LAST_TRANSACTION = re.compile(
    r"last completed transaction was at log time "
    r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?[+-]\d{2}(?::?\d{2})?)"
)


def last_transaction(log: str) -> datetime | None:
    """When the last transaction recovery replayed committed, from the copy's log (UTC)."""
    found = _LAST_TRANSACTION.findall(log)
    if not found:
        return None
    text = found[-1]
    if re.search(r"[+-]\d{2}$", text):
        text += ":00"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def fallbacks(copy: Copy) -> tuple[str, ...]:
    """Each WAL file served from another tier than the first that holds it, and why."""
    lines = []
    for item in read_report(copy.scratch / REPORT_FILE):
        if item.get("outcome") == "fetched" and item.get("error"):
            lines.append(
                f"WAL file {item.get('name')} was served from the {item.get('tier')} tier: "
                f"{item.get('error')}"
            )
    return tuple(dict.fromkeys(lines))


def check_report(copy: Copy, listed: set[str]) -> None:
    """After promotion: a WAL file the chain lists that recovery asked for and did not get
    means it stopped early (PostgreSQL takes a missing file for the end of the archive)."""
    for item in read_report(copy.scratch / REPORT_FILE):
        name = str(item.get("name", ""))
        if name not in listed or item.get("outcome") == "fetched":
            continue
        if item.get("outcome") == "missing":
            raise ChainGapError(
                f"WAL file {name}, listed by a backup of the chain, is missing from every "
                "tier, so recovery stopped before it; restore to an earlier time."
            )
        why = item.get("error") or item.get("outcome")
        raise EngineError(
            f"WAL file {name} could not be read from the tiers ({why}); recovery stopped "
            "before it; check the tiers and restore again."
        )


def wait(copy: Copy, superuser: str, timeout: float, until: datetime | None) -> None:
    """Wait until the copy has left recovery (promoted); the error if it stops first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not copy.running():
            raise copy_failed(copy, until)
        try:
            with copy.connect(superuser) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0] is False:
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)
    raise EngineError(
        f"the restored copy did not finish recovery within {timeout:.0f} s; raise "
        "BACKUPFLOW_DATABASE__RECOVERY_WAIT_SECONDS."
    )


#: The most tables a drill's smoke query counts (exact ``count(*)``: each one reads its table).
SMOKE_TABLES = 200


def row_counts(copy: Copy, superuser: str) -> dict[str, int]:
    """Exact row counts of the user tables of every database of the running copy (keys
    ``<database>/<schema>.<table>``, the first :data:`SMOKE_TABLES` in name order): the
    drill's smoke query, read while the checked copy still runs."""
    from psycopg import sql

    counts: dict[str, int] = {}
    with copy.connect(superuser) as conn:
        names = [
            str(row[0])
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname"
            )
        ]
    for name in names:
        with copy.connect(superuser, name) as conn:
            tables = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2 LIMIT %s",
                (SMOKE_TABLES - len(counts),),
            ).fetchall()
            for schema, table in tables:
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                counts[f"{name}/{schema}.{table}"] = int(row[0]) if row else 0
        if len(counts) >= SMOKE_TABLES:
            break
    return counts
