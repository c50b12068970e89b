"""Bootstrap a Prefect API for backupflow (idempotent), then deploy every job.

Against ``$PREFECT_API_URL``: create the process work pool, the global concurrency limit
that database backups hold, and the blocks the settings name (the database password as a
Secret block, AWS credentials, the repository keys as Secret blocks), then run ``prefect
--no-prompt deploy --all``.  Secrets are read from this process's environment or env-file,
never from its command line, and never go into a deployment's ``job_variables`` (Prefect
would store them there in plain text): workers load the blocks by name at run time.

It also creates (or brings up to date) one Prefect automation, ``backupflow-failed-runs``,
that tells every owner with a notification block when any run of a backupflow flow ends
Failed or Crashed, whatever made it fail: a run refused on its parameters, or one whose
process died before its own hooks could run.  With no notification block configured it
says so and creates nothing.

Before anything, it checks that ``prefect.yaml`` schedules each backup job as the settings
say (the settings are the source of truth, see ``backupflow.schedules``) and refuses to
deploy when they differ: the scheduler would otherwise silently ignore the override.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from backupflow.config import Settings, load_settings
from backupflow.errors import BackupflowError, ConfigError
from backupflow.keys import parse_identities, parse_signing_key
from backupflow.schedules import disagreements

ROOT = Path(__file__).resolve().parents[1]
POOL = os.environ.get("BACKUPFLOW_WORK_POOL", "backupflow")
LIMIT = "backupflow-database-backups"
AUTOMATION = "backupflow-failed-runs"
_BODY = (
    "{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}"
)


def check_schedules(settings: Settings) -> None:
    """Refuse (ConfigError) when prefect.yaml would schedule a job other than the settings say."""
    problems = disagreements(settings, yaml.safe_load((ROOT / "prefect.yaml").read_text()))
    if problems:
        raise ConfigError(
            f"{problems[0].rstrip('.')}; edit prefect.yaml and the setting together "
            '(docs/operations.md, "Schedules"), then run the bootstrap again.'
        )


async def _prepare() -> list[str]:
    settings = load_settings()
    check_schedules(settings)
    done = []
    async with get_client() as client:
        try:
            await client.read_work_pool(POOL)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            done.append(f"work pool {POOL} created")
        await client.upsert_global_concurrency_limit_by_name(LIMIT, 1)
        done.append(f"global concurrency limit {LIMIT} = 1")
    password = settings.database.password.get_secret_value()
    if settings.database.password_block and password:
        from prefect.blocks.system import Secret

        await Secret(value=password).save(settings.database.password_block, overwrite=True)
        done.append(f"Secret block {settings.database.password_block} saved")
    for tier in (settings.repository.secondary, settings.repository.dr):
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if tier.credentials_block and key and secret:
            from prefect_aws import AwsCredentials

            await AwsCredentials(
                aws_access_key_id=key, aws_secret_access_key=secret, region_name=tier.region
            ).save(tier.credentials_block, overwrite=True)
            done.append(f"AwsCredentials block {tier.credentials_block} saved")
    done += await _key_blocks(settings)
    done.append(await ensure_automation(settings))
    return done


def flow_names() -> list[str]:
    """The names of the flows prefect.yaml deploys (``flows/x.py:do_this`` is ``do-this``)."""
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {
        str(d["entrypoint"]).rsplit(":", 1)[1].replace("_", "-")
        for d in project.get("deployments", [])
    }
    return sorted(names)


async def _block_ids(client: Any, names: list[str]) -> tuple[list[UUID], list[str]]:
    """The ids of the notification block documents ``names`` (a name or ``type/name``), and
    the names not found."""
    documents = await client.read_block_documents()
    found: list[UUID] = []
    missing: list[str] = []
    for name in names:
        slug, _, plain = name.rpartition("/")
        ids = [
            d.id
            for d in documents
            if d.name == plain and (not slug or (d.block_type and d.block_type.slug == slug))
        ]
        if ids:
            found.append(ids[0])
        else:
            missing.append(name)
    return found, missing


async def ensure_automation(settings: Settings, *others: Settings) -> str:
    """Create or update the automation that tells the owners' blocks of every Crashed
    backupflow run (a killed process runs no hook; Failed and Cancelled runs tell their
    owner from their own hooks, so every failure is told exactly once); a sentence saying
    what was done.  Without any notification block an automation left from before is
    removed; a block the settings name that does not exist is a :class:`ConfigError`."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    names = sorted(
        {
            contact.notification_block
            for owners in (one.owners for one in (settings, *others))
            for contact in (owners.backup_administrator, owners.recovery_owner, owners.dr_lead)
            if contact.notification_block
        }
    )
    if not names:
        removed = await _remove_automation(Automation)
        return (
            f"automation {AUTOMATION} {'removed' if removed else 'skipped'}: no owner has a "
            "notification block (set BACKUPFLOW_OWNERS__<ROLE>__NOTIFICATION_BLOCK, then run "
            "the bootstrap again)"
        )
    async with get_client() as client:
        ids, missing = await _block_ids(client, names)
    if missing:
        removed = await _remove_automation(Automation)
        raise ConfigError(
            f"there is no notification block {', '.join(missing)}: create it (prefect block "
            "create) or fix BACKUPFLOW_OWNERS__<ROLE>__NOTIFICATION_BLOCK, then run the "
            f"bootstrap again{'; the old automation was removed' if removed else ''}."
        )
    wanted = Automation(
        name=AUTOMATION,
        description="Tell the backupflow owners about every Crashed run (Failed and Cancelled "
        "runs tell them from their own hooks).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow_names()},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="backupflow: {{ flow.name }} {{ flow_run.state.name }}",
                body=_BODY,
            )
            for block_id in ids
        ],
    )
    try:
        existing = await Automation.aread(name=AUTOMATION)
    except ValueError:
        await wanted.acreate()
        return f"automation {AUTOMATION} created ({len(ids)} notification block(s))"
    wanted.id = existing.id
    await wanted.aupdate()
    return f"automation {AUTOMATION} updated ({len(ids)} notification block(s))"


