"""Failover pieces: the Route 53 record switch and the health probe.

The record is switched only if it already exists, found by its exact name and type in the
hosted zone (unless ``failover.create_record`` is on), so a misspelt name fails instead of
creating a new record.  The switch deletes the record exactly as it was read and creates the
standby's in one atomic change batch: if anyone changed the record in between, Route 53
refuses the batch and nothing changes.  The probe speaks http(s) only, redirects included.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from pydantic import ValidationError

from backupflow.config import FailoverSettings
from backupflow.errors import BackupflowError, ConfigError
from backupflow.prefect_adapter import aws_session

__all__ = [
    "DnsChange",
    "FailoverError",
    "checked_settings",
    "current_record",
    "probe",
    "route53_client",
    "switch_dns",
]

_SCHEMES = ("http", "https")
_MAX_REDIRECTS = 5


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
    #: The record set as Route 53 listed it (deleted verbatim by the switch); None when
    #: the record does not exist and ``create`` allows making it.
    existing: Mapping[str, Any] | None = None
    create: bool = False


def checked_settings(settings: FailoverSettings) -> FailoverSettings:
    """The failover settings validated again (settings built with ``model_copy`` skip the
    checks): record name, address against the record type, health URL scheme."""
    try:
        return FailoverSettings.model_validate(settings.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        variable = f"BACKUPFLOW_FAILOVER__{where.upper()}" if where else "BACKUPFLOW_FAILOVER__*"
        raise ConfigError(
            f"invalid failover setting: {first['msg']}; check {variable}; nothing was changed."
        ) from None


def route53_client(settings: FailoverSettings) -> Any:
    import boto3

    if settings.credentials_block:
        session = aws_session(settings.credentials_block, "BACKUPFLOW_FAILOVER__CREDENTIALS_BLOCK")
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


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _values(record: Mapping[str, Any]) -> list[str]:
    alias = record.get("AliasTarget")
    if alias:
        return [f"alias {alias.get('DNSName', '?')}"]
    return [str(r["Value"]) for r in record.get("ResourceRecords", [])]


def current_record(client: Any, settings: FailoverSettings) -> DnsChange:
    """What the record says now, and what the failover would make it say.

    Raises :class:`FailoverError` when the zone lacks a record of exactly this name and type
    (and ``create_record`` is off), or when the record has a routing policy.
    """
    zone, standby = _need(settings)
    name = _absolute(settings.record_name)
    kind = settings.record_type
    try:
        found = client.list_resource_record_sets(
            HostedZoneId=zone, StartRecordName=name, StartRecordType=kind, MaxItems="1"
        )
    except Exception as exc:  # botocore raises several kinds; none is worth a traceback
        raise FailoverError(
            f"the records of hosted zone {zone} cannot be read ({type(exc).__name__}); check "
            "BACKUPFLOW_FAILOVER__HOSTED_ZONE_ID and the Route 53 credentials."
        ) from exc
    existing: Mapping[str, Any] | None = None
    for record in found.get("ResourceRecordSets", []):
        if str(record.get("Name", "")).lower() == name.lower() and record.get("Type") == kind:
            existing = record
    if existing is not None and "SetIdentifier" in existing:
        raise FailoverError(
            f"the {kind} record {name} in hosted zone {zone} has a routing policy "
            f"(set {existing['SetIdentifier']!r}); failover switches simple records only, "
            "so switch it by hand."
        )
    if existing is None and not settings.create_record:
        raise FailoverError(
            f"hosted zone {zone} has no {kind} record named {name}; nothing was changed: fix "
            "BACKUPFLOW_FAILOVER__RECORD_NAME or RECORD_TYPE, or set "
            "BACKUPFLOW_FAILOVER__CREATE_RECORD=true to create it."
        )
    before = _values(existing) if existing is not None else []
    return DnsChange(
        zone, name, kind, before, standby, settings.ttl, existing, settings.create_record
    )


def _reason(exc: Exception) -> str:
    """A botocore error's code and message on one line."""
    error = getattr(exc, "response", {}).get("Error", {})
    text = f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}"
    return " ".join(text.split())[:300]


