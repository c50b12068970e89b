"""Failure hooks: tell the role the seed makes responsible (a Prefect notification block)."""

from __future__ import annotations

from typing import Any, Literal

from backupflow.config import current_settings

__all__ = ["notify_on_failure"]

Role = Literal["backup_administrator", "recovery_owner", "dr_lead"]


def notify_on_failure(role: Role) -> Any:
    """An ``on_failure`` hook that notifies ``role`` through its notification block, if any."""

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        try:
            contact = getattr(current_settings().owners, role)
            if not contact.notification_block:
                return
            from prefect.blocks.abstract import NotificationBlock

            block: Any = NotificationBlock.load(contact.notification_block)
            block.notify(
                body=f"{flow.name} run {flow_run.name} failed: {state.message}",
                subject=f"backupflow: {flow.name} failed ({contact.name or role})",
            )
        except Exception:  # a notification must never hide the failure itself
            return

    return hook
