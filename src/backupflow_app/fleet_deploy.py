"""Carry out the fleet's plan on a Prefect API: limits, deployments, restore-test automations.

:mod:`backupflow.fleet` decides (pure); this module reads what the API holds in a few list
requests, and writes only what differs:

- the work pool, if missing;
- every global concurrency limit of :func:`~backupflow.fleet.plan_limits`, where its slots
  differ;
- every deployment of :func:`~backupflow.fleet.plan_deployments` whose fingerprint (kept in
  the deployment's ``version``) differs or that is missing; deployments tagged
  ``backupflow-fleet`` that the plan no longer has (a site that left) are deleted, and said;
- per site, the automation ``backupflow-restore-test-<site>``: when the site's full backup
  deployment completes a run, run its ``restore-test`` deployment.

A rerun that changes nothing reads and writes nothing else, so it stays fast at a hundred
sites.  Writes go a few at a time (the server's database serialises them anyway).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

from backupflow.fleet import (
    FLEET_TAG,
    DeploymentSpec,
    Fleet,
    plan_deployments,
    plan_limits,
    restore_test_pairs,
)

__all__ = ["AUTOMATION_PREFIX", "FleetDeployReport", "deploy_fleet"]

AUTOMATION_PREFIX = "backupflow-restore-test-"
_PULL = [
    {
        "prefect.deployments.steps.set_working_directory": {
            "directory": "{{ $BACKUPFLOW_PROJECT_DIR }}"
        }
    }
]
_WRITERS = 3
_PAGE = 200


@dataclass
class FleetDeployReport:
    """What a fleet bootstrap did, for the operator (one line each) and the benchmark."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    automations: int = 0
    limits: int = 0
    lines: list[str] = field(default_factory=list)


def _schema(entrypoint: str) -> dict[str, Any]:
    """The parameter schema of the flow at ``entrypoint`` (``flows/x.py:fn``), as the UI's
    run form shows it."""
    from prefect.utilities.callables import parameter_schema

    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return parameter_schema(getattr(module, name).fn).model_dump_for_openapi()


_TRANSIENT = ("503", "502", "504", "429", "Service Unavailable", "timed out", "Timeout")
#: How long a busy API may keep refusing one write before the bootstrap gives up (seconds).
PATIENCE = 300.0