async def _remove_automation(automation: Any) -> bool:
    """Delete the automation of an earlier bootstrap, if there is one."""
    try:
        existing = await automation.aread(name=AUTOMATION)
    except ValueError:
        return False
    await existing.adelete()
    return True


async def _key_blocks(settings: Settings) -> list[str]:
    """The repository keys' Secret blocks the settings name (``__SIGNING_KEY_BLOCK``,
    ``__IDENTITIES_BLOCK``), from keys given in the environment.  Only those: every client
    of an open-source Prefect API reads every Secret block, so keys go there only where the
    operator chose it (docs/security.md says what that costs).  Idempotent: an unchanged
    block is left alone, and an age identity already in the identities block is never
    dropped from it."""
    from prefect.blocks.system import Secret

    keys = settings.crypto
    done = []
    signing = keys.signing_key.get_secret_value().strip()
    if signing and keys.signing_key_block:
        parse_signing_key(signing, "BACKUPFLOW_CRYPTO__SIGNING_KEY")
        name = keys.signing_key_block
        if await _block_value(name) == signing:
            done.append(f"Secret block {name} unchanged")
        else:
            await Secret(value=signing).save(name, overwrite=True)
            done.append(f"Secret block {name} saved (signing key)")
    given = keys.identities.get_secret_value()
    if given.strip() and keys.identities_block:
        name = keys.identities_block
        old = await _block_value(name) or ""
        merged = _merge_identities(old, given)
        if merged == old:
            done.append(f"Secret block {name} unchanged")
        else:
            await Secret(value=merged).save(name, overwrite=True)
            done.append(f"Secret block {name} saved ({merged.count(chr(10)) + 1} age identities)")
    return done


async def _block_value(name: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        block = await Secret.aload(name)
    except ValueError:
        return None
    return str(block.get())


def _merge_identities(old: str, given: str) -> str:
    """``old`` with the identities of ``given`` it lacks added, one a line."""
    held = [str(i) for i in parse_identities(old, "the identities block")] if old.strip() else []
    added = [
        text
        for text in (str(i) for i in parse_identities(given, "BACKUPFLOW_CRYPTO__IDENTITIES"))
        if text not in held
    ]
    return "\n".join([*held, *added]) if added else old


async def _prepare_fleet(path: Path) -> list[str]:
    """The fleet's deployments, limits and automations (``BACKUPFLOW_FLEET``): nothing from
    prefect.yaml, and no secret (each host holds its own; docs/fleet.md)."""
    from backupflow.fleet import load_fleet
    from backupflow_app.fleet_deploy import deploy_fleet

    fleet = load_fleet(path)
    async with get_client() as client:
        report = await deploy_fleet(client, fleet)
    sites = [site.settings for site in fleet.sites]
    return [*report.lines, await ensure_automation(sites[0], *sites[1:])]


def main() -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: bootstrap needs the Prefect API to configure.")
        return 2
    fleet = os.environ.get("BACKUPFLOW_FLEET")
    if fleet:
        try:
            lines = asyncio.run(_prepare_fleet(Path(fleet)))
        except BackupflowError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception as exc:  # the API's own errors: one sentence, no traceback
            first = (str(exc) or type(exc).__name__).splitlines()[0][:300]
            print(f"error: the Prefect API refused the fleet's bootstrap: {first}", file=sys.stderr)
            return 1
        print("\n".join(lines))
        return 0
    try:
        prepared = asyncio.run(_prepare())
    except BackupflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for line in prepared:
        print(line)
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, check=False
    )
    return deploy.returncode


if __name__ == "__main__":
    sys.exit(main())
