"""Bootstrap a Prefect API for backupflow (idempotent), then deploy every job.

Against ``$PREFECT_API_URL``: create the process work pool, the global concurrency limit
that database backups hold, and the blocks the settings name (the database password as a
Secret block, AWS credentials), then run ``prefect --no-prompt deploy --all``.  Secrets are
read from this process's environment or env-file, never from its command line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from backupflow.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
POOL = os.environ.get("BACKUPFLOW_WORK_POOL", "backupflow")
LIMIT = "backupflow-database-backups"


async def _prepare() -> list[str]:
    settings = load_settings()
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
    return done


def main() -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: bootstrap needs the Prefect API to configure.")
        return 2
    for line in asyncio.run(_prepare()):
        print(line)
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, check=False
    )
    return deploy.returncode


if __name__ == "__main__":
    sys.exit(main())
