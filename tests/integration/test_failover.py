"""Class 11 (failover): Route 53 through moto, the health probe against a local HTTP server.

A misspelt record, a record of another type, a hostile standby address or a record changed
behind our back must leave the hosted zone exactly as it was; the probe speaks http(s) only.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backupflow.config import FailoverSettings
from backupflow.errors import ConfigError
from backupflow.failover import (
    DnsChange,
    FailoverError,
    checked_settings,
    current_record,
    probe,
    switch_dns,
)

PRIMARY_IP, STANDBY_IP, OTHER_IP = "192.0.2.10", "198.51.100.20", "203.0.113.7"
RECORD = "api.workload.example."


def _upsert(client: Any, zone: str, value: str, name: str = RECORD, kind: str = "A") -> None:
    client.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": kind,
                        "TTL": 60,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
            ]
        },
    )


@pytest.fixture
def route53(aws_env: None) -> Iterator[tuple[Any, str]]:
    """A hosted zone whose only application record is ``api`` A -> the primary."""
    with mock_aws():
        client = boto3.client("route53")
        zone = client.create_hosted_zone(Name="workload.example.", CallerReference="t")
        zone_id = zone["HostedZone"]["Id"].split("/")[-1]
        _upsert(client, zone_id, PRIMARY_IP)
        yield client, zone_id


def _zone(client: Any, zone: str) -> list[tuple[str, str, list[str]]]:
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return sorted(
        (s["Name"], s["Type"], [r["Value"] for r in s.get("ResourceRecords", [])])
        for s in sets
        if s["Type"] not in ("NS", "SOA")
    )


def _settings(zone: str, **changes: Any) -> FailoverSettings:
    values: dict[str, Any] = {
        "hosted_zone_id": zone,
        "record_name": "api.workload.example",
        "standby_address": STANDBY_IP,
        "change_timeout_seconds": 5,
        **changes,
    }
    return FailoverSettings(**values)


def test_the_switch_points_the_record_at_the_standby(route53: tuple[Any, str]) -> None:
    client, zone = route53
    change = current_record(client, _settings(zone))
    assert (change.before, change.after) == ([PRIMARY_IP], STANDBY_IP)
    switch_dns(client, change, 5)
    assert _zone(client, zone) == [(RECORD, "A", [STANDBY_IP])]


@pytest.mark.parametrize(
    "changes",
    [
        {"record_name": "apl.workload.example"},  # a typo
        {"record_name": "api.workload.example.com"},
        {"record_name": "workload.example"},
        {"record_type": "AAAA", "standby_address": "2001:db8::20"},  # wrong type
        {"record_type": "CNAME", "standby_address": "standby.workload.example"},
    ],
    ids=["typo", "other-domain", "zone-apex", "aaaa", "cname"],
)
def test_a_record_that_does_not_exist_is_refused_and_nothing_changes(
    route53: tuple[Any, str], changes: dict[str, Any]
) -> None:
    client, zone = route53
    before = _zone(client, zone)
    with pytest.raises(FailoverError, match=r"has no .* record named") as caught:
        current_record(client, _settings(zone, **changes))
    assert "CREATE_RECORD" in str(caught.value) and "\n" not in str(caught.value)
    assert _zone(client, zone) == before


def test_create_record_is_the_explicit_way_to_make_a_new_record(
    route53: tuple[Any, str],
) -> None:
    client, zone = route53
    change = current_record(
        client, _settings(zone, record_name="new.workload.example", create_record=True)
    )
    assert change.before == [] and change.existing is None
    switch_dns(client, change, 5)
    assert _zone(client, zone) == [
        (RECORD, "A", [PRIMARY_IP]),
        ("new.workload.example.", "A", [STANDBY_IP]),
    ]


class _Spy:
    """Forwards to the real (moto) client and keeps every change batch sent."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.batches: list[dict[str, Any]] = []

    def change_resource_record_sets(self, **kwargs: Any) -> Any:
        self.batches.append(kwargs["ChangeBatch"])
        return self.client.change_resource_record_sets(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_the_switch_deletes_exactly_the_record_it_read_in_the_same_batch(
    route53: tuple[Any, str],
) -> None:
    """Route 53 applies a batch atomically and refuses a DELETE that does not match the
    current record, so a record changed or removed since it was read fails the switch.
    (moto accepts any DELETE of values the record ever had, so the batch itself is checked.)"""
    client, zone = route53
    spy = _Spy(client)
    change = current_record(spy, _settings(zone))
    switch_dns(spy, change, 5)
    [batch] = spy.batches
    assert [c["Action"] for c in batch["Changes"]] == ["DELETE", "CREATE"]
    assert batch["Changes"][0]["ResourceRecordSet"] == {
        "Name": RECORD,
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": PRIMARY_IP}],
    }
    assert batch["Changes"][1]["ResourceRecordSet"]["ResourceRecords"] == [{"Value": STANDBY_IP}]


def test_a_refused_batch_is_one_sentence_saying_the_record_is_unchanged(
    route53: tuple[Any, str],
) -> None:
    from botocore.exceptions import ClientError

    client, zone = route53
    change = current_record(client, _settings(zone))

    class Refusing(_Spy):
        def change_resource_record_sets(self, **kwargs: Any) -> Any:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidChangeBatch",
                        "Message": "[Tried to delete resource record set [name='api', "
                        "type='A'] but the values provided do not match the current values]",
                    }
                },
                "ChangeResourceRecordSets",
            )

    with pytest.raises(FailoverError, match="InvalidChangeBatch") as caught:
        switch_dns(Refusing(client), change, 5)
    assert "so the record is unchanged" in str(caught.value) and "\n" not in str(caught.value)
    assert _zone(client, zone) == [(RECORD, "A", [PRIMARY_IP])]


