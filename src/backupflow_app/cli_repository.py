"""``backupflow replicate | prune | adopt | verify``: the commands that look after the
backups already in the tiers.  They are registered on the top-level app by
:mod:`backupflow_app.cli`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from backupflow.errors import ParameterError
from backupflow.models import Category
from backupflow.reporting import artifact_key, iso
from backupflow_app.cli_common import (
    FileSetChoice,
    TierChoice,
    cli_settings,
    console,
    errors,
    flow_context,
)
from backupflow_app.cli_options import check_database_option, one_line

__all__ = ["adopt_cmd", "prune_cmd", "replicate_cmd", "verify_cmd"]


def replicate_cmd() -> None:
    """Copy every backup to each tier that lacks it, verifying checksums (idempotent)."""
    settings = cli_settings()
    from flows.replicate_backups import replicate_backups

    with flow_context(settings, show_progress=True):
        report = replicate_backups()
    for backup_id, source, dest in report.copied:
        console.print(f"copied {backup_id} from {source} to {dest}")
    console.print(f"[green]all tiers hold every backup[/green] ({len(report.copied)} copied).")


def prune_cmd(
    tier: Annotated[
        TierChoice, typer.Option("--tier", help="Which tier(s) to prune.")
    ] = TierChoice.ALL,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan with its reasons; delete nothing.")
    ] = False,
) -> None:
    """Apply retention: delete what no rule keeps (docs/operations.md), never a needed backup."""
    settings = cli_settings()
    from flows.prune_backups import prune_backups

    names = None if tier is TierChoice.ALL else [tier.value]
    now = datetime.now(UTC)
    with flow_context(settings, show_progress=False):
        results = prune_backups(tiers=names, dry_run=dry_run)  # type: ignore[arg-type]
    for result in results:
        table = Table(
            title=f"Retention of {result.series} in {result.tier}"
            + (" (dry run)" if dry_run else "")
        )
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
                f"{result.tier} ({result.series}): deleted {len(result.report.deleted)}, "
                f"still locked {len(result.report.locked)}."
            )
    if dry_run:
        console.print("dry run: nothing was deleted.")


def adopt_cmd(
    file_set: Annotated[
        FileSetChoice | None,
        typer.Option("--set", "-s", help="Adopt a file set's backups instead of the database's."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="Which database (default: the configured one)."),
    ] = None,
    confirm: Annotated[
        str | None,
        typer.Option(
            "--confirm",
            help="The digest a dry run printed: adopt exactly that list (without it, a dry run).",
        ),
    ] = None,
) -> None:
    """Sign, once, the unsigned backups an earlier backupflow made before the repository had
    keys.  Without --confirm it lists what qualifies and prints the list's digest."""
    if file_set is not None and database is not None:
        raise ParameterError("give --set or --database, not both.")
    if database is not None:
        database = check_database_option(database, "--database")
    if confirm is not None and not re.fullmatch(r"[0-9a-f]{20}", confirm.strip().lower()):
        raise ParameterError("--confirm takes the 20 hex digits a dry run of adopt printed.")
    settings = cli_settings()
    from flows.adopt_backups import adopt_backups

    category = file_set.value if file_set is not None else Category.DATABASE.value
    with flow_context(settings, show_progress=True):
        plan = adopt_backups(category=category, name=database, confirm=confirm or "")
    problems = 0
    for report in plan.reports:
        for backup_id in report.adopted:
            console.print(f"[green]adopted[/green] {backup_id} (every object's SHA-256 checked)")
        for skipped in report.skipped:
            console.print(f"skipped {skipped}")
        for problem in report.problems:
            errors.print(f"[red]not adopted:[/red] {escape(one_line(problem))}", highlight=False)
        problems += len(report.problems)
    if not confirm:
        for line in plan.lines:
            console.print(f"would adopt {line}", highlight=False)
        if plan.candidates:
            console.print(
                f"dry run: {len(plan.candidates)} unsigned backups qualify. To adopt exactly "
                f"these, run again with --confirm {plan.digest}"
            )
        else:
            console.print("dry run: no unsigned backup qualifies; nothing to adopt.")
        raise typer.Exit(1 if problems else 0)
    adopted = sum(len(r.adopted) for r in plan.reports)
    console.print(f"{adopted} backups adopted, {problems} refused.")
    if problems:
        raise typer.Exit(1)


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
    settings = cli_settings()
    from backupflow.verify import VerificationFailedError
    from flows.verify_backups import verify_backups

    labels = [settings.database.name, "config", "logs", "uploads"]
    try:
        with flow_context(settings, show_progress=False):
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
    from flows._publish import latest_artifact

    try:
        artifact: Any = latest_artifact(artifact_key("verify", label))
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
