"""Adopting backups written before manifests were signed (format 1), never silently.

``backupflow adopt`` reads every object of every unsigned manifest of a series in full,
checks its stored and plaintext SHA-256 against that manifest, and only then signs the
manifest once (format 2; its objects stay as they are, unencrypted: ``encryption=None``).
A manifest that is not exactly what an earlier backupflow wrote (keys not its own, a
damaged or changed object) is not adopted and is reported.  Adopting is the operator's
explicit statement that the unsigned backups in the tiers are theirs: run it once, right
after upgrading, before anyone could have planted an unsigned manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backupflow.catalog import Catalog, read_unsigned
from backupflow.envelope import is_envelope
from backupflow.errors import BackupflowError, ObjectNotFoundError
from backupflow.keys import Keyring
from backupflow.models import Category, Manifest
from backupflow.pipeline import open_verified
from backupflow.storage import Tier
from backupflow.storage.base import get_bytes

__all__ = ["AdoptReport", "adopt_series"]


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


def _check_objects(tier: Tier, manifest: Manifest, chunk_bytes: int) -> None:
    """Read every object in full; its size and both SHA-256 must be the manifest's."""
    for obj in manifest.objects:
        if obj.encryption is not None:
            raise BackupflowError(f"{obj.key} claims an encryption a format-1 backup never had.")
        with open_verified(tier.storage, obj, chunk_bytes=chunk_bytes) as handle:
            while handle.read(chunk_bytes):
                pass


def adopt_series(
    tiers: Sequence[Tier],
    category: str,
    name: str,
    keyring: Keyring,
    *,
    chunk_bytes: int = 1 << 20,
    on_adopted: Callable[[str, Manifest], None] | None = None,
) -> list[AdoptReport]:
    """Sign every unsigned (format 1) manifest of one series whose objects all pass a full
    SHA-256 read; one report per tier.  ``on_adopted(tier, manifest)`` is called for each
    (the flow logs it)."""
    keyring.require_signer()
    series = Category(category)
    reports = []
    for tier in tiers:
        report = AdoptReport(tier.name, f"{series.value}/{name}")
        reports.append(report)
        catalog = Catalog(tier.storage, keyring)
        try:
            entries, _strays = catalog.listing(series, name)
        except BackupflowError as exc:
            report.problems.append(f"tier {tier.name} could not be listed: {exc}")
            continue
        for entry in entries:
            where = f"{tier.name}/{entry.id}"
            source = f"{tier.storage.name}/{entry.key}"
            try:
                raw = get_bytes(tier.storage, entry.key)
                if is_envelope(raw):
                    catalog.load(entry)  # signed by a trusted key, or reported below
                    report.skipped.append(f"{where}: already signed")
                    continue
                manifest = read_unsigned(raw, entry.key, source)
                _check_objects(tier, manifest, chunk_bytes)
                catalog.write(manifest)
            except ObjectNotFoundError as exc:
                report.problems.append(f"{where} not adopted: {exc}")
                continue
            except BackupflowError as exc:
                report.problems.append(f"{where} not adopted: {exc}")
                continue
            report.adopted.append(where)
            if on_adopted is not None:
                on_adopted(tier.name, manifest)
    return reports
