"""Adopting backups written before manifests were signed (format 1): a one-shot migration
that whoever can write to a bucket cannot abuse.

An unsigned manifest and its objects say whatever their writer wants, so adopting trusts
nothing in them but what the repository itself vouches for:

* **Only what is older than the repository's keys.**  ``backupflow key init`` leaves a
  signed key record in every tier (:mod:`backupflow.rekey`); the earliest one a trusted key
  signed is the cut-off.  A manifest qualifies only when its restore point, and the time the
  tier stored it and each of its objects, are all earlier.  (A bucket cannot back-date
  S3's ``LastModified``; a folder's times are only as good as the host that keeps it.)
* **Never beside native backups.**  A series that already holds a manifest signed when it
  was written (not adopted) refuses adopt: every backup since the keys exist was signed, so
  an unsigned one there was planted.
* **The operator confirms the exact list.**  A dry run prints every qualifying manifest and a
  digest of the list; only a run given that digest adopts, and only if the list is still
  exactly the same.
* **Adopted manifests say so**: ``adopted`` records when, by which key, the confirmed digest
  and the cut-off.

Each qualifying backup's objects are read in full and checked against its manifest's sizes
and SHA-256 before it is signed; its objects stay as they are (unencrypted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backupflow.catalog import Catalog, read_unsigned
from backupflow.envelope import is_envelope
from backupflow.errors import BackupflowError, CatalogError
from backupflow.keys import Keyring
from backupflow.models import Adoption, Category, Manifest, iso
from backupflow.pipeline import open_verified
from backupflow.rekey import adoption_cutoff
from backupflow.storage import Tier
from backupflow.storage.base import get_bytes

__all__ = ["AdoptPlan", "AdoptReport", "adopt_series", "plan_adoption"]


@dataclass
class AdoptReport:
    """What adopting one series did in one tier (``tier/backup-id`` each)."""

    tier: str
    series: str
    adopted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Candidate:
    tier: Tier
    manifest: Manifest
    digest: str  # SHA-256 of the unsigned manifest's bytes

    @property
    def line(self) -> str:
        return f"{self.tier.name}/{self.manifest.id} {self.digest}"


@dataclass
class AdoptPlan:
    """What a dry run found: the manifests that qualify, the list's digest, and a report per
    tier (what was refused, and why)."""

    series: str
    cutoff: datetime | None
    candidates: list[_Candidate] = field(default_factory=list)
    reports: list[AdoptReport] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return sorted(c.line for c in self.candidates)

    @property
    def digest(self) -> str:
        """What the operator confirms: 80 bits of the SHA-256 of the sorted list."""
        text = "\n".join([self.series, *self.lines])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _check_objects(tier: Tier, manifest: Manifest, chunk_bytes: int) -> None:
    """Read every object in full; its size and both SHA-256 must be the manifest's."""
    for obj in manifest.objects:
        if obj.encryption is not None:
            raise BackupflowError(f"{obj.key} claims an encryption a format-1 backup never had.")
        with open_verified(tier.storage, obj, chunk_bytes=chunk_bytes) as handle:
            while handle.read(chunk_bytes):
                pass


def _cutoff(tiers: Sequence[Tier], keyring: Keyring) -> datetime | None:
    found = []
    for tier in tiers:
        try:
            moment = adoption_cutoff(tier.storage, keyring)
        except BackupflowError:
            continue
        if moment is not None:
            found.append(moment)
    return min(found, default=None)


def plan_adoption(tiers: Sequence[Tier], category: str, name: str, keyring: Keyring) -> AdoptPlan:
    """The dry run: which unsigned manifests of one series qualify (see the module)."""
    series = Category(category)
    plan = AdoptPlan(f"{series.value}/{name}", _cutoff(tiers, keyring))
    for tier in tiers:
        report = AdoptReport(tier.name, plan.series)
        plan.reports.append(report)
        _plan_tier(plan, report, tier, series, name, keyring)
    if plan.cutoff is None:
        for report in plan.reports:
            report.problems.insert(
                0,
                "no tier holds a key record of this repository that a trusted key signed, so "
                "nothing can be adopted (`backupflow key init` writes it).",
            )
        plan.candidates.clear()
    return plan