async def _patiently(job: Callable[[], Awaitable[Any]]) -> Any:
    """``job()``, asked again with a growing pause while the API answers that it is busy
    (a small server's database, written to by a hundred sites' deployments)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    pause = 1.0
    while True:
        try:
            return await job()
        except Exception as exc:
            text = f"{exc} {exc.__cause__ or ''}"
            if not any(mark in text for mark in _TRANSIENT) or loop.time() + pause > deadline:
                raise
        await asyncio.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 20.0)


async def _gather(jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(_WRITERS)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await _patiently(job)

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def _existing_deployments(client: Any) -> dict[str, Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    found: dict[str, Any] = {}
    offset = 0
    while True:
        page = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[FLEET_TAG])),
            limit=_PAGE,
            offset=offset,
        )
        for deployment in page:
            found[str(deployment.id)] = deployment
        if len(page) < _PAGE:
            return found
        offset += _PAGE


async def _limits(client: Any, fleet: Fleet, report: FleetDeployReport) -> None:
    wanted = plan_limits(fleet)
    have: dict[str, int] = {}
    while True:
        page = await client.read_global_concurrency_limits(limit=_PAGE, offset=len(have))
        have.update({limit.name: limit.limit for limit in page})
        if len(page) < _PAGE:
            break

    jobs = [
        partial(client.upsert_global_concurrency_limit_by_name, name, slots)
        for name, slots in wanted.items()
        if have.get(name) != slots
    ]
    await _gather(jobs)
    report.limits = len(jobs)


async def deploy_fleet(client: Any, fleet: Fleet) -> FleetDeployReport:
    """Bring the API in line with ``fleet``; what was done."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    report = FleetDeployReport()
    try:
        await client.read_work_pool(fleet.pool)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=fleet.pool, type="process"))
        report.lines.append(f"work pool {fleet.pool} created")
    await _limits(client, fleet, report)
    specs = plan_deployments(fleet)
    flows = {spec.flow: spec.entrypoint for spec in specs}
    flow_ids = dict(
        zip(
            flows,
            await _gather([partial(client.create_flow_from_name, n) for n in flows]),
            strict=True,
        )
    )
    schemas = {entry: _schema(entry) for entry in set(flows.values())}
    # This fleet's own: another fleet on the same server (another pool) is never touched.
    existing = {
        key: d
        for key, d in (await _existing_deployments(client)).items()
        if d.work_pool_name == fleet.pool
    }
    flow_names = {str(flow_id): name for name, flow_id in flow_ids.items()}
    by_name = {f"{flow_names.get(str(d.flow_id), '?')}/{d.name}": d for d in existing.values()}
    ids: dict[str, UUID] = {}
    writes: list[Callable[[], Awaitable[Any]]] = []

    def write(spec: DeploymentSpec, fingerprint: str) -> Callable[[], Awaitable[Any]]:
        async def job() -> None:
            schedules = (
                [
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=spec.cron, timezone=spec.timezone), active=True
                    )
                ]
                if spec.cron
                else []
            )
            ids[spec.full_name] = await client.create_deployment(
                flow_id=flow_ids[spec.flow],
                name=spec.name,
                version=fingerprint,
                schedules=schedules,
                concurrency_limit=spec.concurrency_limit,
                parameters=spec.parameters,
                description=spec.description,
                work_pool_name=fleet.pool,
                work_queue_name=spec.queue,
                tags=spec.tags,
                entrypoint=spec.entrypoint,
                parameter_openapi_schema=schemas[spec.entrypoint],
                pull_steps=_PULL,
                enforce_parameter_schema=True,
                job_variables={"env": spec.env} if spec.env else {},
            )

        return job

    for spec in specs:
        fingerprint = spec.fingerprint(fleet.pool)
        have = by_name.pop(spec.full_name, None)
        if have is not None and have.version == fingerprint:
            ids[spec.full_name] = have.id
            report.unchanged += 1
            continue
        if have is None:
            report.created += 1
        else:
            report.updated += 1
        writes.append(write(spec, fingerprint))
    await _gather(writes)
    gone = sorted(by_name.items())
    await _gather([partial(client.delete_deployment, d.id) for _, d in gone])
    for full_name, deployment in gone:
        site = next((t[5:] for t in deployment.tags if t.startswith("site:")), None)
        why = f"site {site} left the fleet" if site else "no longer in the fleet's plan"
        report.removed.append(full_name)
        report.lines.append(f"deployment {full_name} removed ({why})")
    await _automations(fleet, specs, ids, report)
    report.lines.insert(
        0,
        f"fleet of {len(fleet.sites)} sites: {report.created} deployments created, "
        f"{report.updated} updated, {report.unchanged} unchanged, {len(report.removed)} removed; "
        f"{report.limits} concurrency limits written; {report.automations} automations written",
    )
    return report


def _automation_fingerprint(site: str, full_id: UUID, test_id: UUID) -> str:
    text = json.dumps([site, str(full_id), str(test_id)])
    return "fleet-" + hashlib.sha256(text.encode()).hexdigest()[:16]


async def _automations(
    fleet: Fleet, specs: list[DeploymentSpec], ids: dict[str, UUID], report: FleetDeployReport
) -> None:
    """One automation per site: its full backup completes -> its restore test runs."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    async with get_client() as client:
        have = {
            a.name: a
            for a in await client.read_automations()
            if a.name.startswith(AUTOMATION_PREFIX)
        }
    jobs: list[Callable[[], Awaitable[Any]]] = []
    for site, full, test in restore_test_pairs(specs):
        name = f"{AUTOMATION_PREFIX}{site}"
        fingerprint = _automation_fingerprint(site, ids[full], ids[test])
        old = have.pop(name, None)
        description = f"After each full backup of site {site}, test-restore it ({fingerprint})."
        if old is not None and old.description == description:
            continue
        wanted = Automation(
            name=name,
            description=description,
            trigger=EventTrigger(
                expect={"prefect.flow-run.Completed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.id": f"prefect.deployment.{ids[full]}"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[RunDeployment(source="selected", deployment_id=ids[test], parameters={})],
        )
        if old is not None:
            wanted.id = old.id
            jobs.append(wanted.aupdate)
        else:
            jobs.append(wanted.acreate)
    await _gather(jobs)
    async with get_client() as client:
        for name, automation in sorted(have.items()):
            await client.delete_automation(automation.id)
            report.lines.append(f"automation {name} removed (its site left the fleet)")
    report.automations = len(jobs)
