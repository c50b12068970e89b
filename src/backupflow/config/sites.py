"""Fleet sites in the settings: the site values a worker reads from the fleet file, and the
check that a run reaches a host that serves its site (:mod:`backupflow.fleetfile`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_settings import PydanticBaseSettingsSource

from backupflow.errors import ConfigError
from backupflow.fleetfile import (
    FLEET_ENV_VAR,
    RUN_SITE_ENV_VAR,
    SITE_ENV_VAR,
    check_site_name,
    read_fleet_file,
    site_values,
)

__all__ = ["FleetSource", "check_route", "route_site", "served_sites"]


class FleetSource(PydanticBaseSettingsSource):
    """A fleet site's values (``$BACKUPFLOW_FLEET``, site ``$BACKUPFLOW_SITE``), beneath the
    host's environment and env-file (:mod:`backupflow.fleetfile`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        from backupflow.config.loader import secret_paths
        from backupflow.config.repository import RepositorySettings
        from backupflow.fleetfile import TIERS

        path, site = os.environ.get(FLEET_ENV_VAR), os.environ.get(SITE_ENV_VAR)
        chosen = self.current_state.get("site")  # a host serving several: the run's site
        site = chosen if isinstance(chosen, str) and chosen else site
        if not path or not site:
            return {}
        check_site_name(site, SITE_ENV_VAR)
        return site_values(
            read_fleet_file(Path(path)),
            site,
            where=f"the fleet file {path}",
            secret_paths=secret_paths(),
            tier_urls={name: getattr(RepositorySettings(), name).url for name in TIERS},
        )


def served_sites() -> list[str]:
    """The sites this host serves (``BACKUPFLOW_SITE``: one name, or several, comma-separated)."""
    value = os.environ.get(SITE_ENV_VAR) or ""
    if "," not in value:
        return [value] if value else []
    return [check_site_name(part.strip(), SITE_ENV_VAR) for part in value.split(",")]


def _refused(wanted: str, served: str) -> ConfigError:
    return ConfigError(
        f"this run is for the site {wanted!r} but this host serves {served!r} "
        f"({SITE_ENV_VAR}); its deployment's work queue routes it to the wrong worker, so it "
        "was refused."
    )


def route_site(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the run's site when this host serves several (a run names its
    site, ``BACKUPFLOW_RUN_SITE``); a run for a site the host does not serve is refused."""
    served = served_sites()
    if len(served) <= 1 or "site" in overrides:
        return overrides
    wanted = os.environ.get(RUN_SITE_ENV_VAR)
    if not wanted:
        raise ConfigError(
            f"this host serves several sites ({SITE_ENV_VAR}={','.join(served)}); set "
            f"{SITE_ENV_VAR} to the one this command is for."
        )
    if wanted not in served:
        raise _refused(wanted, ", ".join(served))
    return {**overrides, "site": wanted}


def check_route(site: str | None) -> None:
    """Refuse a run (``BACKUPFLOW_RUN_SITE``) for another site than the settings' own."""
    wanted = os.environ.get(RUN_SITE_ENV_VAR)
    if wanted and wanted != site:
        raise _refused(wanted, site or "no fleet site")
