"""Flows run under ``prefect_test_harness``: one temporary Prefect server per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOGGING_LEVEL,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness

# The harness server is a subprocess: keep it quiet and local.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """The harness server's API URL (subprocesses are pointed at it too)."""
    with (
        prefect_test_harness(server_startup_timeout=90),
        temporary_settings(
            {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_LEVEL: "WARNING"}
        ),
    ):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness did not set an API URL"
        yield url
