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

Sample rule: each backup gets a fixed position ``u`` in [0, 1) from a SHA-256 of the seed
and its id.  Week ``w`` (whole weeks since Monday 1970-01-05, UTC) reads the backups whose
``u`` lies in ``[w * p, (w + 1) * p)`` modulo 1, with ``p = read_data_percent / 100``.  The
windows of ``ceil(1 / p)`` consecutive weeks tile [0, 1), so with the default 25% and a
weekly run every backup that is kept for four weekly runs (any month holds four) has had
every byte read once; backups kept for less (differentials, logs) are read with
probability ``p`` per run.  The same backups are read in every tier.

Request budget (S3 requests; a local folder does the same work without requests):

* one LIST per 1,000 keys under each series' folder, per tier (manifests, data and
  content share the listing);
* one GET per manifest (each is authenticated, so each is read once);
* for each object read by the sample: one HEAD and one GET;
* for S3 tiers, one ListMultipartUploads per 1,000 unfinished uploads of each series
  (at least one).

So 1,000 backups of one object each in one local tier, without data reads, cost
``ceil(2,000 / 1,000) + 1,000 = 1,002`` requests.  :attr:`VerifyReport.requests` counts
them as S3 would bill them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from backupflow.catalog import Catalog, CatalogEntry, manifests_prefix, series_prefix
from backupflow.errors import (
    BackupflowError,
    CatalogError,
    ForeignManifestError,
    IntegrityError,
    ObjectNotFoundError,
    ParameterError,
    StorageError,
)
from backupflow.models import Category, Manifest, StoredObject, utc
from backupflow.pipeline import open_verified, verify_stored
from backupflow.retention import RetentionPolicy, plan_retention
from backupflow.storage import Tier
from backupflow.storage.base import ObjectInfo
from backupflow.storage.s3 import S3Storage

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

#: Every byte is read once in four weekly runs (see the module's sample rule).
DEFAULT_READ_DATA_PERCENT = 25.0
#: Keys per LIST page (S3's ListObjectsV2 and ListMultipartUploads maximum).
LIST_PAGE = 1000

_EPOCH_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)
_ID = r"(?P<id>(?P<date>[0-9]{8})T[0-9]{6}Z-(?:full|diff|log)-[0-9a-f]{6})"
#: ``<YYYY-MM-DD>/<backup-id>.<role>[.zst|.gz][.age]``, the day being the id's own date.
_DATA_KEY = re.compile(
    r"^(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})/" + _ID + r"\.[a-z][a-z0-9_-]{0,31}"
    r"(?:\.zst|\.gz)?(?:\.age)?$"
)
#: ``content/<2 hex>/<sha256>[.zst|.gz][.age]``, the folder being the hash's first byte.
_CONTENT_KEY = re.compile(
    r"^content/(?P<fan>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})(?:\.zst|\.gz)?(?:\.age)?$"
)
#: The engine whose chains follow LSNs (``backupflow.engines.mssql``).
SQLSERVER = "sqlserver"
#: Manifests authenticated at once (each is one GET).
READ_WORKERS = 8

#: Kinds of finding (also the artifact's ``kind`` column).
FOREIGN_MANIFEST = "foreign-manifest"
UNREADABLE_MANIFEST = "unreadable-manifest"
MISSING_OBJECT = "missing-object"
WRONG_SIZE = "wrong-size"
DAMAGED_OBJECT = "damaged-object"
BROKEN_CHAIN = "broken-chain"
TIER_DISAGREEMENT = "tier-disagreement"
FOREIGN_OBJECT = "foreign-object"
ORPHAN = "orphan"
UNFINISHED_UPLOAD = "unfinished-upload"
UNREACHABLE = "unreachable"


class VerificationFailedError(BackupflowError):
    """``verify`` found at least one problem in the tiers."""


@dataclass(frozen=True)
class Series:
    """One series of backups: the database, or one file set."""

    category: Category
    name: str

    @property
    def label(self) -> str:
        return f"{self.category.value}/{self.name}"


@dataclass(frozen=True)
class Finding:
    """One problem, by tier and series; ``detail`` names the key or backup."""

    tier: str
    series: str
    kind: str
    detail: str


@dataclass
class TierSummary:
    """What one tier holds of one series, and what was read of it."""

    tier: str
    series: str
    backups: int = 0
    objects: int = 0
    sampled: int = 0
    bytes_read: int = 0
    ciphertext_only: int = 0


