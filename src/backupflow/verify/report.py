"""What a verify run reports (findings by tier and series, a summary per tier), and which
backups its sample reads.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backupflow.errors import BackupflowError, ParameterError
from backupflow.models import utc
from backupflow.series import Series

__all__ = [
    "BROKEN_CHAIN",
    "DAMAGED_OBJECT",
    "DEFAULT_READ_DATA_PERCENT",
    "FOREIGN_MANIFEST",
    "FOREIGN_OBJECT",
    "LIST_PAGE",
    "MISSING_OBJECT",
    "ORPHAN",
    "TIER_DISAGREEMENT",
    "UNFINISHED_UPLOAD",
    "UNREACHABLE",
    "UNREADABLE_MANIFEST",
    "WRONG_SIZE",
    "Finding",
    "Series",
    "TierSummary",
    "VerificationFailedError",
    "VerifyReport",
    "in_sample",
    "list_pages",
    "sample_window",
]

#: Every byte is read once in four weekly runs (see the module's sample rule).
DEFAULT_READ_DATA_PERCENT = 25.0
#: Keys per LIST page (S3's ListObjectsV2 and ListMultipartUploads maximum).
LIST_PAGE = 1000

_EPOCH_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)

_EPOCH_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)

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
