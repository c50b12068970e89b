"""``backupflow verify``: is every tier still a trustworthy copy of every backup?

Like pgBackRest's ``verify`` and restic's ``check --read-data-subset``, one run checks, for
every series (the database and each file set) in every tier:

* **authenticity**: every manifest is read once and must carry a signature of a trusted
  key (foreign, unsigned and tampered manifests are findings, by tier and key);
* **presence and size** of every object a manifest lists, from the LIST results alone
  (no HEAD request per object);
* a **rotating sample of full reads** (``read_data_percent``): each sampled object is read
  whole, decrypted and hashed (:func:`backupflow.pipeline.open_verified`);
* **chains**: every differential and log backup's parent (and base) is an authenticated
  backup of the same tier;
* **agreement between tiers**: a backup is in every tier whose retention keeps it, and
  every tier's manifest of it records the same objects, sizes and checksums;
* **foreign objects** (keys under a series' folder that match none of our key patterns),
  **orphans** (our pattern, but no authenticated manifest owns them, older than the grace
  period) and **unfinished S3 multipart uploads** older than the grace period.

What a run reports, which backups its sample reads and what it costs in requests are in
:mod:`backupflow.verify.report`; the checks of one tier in :mod:`backupflow.verify.tier`;
the agreement between tiers here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from backupflow.models import Category, Manifest
from backupflow.retention import RetentionPolicy, plan_retention
from backupflow.storage import Tier
from backupflow.verify.report import (
    DEFAULT_READ_DATA_PERCENT,
    LIST_PAGE,
    TIER_DISAGREEMENT,
    Finding,
    Series,
    TierSummary,
    VerificationFailedError,
    VerifyReport,
    in_sample,
    list_pages,
    sample_window,
)
from backupflow.verify.tier import Run, TierState

__all__ = [
    "DEFAULT_READ_DATA_PERCENT",
    "LIST_PAGE",
    "Finding",
    "Series",
    "TierSummary",
    "VerificationFailedError",
    "VerifyReport",
    "in_sample",
    "list_pages",
    "sample_window",
    "verify",
]


def _records(manifest: Manifest) -> tuple[tuple[str, str, int, str], ...]:
    return tuple(sorted((o.role, o.key, o.size, o.sha256) for o in manifest.objects))


def verify(
    tiers: Sequence[Tier],
    series: Iterable[Series],
    *,
    now: datetime,
    read_data_percent: float = DEFAULT_READ_DATA_PERCENT,
    seed: str = "",
    grace: timedelta = timedelta(hours=1),
    policy: Callable[[str, Category], RetentionPolicy] | None = None,
    chunk_bytes: int = 1 << 20,
) -> VerifyReport:
    """Check every series in every tier (see the module's list); never writes anything.

    ``policy(tier, category)`` gives each tier's retention, so a backup is only expected
    in the tiers whose retention keeps it; without it, every tier should hold every
    backup.
    """
    report = VerifyReport(window=sample_window(now, read_data_percent))
    run = Run(report, now=now, grace=grace, seed=seed, chunk_bytes=chunk_bytes)
    for one in series:
        states = [s for tier in tiers if (s := run.tier(tier, one)) is not None]
        _agreement(run, one, states, policy)
    return report


def _agreement(
    run: Run,
    series: Series,
    states: Sequence[TierState],
    policy: Callable[[str, Category], RetentionPolicy] | None,
) -> None:
    backups: dict[str, Manifest] = {}
    for state in states:
        for backup_id, manifest in state.manifests.items():
            backups.setdefault(backup_id, manifest)
    entries = sorted(
        (e for s in states for backup_id, e in s.entries.items() if backup_id in s.manifests),
        key=lambda e: (e.restore_point, e.id),
    )
    unique = list({e.id: e for e in entries}.values())
    kept: dict[str, set[str]] = {}
    if policy is not None:
        for state in states:
            rules = replace(policy(state.tier.name, series.category), lock=None)
            kept[state.tier.name] = {b.id for b in plan_retention(unique, rules, run.now).kept}
    for backup_id, first in sorted(backups.items()):
        holders = [s for s in states if backup_id in s.manifests]
        recorded = _records(first)
        for state in holders:
            if _records(state.manifests[backup_id]) != recorded:
                run.find(
                    state.tier.name,
                    series,
                    TIER_DISAGREEMENT,
                    f"backup {backup_id}: the manifest in {state.tier.name} records other "
                    f"objects, sizes or checksums than the one in {holders[0].tier.name}",
                )
        if first.finished_at >= run.cutoff:
            continue  # replication may still be copying it
        for state in states:
            if backup_id in state.manifests:
                continue
            if policy is not None and backup_id not in kept[state.tier.name]:
                continue
            run.find(
                state.tier.name,
                series,
                TIER_DISAGREEMENT,
                f"backup {backup_id} is in {', '.join(s.tier.name for s in holders)} but "
                f"not in {state.tier.name}"
                + (", whose retention keeps it" if policy is not None else ""),
            )
