"""Notifications that never fail silently, hooks for crashed and cancelled runs, and the
bootstrap's automation for every Failed or Crashed run (under the Prefect harness)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from prefect.artifacts import Artifact
from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.states import State

from backupflow.config import Contact, OwnersSettings, Settings, use_settings
from backupflow.errors import ConfigError, NoBackupError
from backupflow.models import BackupKind
from deployments.bootstrap import AUTOMATION, ensure_automation
from flows.backup_database import backup_database
from flows.restore_database import restore_database

TOKEN = "tok-5ecret-value-9f3"


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook: ``/ok`` records what it is sent, ``/fail`` answers 500."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.startswith("/ok"):
                received.append(body)
                self.send_response(200)
            else:
                self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()


def _block(url: str, name: str) -> UUID:
    block = CustomWebhookNotificationBlock(
        name="backupflow",
        url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    )
    return cast(UUID, block.save(name, overwrite=True))


def _owned(settings: Settings, block: str | None) -> Settings:
    contact = Contact(name="Park Jiwoo", notification_block=block)
    owners = OwnersSettings(recovery_owner=contact, dr_lead=contact)
    return settings.model_copy(update={"owners": owners})


def _failed_restore(settings: Settings) -> UUID:
    """A restore that fails (there are no backups); the failed run's id."""
    with use_settings(settings):
        state = cast(State[Any], restore_database(return_state=True))
    assert state.is_failed()
    with pytest.raises(NoBackupError):
        state.result()
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def _warnings(run_id: UUID) -> list[str]:
    APILogWorker.drain_all(timeout=10)

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
        return [log.message for log in logs if log.level >= 30]

    return asyncio.run(read())


def _note(run_id: UUID | None = None) -> str:
    artifact = Artifact.get("notification-restore-database")
    assert artifact is not None
    if run_id is not None:
        assert artifact.flow_run_id == run_id  # shown on the failed run's page
    return str(artifact.data)


def test_a_role_without_a_block_is_a_warning_in_the_run_and_its_artifact(
    settings: Settings,
) -> None:
    run_id = _failed_restore(_owned(settings, None))
    expected = "nobody was told that this run failed: the recovery owner has no notification block"
    assert any(expected in line for line in _warnings(run_id))
    assert expected in _note(run_id)


