"""Failover pieces: the Route 53 record switch and the health probe."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from backupflow.config import FailoverSettings
from backupflow.errors import BackupflowError, ConfigError

__all__ = ["DnsChange", "FailoverError", "current_record", "probe", "route53_client", "switch_dns"]


class FailoverError(BackupflowError):
    """A failover step failed; the message says where things stand and what to do next."""


@dataclass(frozen=True)
class DnsChange:
    """The record change a failover makes."""

    zone: str
    name: str
    type: str
    before: list[str]
    after: str
    ttl: int


def route53_client(settings: FailoverSettings) -> Any:
    import boto3

    if settings.credentials_block:
        from prefect_aws import AwsCredentials

        session = AwsCredentials.load(settings.credentials_block).get_boto3_session()
    else:
        session = boto3.session.Session()
    return session.client("route53", endpoint_url=settings.route53_endpoint_url)


def _need(settings: FailoverSettings) -> tuple[str, str]:
    if not settings.hosted_zone_id or not settings.standby_address:
        raise ConfigError(
            "failover needs BACKUPFLOW_FAILOVER__HOSTED_ZONE_ID and "
            "BACKUPFLOW_FAILOVER__STANDBY_ADDRESS."
        )
    return settings.hosted_zone_id, settings.standby_address


def current_record(client: Any, settings: FailoverSettings) -> DnsChange:
    """What the record says now, and what the failover would make it say."""
    zone, standby = _need(settings)
    name = (
        settings.record_name if settings.record_name.endswith(".") else settings.record_name + "."
    )
    found = client.list_resource_record_sets(
        HostedZoneId=zone, StartRecordName=name, StartRecordType=settings.record_type, MaxItems="1"
    )
    before: list[str] = []
    for record in found.get("ResourceRecordSets", []):
        if record["Name"] == name and record["Type"] == settings.record_type:
            before = [r["Value"] for r in record.get("ResourceRecords", [])]
    return DnsChange(zone, name, settings.record_type, before, standby, settings.ttl)


def switch_dns(client: Any, change: DnsChange, timeout: float) -> str:
    """UPSERT the record to the standby and wait until Route 53 reports INSYNC."""
    response = client.change_resource_record_sets(
        HostedZoneId=change.zone,
        ChangeBatch={
            "Comment": "backupflow failover to the standby",
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": change.name,
                        "Type": change.type,
                        "TTL": change.ttl,
                        "ResourceRecords": [{"Value": change.after}],
                    },
                }
            ],
        },
    )
    change_id = response["ChangeInfo"]["Id"]
    deadline = time.monotonic() + timeout
    status = response["ChangeInfo"]["Status"]
    while status != "INSYNC":
        if time.monotonic() > deadline:
            raise FailoverError(
                f"Route 53 change {change_id} is still {status} after {timeout:.0f} s; the record "
                "will point at the standby once it propagates."
            )
        time.sleep(2)
        status = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
    return str(change_id)


def probe(url: str, attempts: int, interval: float) -> tuple[bool, str]:
    """GET ``url`` until it answers 2xx; returns (healthy, last answer)."""
    last = "no answer"
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if 200 <= response.status < 300:
                    return True, f"HTTP {response.status}"
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if attempt + 1 < attempts:
            time.sleep(interval)
    return False, last
