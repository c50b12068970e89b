"""A compromised host of a fleet cannot forge, overwrite or prune another site's backups.

Two sites share three folder tiers (each site its own folder in each), each signs with its
own key, and the fleet file lists each site's verify key under that site only.  Acting as the
broken-into beta host (beta's settings and secrets, pointed by its attacker at alpha's
folders), through the operator's own commands (``backupflow``, no Prefect API):

* beta's backup into alpha's folders is not a backup of alpha: alpha's restore returns
  alpha's rows, never beta's;
* beta's signed manifest copied over one of alpha's is refused, and alpha restores from a
  tier that still holds the real one;
* beta's prune (and its left-over cleaning, grace 0) of alpha's folders deletes nothing of
  alpha's;
* a run for alpha routed to beta's worker is refused before anything is written.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from backupflow.keys import GeneratedKeys, generate_keys

ROOT = Path(__file__).resolve().parents[2]
SITES = ("alpha", "beta")
TIERS = ("primary", "secondary", "dr")


def _rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, name FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def estate(tmp_path: Path) -> dict[str, Any]:
    keys: dict[str, GeneratedKeys] = {site: generate_keys() for site in SITES}
    sites = []
    for index, site in enumerate(SITES):
        db = tmp_path / site / "app" / "gantt.db"
        db.parent.mkdir(parents=True)
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
            rows = [(f"{site}-{i}",) for i in range(50 + 25 * index)]
            conn.executemany("INSERT INTO tasks (name) VALUES (?)", rows)
        conn.close()
        sites.append(
            {
                "name": site,
                "file_sets": [],
                "staging_dir": str(tmp_path / site / "staging"),
                "backup_log": str(tmp_path / site / "backup.log"),
                "restore_roots": [str(tmp_path / site)],
                "orphan_grace_minutes": 0,
                "database": {"engine": "sqlite", "name": "gantt", "sqlite_path": str(db)},
                "crypto": {
                    "recipients": [keys[site].recipient],
                    "verify_keys": [keys[site].verify_key],
                },
            }
        )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "repository": {t: {"url": str(tmp_path / "tiers" / t)} for t in TIERS}
                },
                "sites": sites,
            }
        )
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BACKUPFLOW_"))}
    hosts = {
        site: {
            **base,
            "PREFECT_HOME": str(tmp_path / site / "prefect"),
            "BACKUPFLOW_FLEET": str(fleet),
            "BACKUPFLOW_SITE": site,
            "BACKUPFLOW_CRYPTO__SIGNING_KEY": keys[site].signing_key,
            "BACKUPFLOW_CRYPTO__IDENTITIES": keys[site].identity,
        }
        for site in SITES
    }
    # The attacker on beta's host points beta's settings at alpha's folders.
    hosts["hostile"] = {
        **hosts["beta"],
        **{
            f"BACKUPFLOW_REPOSITORY__{t.upper()}__URL": str(tmp_path / "tiers" / t / "alpha")
            for t in TIERS
        },
    }
    return {"tmp": tmp_path, "hosts": hosts, "keys": keys}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backupflow_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _alpha_objects(tmp: Path) -> dict[str, bytes]:
    """Every file in alpha's folders of every tier, by path."""
    return {
        str(path.relative_to(tmp)): path.read_bytes()
        for t in TIERS
        for path in (tmp / "tiers" / t / "alpha").rglob("*")
        if path.is_file()
    }


def _restore_alpha(estate: dict[str, Any], name: str, *source: str) -> list[tuple[Any, ...]]:
    into = estate["tmp"] / "alpha" / f"{name}.db"
    done = _cli(
        estate["hosts"]["alpha"], "restore", "database", "--latest", "--into", str(into), *source
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return _rows(into)


def test_a_compromised_host_cannot_forge_overwrite_or_prune_another_sites_backups(
    estate: dict[str, Any],
) -> None:
    tmp, hosts = estate["tmp"], estate["hosts"]
    alpha_rows = _rows(tmp / "alpha" / "app" / "gantt.db")
    beta_rows = _rows(tmp / "beta" / "app" / "gantt.db")
    for site in SITES:
        done = _cli(hosts[site], "backup", "database")
        assert done.returncode == 0, done.stdout + done.stderr
    before = _alpha_objects(tmp)

    # forge: beta backs up its own database into alpha's folders, signed with beta's key
    forged = _cli(hosts["hostile"], "backup", "database")
    # beta sees alpha's backups as foreign (signed by no key it trusts), prunes nothing
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "signed by no trusted key" in forged.stderr and "nothing was pruned" in forged.stderr
    assert len(list((tmp / "tiers" / "primary" / "alpha").rglob("*.manifest.json"))) == 2
    assert _restore_alpha(estate, "after-forge") == alpha_rows != beta_rows

    # overwrite: beta copies its signed manifest over alpha's in the primary tier (manifest
    # names start with the restore point: alpha's backup came first)
    genuine, beta_signed = sorted((tmp / "tiers" / "primary" / "alpha").rglob("*.manifest.json"))
    overwritten = str(genuine.relative_to(tmp))
    genuine.write_bytes(beta_signed.read_bytes())
    verify = _cli(hosts["alpha"], "verify")
    assert verify.returncode != 0 and "Traceback" not in verify.stdout + verify.stderr
    assert _restore_alpha(estate, "from-dr", "--from", "dr") == alpha_rows

    # prune: beta's prune and left-over cleaning of alpha's folders (grace 0) delete nothing
    for tier in TIERS:
        pruned = _cli(hosts["hostile"], "prune", "--tier", tier)
        assert "Traceback" not in pruned.stdout + pruned.stderr
    after = _alpha_objects(tmp)
    for key, data in before.items():
        if key != overwritten:
            assert after.get(key) == data, key
    assert _restore_alpha(estate, "after-prune", "--from", "secondary") == alpha_rows

    # routing: a run for alpha that reaches beta's worker is refused before it writes
    count = len(list((tmp / "tiers").rglob("*")))
    routed = _cli({**hosts["beta"], "BACKUPFLOW_RUN_SITE": "alpha"}, "backup", "database")
    assert routed.returncode == 3
    assert "this run is for the site 'alpha' but this host serves 'beta'" in routed.stderr
    assert "Traceback" not in routed.stderr and len(list((tmp / "tiers").rglob("*"))) == count