@pytest.mark.parametrize(
    ("kind", "address"),
    [
        ("A", "not-an-ip;x"),
        ("A", "198.51.100.20; rm -rf /"),
        ("A", "2001:db8::20"),
        ("A", "198.51.100.256"),
        ("AAAA", STANDBY_IP),
        ("CNAME", "evil host.example"),
        ("CNAME", "a..b.example"),
        ("CNAME", "standby.example\n"),
    ],
)
def test_a_hostile_standby_address_is_refused_before_route53_is_called(
    route53: tuple[Any, str], kind: str, address: str
) -> None:
    client, zone = route53
    before = _zone(client, zone)
    read = current_record(client, _settings(zone))
    # A change built by hand, as settings made with model_copy would give it.
    change = DnsChange(zone, RECORD, kind, read.before, address, 60, read.existing)
    with pytest.raises(FailoverError, match="refused before it was sent"):
        switch_dns(client, change, 5)
    assert _zone(client, zone) == before


def test_switch_refuses_to_create_unless_creation_was_allowed(route53: tuple[Any, str]) -> None:
    client, zone = route53
    change = DnsChange(zone, "typo.workload.example.", "A", [], STANDBY_IP, 60)
    with pytest.raises(FailoverError, match="does not exist and creating it is off"):
        switch_dns(client, change, 5)
    assert _zone(client, zone) == [(RECORD, "A", [PRIMARY_IP])]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"standby_address": "not-an-ip;x"}, "not an IPv4 address"),
        ({"record_type": "AAAA"}, "not an IPv6 address"),
        ({"record_type": "CNAME", "standby_address": "bad name"}, "not a DNS name"),
        ({"health_url": "file:///etc/passwd"}, "BACKUPFLOW_FAILOVER__HEALTH_URL"),
        ({"health_url": "ftp://standby/health"}, "http:// or https://"),
        ({"record_name": "api;workload"}, "BACKUPFLOW_FAILOVER__RECORD_NAME"),
    ],
)
def test_settings_that_skipped_validation_are_checked_again(
    changes: dict[str, Any], fragment: str
) -> None:
    bypassed = _settings("Z1").model_copy(update=changes)  # model_copy does not validate
    with pytest.raises(ConfigError, match="invalid failover setting") as caught:
        checked_settings(bypassed)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_valid_settings_pass_the_second_check() -> None:
    settings = _settings("Z1", health_url="https://standby.example/health")
    assert checked_settings(settings) == settings


# -- the health probe ----------------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A local HTTP server: ``/ok`` answers 200, ``/down`` 503, ``/to?url`` redirects."""
    state: dict[str, Any] = {"hits": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"].append(self.path)
            if self.path.startswith("/to?"):
                self.send_response(302)
                self.send_header("Location", self.path[4:])
            else:
                self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    secret = tmp_path / "secret.txt"
    secret.write_text("must not be read")
    state["secret"] = secret
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "ftp://127.0.0.1/health",
        "data:text/plain,healthy",
        "javascript:alert(1)",
        "http:///no-host",
        "/health",
        "",
    ],
)
def test_the_probe_refuses_anything_but_http(url: str) -> None:
    healthy, answer = probe(url, attempts=3, interval=0)
    assert not healthy
    assert answer.startswith("refused:") and "http://" in answer


def test_the_probe_answers_healthy_and_unhealthy(web: dict[str, Any]) -> None:
    assert probe(web["base"] + "/ok", attempts=1, interval=0) == (True, "HTTP 200")
    assert probe(web["base"] + "/down", attempts=2, interval=0) == (False, "HTTP 503")
    assert web["hits"] == ["/ok", "/down", "/down"]


def test_the_probe_follows_a_redirect_to_http(web: dict[str, Any]) -> None:
    assert probe(web["base"] + "/to?/ok", attempts=1, interval=0) == (True, "HTTP 200")
    assert web["hits"] == ["/to?/ok", "/ok"]


@pytest.mark.parametrize("scheme", ["file://", "ftp://127.0.0.1", "data:text/plain,"])
def test_the_probe_does_not_follow_a_redirect_elsewhere(web: dict[str, Any], scheme: str) -> None:
    target = f"{scheme}{web['secret']}"
    healthy, answer = probe(f"{web['base']}/to?{target}", attempts=3, interval=0)
    assert not healthy and answer.startswith("refused: HTTP 302 redirects to a")
    assert web["hits"] == [f"/to?{target}"]  # given up at once, not retried


def test_an_unreachable_probe_is_unhealthy_not_a_crash() -> None:
    healthy, answer = probe("http://127.0.0.1:9/health", attempts=2, interval=0)
    assert not healthy and answer.startswith("no answer")
