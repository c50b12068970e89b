"""The checks of one series in one tier: its LIST, its manifests, its objects' presence and
size, its chains, the sampled full reads and unfinished S3 uploads (see
:mod:`backupflow.verify`).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from backupflow.catalog import Catalog, CatalogEntry, manifests_prefix, series_prefix
from backupflow.engines.registry import ENGINES
from backupflow.errors import (
    BackupflowError,
    CatalogError,
    ForeignManifestError,
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
)
from backupflow.models import Manifest, StoredObject, utc
from backupflow.pipeline import open_verified, verify_stored
from backupflow.storage import Tier
from backupflow.storage.base import ObjectInfo
from backupflow.verify.report import (
    BROKEN_CHAIN,
    DAMAGED_OBJECT,
    FOREIGN_MANIFEST,
    FOREIGN_OBJECT,
    MISSING_OBJECT,
    ORPHAN,
    UNFINISHED_UPLOAD,
    UNREACHABLE,
    UNREADABLE_MANIFEST,
    WRONG_SIZE,
    Finding,
    Series,
    TierSummary,
    VerifyReport,
    in_sample,
    list_pages,
)

__all__ = ["Run", "TierState"]

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
#: ``wal/<system identifier>/<WAL file name>`` then its push id and the pipeline's extensions
#: (the file) or
#: ``.rec`` (its signed archive record): PostgreSQL's archived WAL, written by wal-push.
_WAL_KEY = re.compile(
    r"^wal/[1-9][0-9]{0,19}/[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?"
    r"|\.history)(?:(?:\.p[0-9a-f]{16})?(?:\.zst|\.gz)?(?:\.age)?|\.rec)$"
)
#: Manifests authenticated at once (each is one GET).
READ_WORKERS = 8


@dataclass
class TierState:
    """What one tier holds of one series after its LIST and manifest reads."""

    tier: Tier
    manifests: dict[str, Manifest] = field(default_factory=dict)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)


class Run:
    """One verify run: its report, its clock and its sample seed."""

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

    def tier(self, tier: Tier, series: Series) -> TierState | None:
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
        state = TierState(tier)
        listed = {info.key: info for info in infos}
        data: list[ObjectInfo] = []
        content: list[ObjectInfo] = []
        wal = 0
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
            elif _WAL_KEY.match(relative):
                # Archived WAL: checked through the log backups that list it; WAL archived
                # since the last log backup is listed by none yet, and is no orphan.
                wal += 1
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
        summary.objects = len(data) + len(content) + wal
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

    def _chains(self, tier: Tier, series: Series, state: TierState) -> None:
        for spec in ENGINES.values():  # each engine's own chain rules (LSNs, WAL, ...)
            mine = [m for m in state.manifests.values() if m.engine == spec.name]
            if mine and spec.check_chains is not None:
                for problem in spec.check_chains(mine, series.name):
                    self.find(tier.name, series, BROKEN_CHAIN, problem)
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
        state: TierState,
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
        if not tier.storage.leaves_unfinished:
            return
        try:
            self.report.requests += 1
            unfinished = tier.storage.unfinished_writes(series_prefix(series.category, series.name))
        except BackupflowError as exc:
            self.find(
                tier.name,
                series,
                UNREACHABLE,
                f"unfinished uploads of {tier.storage.name} could not be listed: {exc}",
            )
            return
        for write in unfinished:
            if write.started is not None and utc(write.started) >= self.cutoff:
                continue  # a backup may be writing it now
            self.find(
                tier.name,
                series,
                UNFINISHED_UPLOAD,
                f"{write.where} (upload started {write.started:%Y-%m-%d %H:%M} UTC) was "
                "never completed"
                if write.started is not None
                else f"{write.where} was never completed",
            )
