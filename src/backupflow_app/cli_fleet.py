"""``backupflow worker`` and ``backupflow fleet plan``: a host's worker, and the fleet's plan.

``backupflow worker`` is the one command that starts a host's Prefect worker: it reads the
fleet file (``BACKUPFLOW_FLEET``) and the site this host serves (``BACKUPFLOW_SITE``), loads
the site's settings beneath the host's own environment and env-file (so a broken setting is
one sentence now, not a failed run at 02:00), and replaces itself with ``prefect worker
start`` on the fleet's pool and the site's work queue.  ``--fleet-jobs`` starts the worker of
the fleet's own jobs (the fleet health check) instead.  Every flow run the worker starts
inherits this environment, which is how a host's secrets reach its runs and no other host's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from backupflow.config import load_settings
from backupflow.errors import ConfigError
from backupflow.fleet import Fleet, load_fleet, plan_deployments
from backupflow.fleetfile import FLEET_ENV_VAR, SITE_ENV_VAR
from backupflow_app.cli_common import console

__all__ = ["fleet_app", "worker_cmd"]

fleet_app = typer.Typer(help="The fleet file: its sites and what the bootstrap deploys.")


def _fleet() -> Fleet:
    path = os.environ.get(FLEET_ENV_VAR)
    if not path:
        raise ConfigError(f"{FLEET_ENV_VAR} is not set: name the fleet file (docs/fleet.md).")
    return load_fleet(Path(path))


def project_dir() -> Path:
    """The folder the deployments' entrypoints (``flows/...``) are relative to."""
    import flows

    return Path(flows.__file__).resolve().parent.parent


def worker_cmd(
    fleet_jobs: Annotated[
        bool,
        typer.Option(
            "--fleet-jobs", help="Serve the fleet's own queue (fleet health), not a site's."
        ),
    ] = False,
) -> None:
    """Start this host's Prefect worker on its site's work queue (BACKUPFLOW_FLEET,
    BACKUPFLOW_SITE), with this host's settings and secrets."""
    fleet = _fleet()
    if fleet_jobs:
        queues = [fleet.queue]
        what = f"the fleet's jobs (queue {fleet.queue})"
    else:
        names = [n.strip() for n in (os.environ.get(SITE_ENV_VAR) or "").split(",") if n.strip()]
        if not names:
            raise ConfigError(
                f"{SITE_ENV_VAR} is not set: name the site this host serves, or give --fleet-jobs."
            )
        queues, shown = [], []
        for name in names:  # usually one; a host of several small sites lists them all
            site = fleet.site(name)
            # the site's settings beneath this host's: a bad one is a sentence now
            settings = load_settings(site=name)
            queues.append(site.queue)
            shown.append(
                f"site {site.name} (queue {site.queue}, database {settings.database.name})"
            )
        what = ", ".join(shown)
    os.environ.setdefault("BACKUPFLOW_PROJECT_DIR", str(project_dir()))
    console.print(f"worker for {what} on pool {fleet.pool}")
    sys.stdout.flush()
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", fleet.pool]
    os.execv(sys.executable, [*command, *(arg for q in queues for arg in ("--work-queue", q))])


@fleet_app.command("plan")
def plan_cmd() -> None:
    """What the bootstrap deploys for the fleet file: every deployment, its queue and schedule."""
    fleet = _fleet()
    table = Table("deployment", "queue", "schedule", "site")
    for spec in plan_deployments(fleet):
        schedule = f"{spec.cron} {spec.timezone}" if spec.cron else "by hand / automation"
        table.add_row(spec.full_name, spec.queue, schedule, spec.site or "-")
    console.print(table)
    console.print(f"{len(fleet.sites)} sites; pool {fleet.pool}; fleet queue {fleet.queue}")