def test_a_block_that_fails_to_send_is_a_warning_with_the_cause_and_no_secret(
    settings: Settings,
    webhook: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_HOOK_TOKEN", TOKEN)
    _block(f"{webhook[0]}/fail?token={TOKEN}", "owner-broken-hook")
    run_id = _failed_restore(_owned(settings, "owner-broken-hook"))
    (line,) = [w for w in _warnings(run_id) if "could not be told" in w]
    assert line.startswith("the recovery owner could not be told that this run failed: ")
    assert "500" in line and "**********" in line
    assert TOKEN not in line and TOKEN not in _note()
    assert "could not be told" in _note()


def test_a_working_block_tells_the_owner_by_its_plain_name(
    settings: Settings, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    _block(f"{url}/ok", "owner-hook")
    before = len(received)
    _failed_restore(_owned(settings, "owner-hook"))
    (message,) = received[before:]
    assert message["subject"] == "backupflow: restore-database failed (Park Jiwoo)"
    assert "restore-database run" in message["body"] and "no backups" in message["body"]
    assert "was told that this run failed" in _note()


def test_every_notifying_flow_tells_of_cancelled_runs_and_leaves_crashes_to_the_automation(
    settings: Settings, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    import importlib

    flows = Path(__file__).resolve().parents[2] / "flows"
    notifying = []
    for path in sorted(flows.glob("[!_]*.py")):
        module = importlib.import_module(f"flows.{path.stem}")
        flow = getattr(module, path.stem)
        if not flow.on_failure_hooks:
            continue
        notifying.append(flow.name)
        # A crash is told by the bootstrap's automation only: a hook too would tell twice.
        assert not flow.on_crashed_hooks, flow.name
        cancelled = [h.__qualname__ for h in flow.on_cancellation_hooks]
        assert cancelled and all("notify_on_cancellation" in h for h in cancelled), flow.name
    assert {"backup-database", "restore-database", "dr-drill", "failover"} <= set(notifying)


def test_the_bootstrap_automation_notifies_failed_and_crashed_runs_idempotently(
    settings: Settings, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    said = asyncio.run(ensure_automation(_owned(settings, None)))
    assert said.startswith(f"automation {AUTOMATION} skipped: no owner has a notification block")
    with pytest.raises(ConfigError, match="there is no notification block no-such-block"):
        asyncio.run(ensure_automation(_owned(settings, "no-such-block")))
    with pytest.raises(ValueError):
        Automation.read(name=AUTOMATION)  # skipping created nothing

    block_id = _block(f"{webhook[0]}/ok", "owner-hook")
    owned = _owned(settings, "owner-hook")
    assert asyncio.run(ensure_automation(owned)).endswith("created (1 notification block(s))")
    assert asyncio.run(ensure_automation(owned)).endswith("updated (1 notification block(s))")

    async def named() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_automations_by_name(AUTOMATION))

    (automation,) = asyncio.run(named())
    trigger = automation.trigger
    assert trigger.expect == {"prefect.flow-run.Crashed"}  # Failed runs tell from their hooks
    related = trigger.match_related
    related = related[0] if isinstance(related, list) else related
    names = related["prefect.resource.name"]
    assert {"backup-database", "restore-database", "dr-drill", "restore-system"} <= set(names)
    assert [a.block_document_id for a in automation.actions] == [block_id]
    assert automation.enabled
    # A renamed block: one sentence, and the stale automation is gone; no block: removed.
    with pytest.raises(ConfigError, match="the old automation was removed"):
        asyncio.run(ensure_automation(_owned(settings, "renamed-block")))
    assert asyncio.run(named()) == []
    assert asyncio.run(ensure_automation(owned)).endswith("created (1 notification block(s))")
    assert "removed: no owner" in asyncio.run(ensure_automation(_owned(settings, None)))
    assert asyncio.run(named()) == []


def test_health_tells_the_dr_lead_once_per_outage_and_once_on_recovery(
    settings: Settings, webhook: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Every job backed up, then the DR tier goes down for three health checks and comes
    back: one message when it fails, none while the same pairs stay failing, one when all
    is well again."""
    from flows.backup_files import backup_files
    from flows.backup_health import FINDINGS_KEY, StaleBackupsError, backup_health
    from tests.integration.test_tier_state import with_dr_down
    from tests.support.trees import make_api_tree

    url, received = webhook
    _block(f"{url}/ok", "health-lead")
    api = make_api_tree(tmp_path / "api")
    files = settings.files.model_copy(
        update={
            name: getattr(settings.files, name).model_copy(update={"root": api})
            for name in ("config", "logs", "uploads")
        }
    )
    healthy = _owned(settings, "health-lead").model_copy(update={"files": files})
    live = healthy.database.sqlite_path
    live.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with use_settings(healthy):
        for kind in (BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG):
            backup_database(kind=kind)
        for name in ("config", "logs", "uploads"):
            backup_files(file_set=name)
        backup_health()  # all well: the baseline
    start = len(received)
    with use_settings(with_dr_down(healthy)):
        for _check in range(3):
            with pytest.raises(StaleBackupsError, match="tier dr is unreachable"):
                backup_health()
    down = received[start:]
    assert len(down) == 1 and "backup-health" in down[0]["subject"]
    assert "failed" in down[0]["subject"]
    with use_settings(healthy):
        backup_health()
    back = received[start + 1 :]
    assert len(back) == 1 and "recovered" in back[0]["subject"]
    assert "every job/tier pair is ok again" in back[0]["body"]
    assert Artifact.get(FINDINGS_KEY) is not None