@dataclass
class VerifyReport:
    """The outcome of one verify run."""

    findings: list[Finding] = field(default_factory=list)
    summaries: list[TierSummary] = field(default_factory=list)
    requests: int = 0
    bytes_read: int = 0
    #: (tier, backup id) of every backup the sample read in full.
    sampled: list[tuple[str, str]] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def ok(self) -> bool:
        return not self.findings

    def for_series(self, label: str) -> list[Finding]:
        return [f for f in self.findings if f.series == label]

    def table(self, label: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The artifact's rows for one series: one summary row per tier, then the findings
        (at most ``limit`` of them; one last row counts the rest)."""
        rows: list[dict[str, Any]] = [
            {
                "tier": s.tier,
                "kind": "summary",
                "detail": (
                    f"{s.backups} authenticated backup(s), {s.objects} object(s) listed, "
                    f"{s.sampled} object(s) read in full ({s.bytes_read} bytes)"
                    + (
                        f", {s.ciphertext_only} checked as ciphertext only (no age identity here)"
                        if s.ciphertext_only
                        else ""
                    )
                ),
            }
            for s in self.summaries
            if s.series == label
        ]
        findings = self.for_series(label)
        rows += [{"tier": f.tier, "kind": f.kind, "detail": f.detail} for f in findings[:limit]]
        if len(findings) > limit:
            rows.append(
                {
                    "tier": "-",
                    "kind": "more",
                    "detail": f"{len(findings) - limit} more finding(s) are in the run's log",
                }
            )
        return rows


def list_pages(count: int) -> int:
    """LIST requests needed for ``count`` keys (an empty listing still costs one)."""
    return max(1, math.ceil(count / LIST_PAGE))


def sample_window(now: datetime, percent: float) -> tuple[float, float]:
    """This week's window ``[start, start + p)`` (modulo 1) of sample positions."""
    if not 0 <= percent <= 100 or math.isnan(percent):
        raise ParameterError(f"read_data_percent must be between 0 and 100, not {percent}.")
    share = percent / 100
    week = (utc(now) - _EPOCH_MONDAY).days // 7
    return ((week * share) % 1.0, share)


def _position(seed: str, backup_id: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{backup_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_sample(backup_id: str, window: tuple[float, float], seed: str = "") -> bool:
    """Whether this week's window reads ``backup_id``."""
    start, share = window
    if share >= 1:
        return True
    if share <= 0:
        return False
    return (_position(seed, backup_id) - start) % 1.0 < share


@dataclass
class _TierState:
    """What one tier holds of one series after its LIST and manifest reads."""

    tier: Tier
    manifests: dict[str, Manifest] = field(default_factory=dict)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)


class _Run:
    def __init__(
        self,
        report: VerifyReport,
        *,
        now: datetime,
        grace: timedelta,
        seed: str,
        chunk_bytes: int,
    ) -> None:
        self.report = report
        self.now = utc(now)
        self.cutoff = self.now - grace
        self.seed = seed
        self.chunk_bytes = chunk_bytes

    def find(self, tier: str, series: Series, kind: str, detail: str) -> None:
        self.report.findings.append(Finding(tier, series.label, kind, detail))

    # -- one tier -----------------------------------------------------------------------

    def tier(self, tier: Tier, series: Series) -> _TierState | None:
        storage = tier.storage
        prefix = series_prefix(series.category, series.name)
        summary = TierSummary(tier.name, series.label)
        try:
            infos = list(storage.list(prefix))
        except BackupflowError as exc:
            self.report.requests += 1
            self.find(tier.name, series, UNREACHABLE, f"{storage.name} could not be listed: {exc}")
            return None
        self.report.requests += list_pages(len(infos))
        self.report.summaries.append(summary)
        state = _TierState(tier)
        listed = {info.key: info for info in infos}
        data: list[ObjectInfo] = []
        content: list[ObjectInfo] = []
        mprefix = manifests_prefix(series.category, series.name)
        named: list[CatalogEntry] = []
        for info in infos:
            relative = info.key[len(prefix) :]
            if info.key.startswith(mprefix):
                entry = CatalogEntry.parse(info.key)
                if entry is None:
                    self.find(tier.name, series, FOREIGN_OBJECT, f"{storage.name}/{info.key}")
                else:
                    named.append(entry)
            elif (match := _DATA_KEY.match(relative)) and match["day"].replace("-", "") == match[
                "date"
            ]:
                data.append(info)
            elif (match := _CONTENT_KEY.match(relative)) and match["sha"][:2] == match["fan"]:
                content.append(info)
            else:
                self.find(tier.name, series, FOREIGN_OBJECT, f"{storage.name}/{info.key}")
        catalog = Catalog(storage, tier.keyring)

        def load(entry: CatalogEntry) -> Manifest | BackupflowError:
            try:
                return catalog.load(entry)
            except BackupflowError as exc:
                return exc

        # Every manifest name is read, even two claiming one backup id: a planted name never
        # hides the genuine manifest.
        entries = sorted(named, key=lambda e: (e.restore_point, e.id, e.key))
        self.report.requests += len(entries)
        with ThreadPoolExecutor(READ_WORKERS) as pool:
            loaded = list(pool.map(load, entries))
        for entry, result in zip(entries, loaded, strict=True):
            if isinstance(result, Manifest):
                state.manifests[entry.id] = result
                state.entries[entry.id] = entry
            elif isinstance(result, ObjectNotFoundError):
                continue  # pruned while listing
            elif isinstance(result, ForeignManifestError):
                self.find(tier.name, series, FOREIGN_MANIFEST, str(result))
            elif isinstance(result, CatalogError):
                self.find(tier.name, series, UNREADABLE_MANIFEST, str(result))
            else:
                self.find(tier.name, series, UNREACHABLE, f"{storage.name}/{entry.key}: {result}")
        summary.backups = len(state.manifests)
        summary.objects = len(data) + len(content)
        claimed: set[str] = set()
        for manifest in state.manifests.values():
            for record in manifest.objects:
                claimed.add(record.key)
                self._present(tier, series, manifest, record, listed)
        for info in data + content:
            if info.key not in claimed and info.modified < self.cutoff:
                self.find(
                    tier.name,
                    series,
                    ORPHAN,
                    f"{storage.name}/{info.key} ({info.size} bytes, "
                    f"{info.modified:%Y-%m-%d %H:%M} UTC) belongs to no authenticated backup",
                )
        self._chains(tier, series, state)
        self._sample(tier, series, state, listed, summary)
        self._uploads(tier, series)
        return state

    def _present(
        self,
        tier: Tier,
        series: Series,
        manifest: Manifest,
        record: StoredObject,
        listed: dict[str, ObjectInfo],
    ) -> None:
        info = listed.get(record.key)
        where = f"{tier.storage.name}/{record.key}"
        if info is None:
            self.find(
                tier.name, series, MISSING_OBJECT, f"{where} of backup {manifest.id} is missing"
            )
        elif info.size != record.size:
            self.find(
                tier.name,
                series,
                WRONG_SIZE,
                f"{where} of backup {manifest.id} is {info.size} bytes, its manifest says "
                f"{record.size}",
            )

    def _chains(self, tier: Tier, series: Series, state: _TierState) -> None:
        sqlserver = [m for m in state.manifests.values() if m.engine == SQLSERVER]
        if sqlserver:
            # SQL Server's own rules (LSNs, recovery fork) for the newest chain.
            from backupflow.engines.mssql.chain import select_chain

            try:
                select_chain(sorted(sqlserver, key=lambda m: m.restore_point), series.name, None)
            except BackupflowError as exc:
                self.find(tier.name, series, BROKEN_CHAIN, str(exc).rstrip("."))
        for manifest in state.manifests.values():
            needed = {("parent", manifest.parent_id), ("base", manifest.base_id)}
            for what, backup_id in sorted(needed, key=str):
                if backup_id and backup_id != manifest.id and backup_id not in state.manifests:
                    self.find(
                        tier.name,
                        series,
                        BROKEN_CHAIN,
                        f"backup {manifest.id} needs its {what} {backup_id}, which has no "
                        "authenticated manifest in this tier",
                    )

    def _sample(
        self,
        tier: Tier,
        series: Series,
        state: _TierState,
        listed: dict[str, ObjectInfo],
        summary: TierSummary,
    ) -> None:
        read: set[str] = set()
        for manifest in state.manifests.values():
            if not in_sample(manifest.id, self.report.window, self.seed):
                continue
            self.report.sampled.append((tier.name, manifest.id))
            for record in manifest.objects:
                info = listed.get(record.key)
                if record.key in read or info is None or info.size != record.size:
                    continue  # already read this run, or already reported
                read.add(record.key)
                self._read(tier, series, manifest, record, summary)

    def _read(
        self,
        tier: Tier,
        series: Series,
        manifest: Manifest,
        record: StoredObject,
        summary: TierSummary,
    ) -> None:
        keyring = tier.keyring
        where = f"{tier.storage.name}/{record.key}"
        encrypted = record.encryption is not None
        decryptable = not encrypted or bool(set(record.recipients) & set(keyring.identity_ids()))
        try:
            if decryptable:
                self.report.requests += 2  # HEAD (size) + GET
                with open_verified(
                    tier.storage, record, keyring=keyring, chunk_bytes=self.chunk_bytes
                ):
                    pass  # leaving the block reads, decrypts and hashes every byte
            else:
                self.report.requests += 1
                verify_stored(tier.storage, record, chunk_bytes=self.chunk_bytes)
                summary.ciphertext_only += 1
        except (IntegrityError, ObjectNotFoundError) as exc:
            self.find(tier.name, series, DAMAGED_OBJECT, f"{where} of backup {manifest.id}: {exc}")
        except StorageError as exc:
            self.find(tier.name, series, UNREACHABLE, f"{where} of backup {manifest.id}: {exc}")
        except BackupflowError as exc:  # e.g. a codec this backupflow does not know
            self.find(tier.name, series, DAMAGED_OBJECT, f"{where} of backup {manifest.id}: {exc}")
        summary.sampled += 1
        summary.bytes_read += record.size
        self.report.bytes_read += record.size

    def _uploads(self, tier: Tier, series: Series) -> None:
        s3 = tier.storage
        if not isinstance(s3, S3Storage):
            return
        prefix = s3.prefix + series_prefix(series.category, series.name)
        try:
            pages = s3.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=s3.bucket, Prefix=prefix
            )
            uploads: list[Any] = []
            for page in pages:
                self.report.requests += 1
                uploads += page.get("Uploads", [])
        except Exception as exc:  # botocore raises several kinds
            self.find(
                tier.name,
                series,
                UNREACHABLE,
                f"unfinished uploads of {tier.storage.name} could not be listed: "
                f"{type(exc).__name__}",
            )
            return
        for upload in uploads:
            initiated = upload.get("Initiated")
            if isinstance(initiated, datetime) and utc(initiated) >= self.cutoff:
                continue  # a backup may be writing it now
            self.find(
                tier.name,
                series,
                UNFINISHED_UPLOAD,
                f"s3://{s3.bucket}/{upload.get('Key', '?')} (upload started "
                f"{initiated:%Y-%m-%d %H:%M} UTC) was never completed"
                if isinstance(initiated, datetime)
                else f"s3://{s3.bucket}/{upload.get('Key', '?')} was never completed",
            )

    # -- across tiers -------------------------------------------------------------------

    def agreement(
        self,
        series: Series,
        states: Sequence[_TierState],
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
                kept[state.tier.name] = {b.id for b in plan_retention(unique, rules, self.now).kept}
        for backup_id, first in sorted(backups.items()):
            holders = [s for s in states if backup_id in s.manifests]
            recorded = _records(first)
            for state in holders:
                if _records(state.manifests[backup_id]) != recorded:
                    self.find(
                        state.tier.name,
                        series,
                        TIER_DISAGREEMENT,
                        f"backup {backup_id}: the manifest in {state.tier.name} records other "
                        f"objects, sizes or checksums than the one in {holders[0].tier.name}",
                    )
            if first.finished_at >= self.cutoff:
                continue  # replication may still be copying it
            for state in states:
                if backup_id in state.manifests:
                    continue
                if policy is not None and backup_id not in kept[state.tier.name]:
                    continue
                self.find(
                    state.tier.name,
                    series,
                    TIER_DISAGREEMENT,
                    f"backup {backup_id} is in {', '.join(s.tier.name for s in holders)} but "
                    f"not in {state.tier.name}"
                    + (", whose retention keeps it" if policy is not None else ""),
                )


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
    run = _Run(report, now=now, grace=grace, seed=seed, chunk_bytes=chunk_bytes)
    for one in series:
        states = [s for tier in tiers if (s := run.tier(tier, one)) is not None]
        run.agreement(one, states, policy)
    return report