def _check_change(change: DnsChange) -> None:
    """Defense in depth: the change must satisfy the settings' own rules."""
    try:
        FailoverSettings(
            record_name=change.name,
            record_type=change.type,
            standby_address=change.after,
            ttl=change.ttl,
        )
    except ValidationError as exc:
        raise FailoverError(
            f"the DNS change was refused before it was sent: {exc.errors()[0]['msg']}; "
            "fix the failover settings."
        ) from None
    if change.existing is None and not change.create:
        raise FailoverError(
            f"the {change.type} record {change.name} does not exist and creating it is off; "
            "nothing was changed."
        )


def switch_dns(client: Any, change: DnsChange, timeout: float) -> str:
    """Point the record at the standby and wait until Route 53 reports INSYNC.

    The old record is deleted exactly as it was read and the new one created in the same
    atomic batch, so a record changed (or removed) since it was read fails the switch.
    """
    _check_change(change)
    new = {
        "Name": change.name,
        "Type": change.type,
        "TTL": change.ttl,
        "ResourceRecords": [{"Value": change.after}],
    }
    changes: list[dict[str, Any]] = []
    if change.existing is not None:
        changes.append({"Action": "DELETE", "ResourceRecordSet": dict(change.existing)})
    changes.append({"Action": "CREATE", "ResourceRecordSet": new})
    try:
        response = client.change_resource_record_sets(
            HostedZoneId=change.zone,
            ChangeBatch={"Comment": "backupflow failover to the standby", "Changes": changes},
        )
    except Exception as exc:  # botocore's ClientError and connection errors
        if getattr(exc, "response", None):  # an answer: the batch was refused as a whole
            raise FailoverError(
                f"Route 53 refused the change of the {change.type} record {change.name} "
                f"({_reason(exc)}), so the record is unchanged; if it changed since it was "
                "read, check it and run the failover again."
            ) from exc
        raise FailoverError(
            f"the change of the {change.type} record {change.name} could not be sent "
            f"({type(exc).__name__}); check the record in Route 53 before trying again."
        ) from exc
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


class _RefusedRedirect(urllib.error.URLError):
    """A redirect to anything but an http(s) URL."""


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a few redirects, to http(s) URLs only."""

    max_redirections = _MAX_REDIRECTS

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> Any:
        location = headers.get("location") or headers.get("uri") or ""
        scheme = urlsplit(urljoin(req.full_url, location)).scheme.lower()
        if scheme not in _SCHEMES:
            fp.close()
            raise _RefusedRedirect(f"HTTP {code} redirects to a {scheme or 'schemeless'} URL")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener() -> urllib.request.OpenerDirector:
    """An opener that knows http and https only (no file:, ftp: or data: handlers)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def probe(url: str, attempts: int, interval: float) -> tuple[bool, str]:
    """GET ``url`` until it answers 2xx; returns (healthy, last answer).

    Anything but an http(s) URL, and a redirect to one, is refused at once (unhealthy).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        return False, (
            f"refused: {parts.scheme or 'a schemeless'}: URL is not http(s); set "
            "BACKUPFLOW_FAILOVER__HEALTH_URL to an http:// or https:// URL"
        )
    opener = _opener()
    last = "no answer"
    for attempt in range(attempts):
        try:
            with opener.open(url, timeout=10) as response:
                if 200 <= response.status < 300:
                    return True, f"HTTP {response.status}"
                last = f"HTTP {response.status}"
        except _RefusedRedirect as exc:
            return False, f"refused: {exc.reason}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            last = f"no answer ({exc.reason})"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = f"no answer ({type(exc).__name__}: {exc})"
        if attempt + 1 < attempts:
            time.sleep(interval)
    return False, last
