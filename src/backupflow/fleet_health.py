"""Fleet health: every site's recovery point now, worst first, at two requests per series
and tier.

For each site, each series (its databases, its file sets) and each enabled tier, it makes
one LIST of the series' manifests folder (its names carry each backup's restore point, kind
and parent) and one GET of the newest manifest, which is authenticated with the site's own
verify keys: the recovery point shown is a signed one, never a name someone could plant.
The weekly ``verify`` reads everything else.

A site's row adds what only the orchestrator knows, given by the caller: its late runs,
whether a worker polls its queue, and its latest restore test (from which its predicted
restore time comes: the current chain's size at the throughput that test measured).
:func:`assess_site` is pure; :func:`survey_series` does the two requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from backupflow.catalog import Catalog, CatalogEntry
from backupflow.errors import BackupflowError
from backupflow.models import BackupKind, Category
from backupflow.storage import Tier

__all__ = [
    "SeriesSurvey",
    "SiteFacts",
    "SiteHealth",
    "SiteState",
    "assess_site",
    "survey_series",
]


class SiteState(Enum):
    """Worst first."""

    UNREACHABLE = "tier unreachable"
    NO_WORKER = "no worker"
    LATE = "late runs"
    STALE = "stale"
    TEST_FAILED = "restore test failed"
    UNTESTED = "never restore-tested"
    OK = "ok"


_RANK = {state: index for index, state in enumerate(SiteState)}


@dataclass(frozen=True)
class SeriesSurvey:
    """One series in one tier: its newest authenticated restore point and what its chain
    holds (``None`` newest: none, or the tier could not be read: ``error`` says)."""

    series: str
    tier: str
    newest: datetime | None = None
    newest_bytes: int = 0
    links_since_full: int = 0
    error: str = ""
    requests: int = 0


def survey_series(tier: Tier, category: Category, name: str) -> SeriesSurvey:
    """LIST the series' manifests in ``tier`` and GET (and authenticate) the newest."""
    label = f"{category.value}/{name}"
    catalog = Catalog(tier.storage, tier.keyring)
    try:
        entries, _strays = catalog.listing(category, name)
    except BackupflowError as exc:
        return SeriesSurvey(label, tier.name, error=str(exc), requests=1)
    if not entries:
        return SeriesSurvey(label, tier.name, requests=1)
    newest = entries[-1]
    try:
        manifest = catalog.load(newest)
    except BackupflowError as exc:
        return SeriesSurvey(
            label, tier.name, error=f"its newest manifest is not trusted: {exc}", requests=2
        )
    return SeriesSurvey(
        label,
        tier.name,
        newest=manifest.restore_point,
        newest_bytes=sum(o.size for o in manifest.objects),
        links_since_full=_links_since_full(entries, newest),
        requests=2,
    )


def _links_since_full(entries: Sequence[CatalogEntry], newest: CatalogEntry) -> int:
    """How many backups after the full the newest one's chain holds (by the names' parent
    ids); 0 for a full or a file set's backup."""
    by_id = {e.id: e for e in entries}
    links, entry = 0, newest
    while entry.kind is not BackupKind.FULL and entry.parent_id in by_id and links < 10_000:
        links += 1
        entry = by_id[entry.parent_id]
    return links


@dataclass(frozen=True)
class SiteFacts:
    """What the orchestrator says of a site."""

    late_runs: int = 0
    worker_polled: datetime | None = None
    test_result: str | None = None  # the latest restore test: passed / failed
    test_bytes: int = 0
    test_seconds: float = 0.0
    test_when: str = ""


@dataclass(frozen=True)
class SiteHealth:
    """One row of the fleet's health artifact."""

    site: str
    state: SiteState
    recovery_point: datetime | None
    recovery_age: timedelta | None
    predicted_restore: timedelta | None
    detail: str
    problems: list[str] = field(default_factory=list)

    def rank(self) -> tuple[int, float]:
        age = self.recovery_age.total_seconds() if self.recovery_age is not None else 1e18
        return (_RANK[self.state], -age)


def assess_site(
    site: str,
    surveys: Sequence[SeriesSurvey],
    facts: SiteFacts,
    *,
    now: datetime,
    allowed: Mapping[str, timedelta],
    poll_allowed: timedelta,
    database_series: Sequence[str],
) -> SiteHealth:
    """The site's row.  Its recovery point now is the oldest of its databases' newest
    restore points over every tier that answered (any tier may be the one left after a
    disaster); its state is the worst of its findings: an unreadable tier, no worker polling
    its queue, late runs, a series older than its schedule allows (``allowed``, by series),
    a failed or missing restore test."""
    problems: list[str] = []
    findings: list[SiteState] = []
    for survey in surveys:
        if survey.error:
            findings.append(SiteState.UNREACHABLE)
            problems.append(f"{survey.series} in {survey.tier}: {survey.error}")
        elif survey.newest is None:
            findings.append(SiteState.STALE)
            problems.append(f"{survey.series} in {survey.tier}: no backup")
        elif now - survey.newest > allowed.get(survey.series, timedelta.max):
            findings.append(SiteState.STALE)
            problems.append(
                f"{survey.series} in {survey.tier}: newest {_age(now - survey.newest)} old "
                f"(allowed {_age(allowed[survey.series])})"
            )
    point: datetime | None = None
    predicted: timedelta | None = None
    for series in database_series:
        held = [s for s in surveys if s.series == series and s.newest is not None]
        if not held:
            continue
        oldest = min(s.newest for s in held if s.newest is not None)
        point = oldest if point is None else min(point, oldest)
        estimate = _predict(max(held, key=lambda s: s.newest or now), facts)
        if estimate is not None:
            predicted = estimate if predicted is None else max(predicted, estimate)
    if facts.late_runs:
        findings.append(SiteState.LATE)
        problems.append(f"{facts.late_runs} late run(s)")
    if facts.worker_polled is None or now - facts.worker_polled > poll_allowed:
        findings.append(SiteState.NO_WORKER)
        problems.append(
            "no worker polls its queue"
            + (f" (last poll {_age(now - facts.worker_polled)} ago)" if facts.worker_polled else "")
        )
    if facts.test_result is None:
        findings.append(SiteState.UNTESTED)
    elif facts.test_result != "passed":
        findings.append(SiteState.TEST_FAILED)
        problems.append(f"its latest restore test {facts.test_result} ({facts.test_when})")
    state = min(findings, key=lambda s: _RANK[s]) if findings else SiteState.OK
    age = now - point if point is not None else None
    return SiteHealth(site, state, point, age, predicted, "; ".join(problems), problems)


def _predict(survey: SeriesSurvey, facts: SiteFacts) -> timedelta | None:
    """The chain's size now (the full the last restore test read, plus the newest backup's
    size for each link since) at the throughput that test measured."""
    if facts.test_result != "passed" or facts.test_seconds <= 0 or facts.test_bytes <= 0:
        return None
    rate = facts.test_bytes / facts.test_seconds
    size = facts.test_bytes + survey.newest_bytes * survey.links_since_full
    return timedelta(seconds=size / rate)


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
