"""Failure hooks: tell the role the seed makes responsible (a Prefect notification block).

A flow lists :func:`notify_on_failure` and :func:`notify_on_cancellation` for its role.  A
run that crashes (its process killed) cannot run a hook: the bootstrap's automation tells the
owners of crashed runs, and only of those, so each failure is told exactly once.

A notification can never hide the failure itself, but it never fails silently either: when
the role has no notification block, or when sending fails, a warning is logged to the run
(the cause with every known secret masked) and the run gets a markdown artifact
``notification-<flow>`` saying who was told, or why nobody was.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Literal

from backupflow.config import Settings, current_settings
from backupflow.redact import known_secrets, mask

__all__ = [
    "Role",
    "notify",
    "notify_on_cancellation",
    "notify_on_failure",
    "notify_recovered",
]

Role = Literal["backup_administrator", "recovery_owner", "dr_lead"]
_SHOWN = {
    "backup_administrator": "backup administrator",
    "recovery_owner": "recovery owner",
    "dr_lead": "DR lead",
}


def _run_logger(flow: Any, flow_run: Any) -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run=flow_run, flow=flow)
    except Exception:  # no API to log to: the process log still says it
        return logging.getLogger("backupflow.notify")


def _artifact(flow: Any, flow_run: Any, markdown: str) -> None:
    """The run's ``notification-<flow>`` artifact (attached to ``flow_run`` even when a
    crash hook runs outside the run's context)."""
    try:
        from prefect.artifacts import MarkdownArtifact

        key = "notification-" + "".join(c if c.isalnum() else "-" for c in str(flow.name).lower())
        artifact = MarkdownArtifact(
            key=key,
            markdown=markdown,
            description="Who was told",
            flow_run_id=getattr(flow_run, "id", None),
        )
        with warnings.catch_warnings():  # "outside of a flow run": the id says which run
            warnings.simplefilter("ignore", FutureWarning)
            artifact.create()
        _send_events()
    except Exception:  # the warning in the log is the record that matters
        logging.getLogger("backupflow.notify").warning("could not publish the notification")


def _send_events(timeout: float = 5.0) -> None:
    """Wait (a little) until the artifact's event has left: the hook runs as the run ends,
    and a CLI that exits right after would print Prefect's "Still processing items"."""
    from prefect.events.worker import EventsWorker

    waiter = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True)
    waiter.start()
    waiter.join(timeout)


def _secrets(settings: Settings | None) -> list[str]:
    if settings is None:
        return []
    try:
        return known_secrets(settings)
    except Exception:
        return []


def _load_block(name: str) -> Any:
    """The notification block ``name`` (its name, or ``type/name``)."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client

    try:
        return NotificationBlock.load(name)
    except ValueError:  # a plain name is looked up among the blocks that can notify
        if "/" in name:
            raise
    with get_client(sync_client=True) as client:
        documents = client.read_block_documents()
    for document in documents:
        schema = document.block_schema
        if (
            document.name == name
            and document.block_type is not None
            and schema is not None
            and "notify" in schema.capabilities
        ):
            return Block.load(f"{document.block_type.slug}/{name}")
    raise ValueError(f"there is no notification block named {name!r}")


def _told_before(state: Any) -> bool:
    """Whether the run's error says its owners were already told of this very failure (a
    health check finding the same failing pairs as the last one)."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:
        return False
    return getattr(error, "notify", True) is False


def notify_recovered(role: Role, what: str) -> bool:
    """Tell ``role``, from inside a run, that what failed before is well again."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        return False

    class _Recovered:
        message = what

    return notify(role, context.flow, context.flow_run, _Recovered(), "recovered")


def notify(role: Role, flow: Any, flow_run: Any, state: Any, what: str) -> bool:
    """Tell ``role`` that ``flow_run`` of ``flow`` ``what`` (failed, crashed, was cancelled,
    recovered); True when a notification was sent.  Never raises."""
    logger = _run_logger(flow, flow_run)
    shown = _SHOWN[role]
    settings: Settings | None = None
    if what == "failed" and _told_before(state):
        logger.info(f"the {shown} is not told again: the same failure was reported before")
        return False
    try:
        settings = current_settings()
        contact = getattr(settings.owners, role)
        if not contact.notification_block:
            line = (
                f"nobody was told that this run {what}: the {shown} has no notification "
                f"block (set owners.{role}.notification_block)"
            )
            logger.warning(line)
            _artifact(flow, flow_run, f"# Not notified\n\n{line}.")
            return False
        block = _load_block(contact.notification_block)
        block.notify(
            body=f"{flow.name} run {flow_run.name} {what}: {state.message}",
            subject=f"backupflow: {flow.name} {what} ({contact.name or shown})",
        )
    except Exception as exc:  # a notification must never hide the failure itself
        cause = mask(f"{type(exc).__name__}: {exc}", _secrets(settings))
        line = f"the {shown} could not be told that this run {what}: {cause}"
        logger.warning(line)
        _artifact(flow, flow_run, f"# Notification failed\n\n{line}")
        return False
    who = contact.name or contact.notification_block
    told = f"the {shown} ({who}) was told that this run {what}"
    logger.info(told)
    block_name = contact.notification_block
    _artifact(flow, flow_run, f"# Notified\n\n{told} through the block `{block_name}`.")
    return True


def notify_on_failure(role: Role) -> Any:
    """An ``on_failure`` hook that notifies ``role`` through its notification block."""

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        notify(role, flow, flow_run, state, "failed")

    return hook


def notify_on_cancellation(role: Role) -> Any:
    """An ``on_cancellation`` hook that notifies ``role``."""

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        notify(role, flow, flow_run, state, "was cancelled")

    return hook
