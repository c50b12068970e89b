"""Who is told about a failure (owners), what a drill must show (RTO, RPO, health grace) and
how a failover switches DNS to the standby."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from backupflow.config.checks import is_hostname

__all__ = ["Contact", "DrillSettings", "FailoverSettings", "OwnersSettings"]


class Contact(BaseModel):
    """One of the seed's three roles: who, and how Prefect tells them."""

    name: str = Field(default="", description="The person holding the role.")
    email: str = Field(default="", description="Their e-mail address.")
    phone: str = Field(default="", description="Their phone number.")
    notification_block: str | None = Field(
        default=None, description="Name of a Prefect notification block that reaches them."
    )


class OwnersSettings(BaseModel):
    """Backup administrator, recovery owner and DR lead (the seed's responsibilities)."""

    backup_administrator: Contact = Field(
        default_factory=Contact, description="Told when a backup fails."
    )
    recovery_owner: Contact = Field(
        default_factory=Contact, description="Told when a restore fails."
    )
    dr_lead: Contact = Field(
        default_factory=Contact, description="Told when a drill or the health check fails."
    )


class DrillSettings(BaseModel):
    """Recovery objectives the quarterly drill must show, and how late a backup may be before
    the health check fails."""

    rto_hours: float = Field(default=4.0, gt=0, le=168, description="Recovery time objective.")
    rpo_hours: float = Field(default=1.0, gt=0, le=168, description="Recovery point objective.")
    health_grace_minutes: int = Field(
        default=30, ge=0, le=1440, description="How late a backup may be before health fails."
    )


class FailoverSettings(BaseModel):
    """Failover to the standby: the DNS record to switch and the health probe afterwards."""

    hosted_zone_id: str | None = Field(default=None, description="Route 53 hosted zone id.")
    record_name: str = Field(
        default="api.workload-optimization.example.", description="The application's record."
    )
    record_type: Literal["A", "AAAA", "CNAME"] = Field(default="A", description="Record type.")
    ttl: int = Field(default=60, ge=1, le=86400, description="TTL of the switched record.")
    standby_address: str | None = Field(
        default=None, description="The standby's address (IP for A/AAAA, name for CNAME)."
    )
    health_url: str | None = Field(
        default=None, description="URL probed after the switch (2xx = healthy)."
    )
    health_attempts: int = Field(
        default=10, ge=1, le=1000, description="Health probes after the switch before it fails."
    )
    health_interval_seconds: float = Field(
        default=3.0, ge=0, le=600, description="Seconds between two health probes."
    )
    change_timeout_seconds: int = Field(
        default=300, ge=1, le=3600, description="How long to wait for Route 53 INSYNC."
    )
    route53_endpoint_url: str | None = Field(default=None, description="Route 53 endpoint.")
    credentials_block: str | None = Field(
        default=None, description="prefect-aws AwsCredentials block for Route 53."
    )
    create_record: bool = Field(
        default=False,
        description="Create the record when the hosted zone lacks it; off by default, so a "
        "misspelt record name fails instead of creating a new record.",
    )

    @field_validator("record_name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not is_hostname(value):
            raise ValueError(f"{value!r} is not a DNS name")
        return value

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
            raise ValueError("the health URL must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _address_fits_type(self) -> FailoverSettings:
        address = self.standby_address
        if address is None:
            return self
        if self.record_type == "CNAME":
            if not is_hostname(address):
                raise ValueError(f"standby_address {address!r} is not a DNS name (CNAME record)")
            return self
        version = 4 if self.record_type == "A" else 6
        try:
            fits = ipaddress.ip_address(address).version == version
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"standby_address {address!r} is not an IPv{version} address "
                f"({self.record_type} record)"
            )
        return self
