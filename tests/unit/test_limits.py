"""Holding a global concurrency limit when the Prefect API is busy: the acquisition is asked
again (the run waits, it is not failed), the work is never run twice, a missing limit is one
sentence, and a release the busy API misses does not fail finished work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

import tasks.limits as limits
from backupflow.errors import ConfigError


class FakeLimits:
    def __init__(self, failures: list[str], release: str | None = None) -> None:
        self.failures, self.release = failures, release
        self.acquired = self.released = 0
        self.options: dict[str, Any] = {}

    @contextmanager
    def concurrency(self, name: str, **options: Any) -> Iterator[None]:
        self.options = options
        if self.failures:
            message = self.failures.pop(0)
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire concurrency slots on [{name!r}]: {message}"
            )
        self.acquired += 1
        yield
        self.released += 1
        if self.release:
            raise ConcurrencySlotAcquisitionError(self.release)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLimits]:
    import prefect.concurrency.sync

    holder = FakeLimits([])
    monkeypatch.setattr(prefect.concurrency.sync, "concurrency", holder.concurrency)
    monkeypatch.setattr(limits.time, "sleep", lambda seconds: None)
    yield holder


def test_a_busy_api_is_asked_again_and_the_work_runs_once(fake: FakeLimits) -> None:
    fake.failures = ["503 Service Unavailable", "Read timed out"]
    ran = []
    with limits.hold("backupflow-database-a"):
        ran.append(1)
    assert ran == [1] and fake.acquired == 1 and fake.released == 1
    assert fake.options["strict"] is True
    assert fake.options["raise_on_lease_renewal_failure"] is False


def test_a_busy_api_past_the_patience_fails_the_acquisition(fake: FakeLimits) -> None:
    fake.failures = ["503 Service Unavailable"] * 50
    with pytest.raises(ConcurrencySlotAcquisitionError), limits.hold("x", patience=0.0):
        pytest.fail("the work ran without its slot")


def test_a_missing_limit_is_one_sentence_and_not_retried(fake: FakeLimits) -> None:
    fake.failures = ["Concurrency limits ['x'] must be created before acquiring slots"]
    wanted = "does not exist on the Prefect API; run the bootstrap"
    with pytest.raises(ConfigError, match=wanted), limits.hold("x"):
        pytest.fail("the work ran without its slot")


def test_an_error_in_the_work_is_never_retried(fake: FakeLimits) -> None:
    calls = []
    with pytest.raises(ValueError), limits.hold("x"):
        calls.append(1)
        raise ValueError("the work failed")
    assert calls == [1] and fake.acquired == 1


def test_a_release_the_busy_api_missed_does_not_fail_finished_work(fake: FakeLimits) -> None:
    fake.release = "503 Service Unavailable"
    with limits.hold("x"):
        pass
    fake.release = "400 Bad Request: something else"
    with pytest.raises(ConcurrencySlotAcquisitionError), limits.hold("x"):
        pass
