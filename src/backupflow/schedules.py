"""Schedules have one source of truth: the settings.

The six backup jobs' cron expressions and the timezone are settings
(``BACKUPFLOW_JOBS__<JOB>__SCHEDULE``, ``BACKUPFLOW_TIMEZONE``) because code reads them at run
time: the health check measures each job's staleness against its schedule.  ``prefect.yaml``
must tell Prefect's scheduler the same thing, so it copies them; this module compares the two.
A unit test holds ``prefect.yaml`` to the defaults, and ``deployments/bootstrap.py`` refuses to
deploy when the settings in its environment say otherwise (an override the scheduler would
silently ignore).  The other schedules (health check, verify, drill, review) are read by
nothing but Prefect, so ``prefect.yaml`` is their only copy.

Pure: it takes the parsed ``prefect.yaml`` (a mapping) and the settings, and returns sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backupflow.config import Settings

__all__ = ["JOB_DEPLOYMENTS", "Schedule", "deployment_schedules", "disagreements"]

#: Each backup job's deployment in ``prefect.yaml`` and its job in the settings.
JOB_DEPLOYMENTS: dict[str, str] = {
    "database-full": "database_full",
    "database-diff": "database_diff",
    "database-log": "database_log",
    "config": "config",
    "logs": "logs",
    "uploads": "uploads",
}


@dataclass(frozen=True)
class Schedule:
    """When a deployment runs: a five-field cron expression in a timezone."""

    cron: str
    timezone: str


def deployment_schedules(project: Mapping[str, Any]) -> dict[str, list[Schedule]]:
    """Every deployment of a parsed ``prefect.yaml`` and its cron schedules (none: by hand)."""
    found: dict[str, list[Schedule]] = {}
    for deployment in project.get("deployments") or []:
        found[str(deployment["name"])] = [
            Schedule(str(item["cron"]), str(item.get("timezone", "UTC")))
            for item in deployment.get("schedules") or []
            if "cron" in item
        ]
    return found


def disagreements(settings: Settings, project: Mapping[str, Any]) -> list[str]:
    """One sentence per place where ``prefect.yaml`` and the settings disagree (none: agreed).

    Each backup job's deployment must run exactly on its job's schedule, and every scheduled
    deployment in the settings' timezone.
    """
    schedules = deployment_schedules(project)
    problems = []
    for name, job in JOB_DEPLOYMENTS.items():
        wanted = Schedule(getattr(settings.jobs, job).schedule, settings.timezone)
        have = schedules.get(name)
        if have is None:
            problems.append(f"prefect.yaml has no deployment {name!r} for the job {job}.")
        elif have != [wanted]:
            shown = ", ".join(f"{s.cron!r} in {s.timezone}" for s in have) or "no schedule"
            problems.append(
                f"deployment {name!r} runs on {shown} but BACKUPFLOW_JOBS__{job.upper()}__SCHEDULE"
                f" and BACKUPFLOW_TIMEZONE say {wanted.cron!r} in {wanted.timezone}."
            )
    for name, have in schedules.items():
        if name in JOB_DEPLOYMENTS:
            continue
        for schedule in have:
            if schedule.timezone != settings.timezone:
                problems.append(
                    f"deployment {name!r} runs in {schedule.timezone} but BACKUPFLOW_TIMEZONE "
                    f"says {settings.timezone}."
                )
    return problems