def _plan_tier(
    plan: AdoptPlan, report: AdoptReport, tier: Tier, series: Category, name: str, ring: Keyring
) -> None:
    catalog = Catalog(tier.storage, ring)
    try:
        entries, _strays = catalog.listing(series, name)
        times = {info.key: info.modified for info in tier.storage.list(f"{series.value}/{name}/")}
    except BackupflowError as exc:
        report.problems.append(f"tier {tier.name} could not be listed: {exc}")
        return
    found: list[_Candidate] = []
    refused: list[str] = []
    for entry in entries:
        where = f"{tier.name}/{entry.id}"
        source = f"{tier.storage.name}/{entry.key}"
        try:
            raw = get_bytes(tier.storage, entry.key)
            if is_envelope(raw):
                manifest = catalog.load(entry)
                if manifest.adopted is None:
                    report.problems.append(
                        f"{plan.series} in tier {tier.name} already holds backups signed when "
                        f"they were written ({entry.id}); an unsigned manifest there was not "
                        "written by backupflow, and nothing in it is adopted."
                    )
                    return
                report.skipped.append(f"{where}: already adopted")
                continue
            manifest = read_unsigned(raw, entry.key, source)
        except BackupflowError as exc:
            refused.append(f"{where} not adopted: {exc}")
            continue
        late = _too_late(manifest, entry.key, times, plan.cutoff)
        if late:
            refused.append(f"{where} not adopted: {late}")
            continue
        found.append(_Candidate(tier, manifest, hashlib.sha256(raw).hexdigest()))
    report.problems += refused
    plan.candidates += found


def _too_late(
    manifest: Manifest, key: str, times: dict[str, datetime], cutoff: datetime | None
) -> str | None:
    """Why a manifest cannot predate the repository's keys, or None when it does."""
    if cutoff is None:
        return "there is no key record to compare it with"
    after = f"after this repository's first key ({iso(cutoff)}), so it was not written by an "
    if manifest.restore_point >= cutoff or manifest.finished_at >= cutoff:
        return f"its restore point is {after}earlier backupflow"
    for stored in (key, *(obj.key for obj in manifest.objects)):
        moment = times.get(stored)
        if moment is None:
            return f"{stored} is missing"
        if moment >= cutoff:
            return f"{stored} was stored {after}earlier backupflow"
    return None


def adopt_series(
    tiers: Sequence[Tier],
    category: str,
    name: str,
    keyring: Keyring,
    *,
    confirm: str,
    chunk_bytes: int = 1 << 20,
    on_adopted: Callable[[str, Manifest], None] | None = None,
    now: datetime | None = None,
) -> AdoptPlan:
    """Sign the manifests of the dry run whose digest is ``confirm`` (the list must be the
    same now), each after a full read of its objects; the plan, with a report per tier."""
    signer = keyring.require_signer()
    plan = plan_adoption(tiers, category, name, keyring)
    if plan.cutoff is None or not plan.candidates:
        return plan
    if confirm != plan.digest:
        raise CatalogError(
            f"the list of backups to adopt is not the one confirmed (its digest is now "
            f"{plan.digest}); run `backupflow adopt` without --confirm and check the list again."
        )
    adoption = Adoption(
        at=now or datetime.now(UTC), by=signer.key_id, confirmed=plan.digest, cutoff=plan.cutoff
    )
    reports = {r.tier: r for r in plan.reports}
    for candidate in plan.candidates:
        tier, report = candidate.tier, reports[candidate.tier.name]
        where = f"{tier.name}/{candidate.manifest.id}"
        try:
            _check_objects(tier, candidate.manifest, chunk_bytes)
            signed = candidate.manifest.model_copy(update={"adopted": adoption})
            Catalog(tier.storage, keyring).write(signed)
        except BackupflowError as exc:
            report.problems.append(f"{where} not adopted: {exc}")
            continue
        report.adopted.append(where)
        if on_adopted is not None:
            on_adopted(tier.name, signed)
    return plan
