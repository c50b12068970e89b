"""The break-glass restore: a real full backup, taken by ``backupflow backup database`` with
keys from ``backupflow key init``, restored BY HAND with the lines of ``docs/security.md``
(``aws s3 cp`` played by ``cp``, then ``jq``, ``base64``, ``openssl``, ``age -d`` and
``zstd -d``).

Debian's ``age`` CLI is required: ``make bootstrap`` installs it; under CI a missing tool is
a failure, not a skip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support.chain import content_digest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("age", "zstd", "jq", "base64", "openssl", "xxd", "sqlite3", "sha256sum")
BUCKET = "dr-workload-optimization-backups"
DB = "gantt"

FAKE_AWS = r"""#!/usr/bin/env bash
# Plays `aws s3 ls|cp` on one bucket kept in a local folder (a backupflow tier).
set -euo pipefail
[ "$1" = s3 ] || { echo "fake aws: only s3" >&2; exit 2; }
path=${3#s3://}
[ "${path%%/*}" = "$FAKE_S3_BUCKET" ] || { echo "fake aws: no such bucket" >&2; exit 1; }
rel=${path#*/}
case "$2" in
  ls) for f in "$FAKE_S3_ROOT/$rel"*; do
        [ -e "$f" ] && printf '2026-11-26 00:00:00 %10d %s\n' "$(stat -c %s "$f")" "${f##*/}"
      done ;;
  cp) cp "$FAKE_S3_ROOT/$rel" "$4" ;;
  *) exit 2 ;;
esac
"""


def runbook_steps() -> str:
    """The break-glass block of docs/security.md, exactly as an operator would paste it."""
    text = (ROOT / "docs" / "security.md").read_text()
    block = re.search(
        r"<!-- break-glass:begin -->\n```bash\n(.*?)```\n<!-- break-glass:end -->", text, re.S
    )
    assert block, "docs/security.md lost its break-glass block"
    return block.group(1)


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT, hours REAL)")
        conn.executemany(
            "INSERT INTO tasks (name, hours) VALUES (?, ?)",
            [(f"task {i}", i % 9) for i in range(20_000)],
        )
    conn.close()


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Keys from `backupflow key init`, then one full backup through the CLI and its flow
    (made once for this module; each test restores into a folder of its own)."""
    tmp_path = tmp_path_factory.mktemp("break-glass")
    for tool in TOOLS:
        need(shutil.which(tool) is not None, f"the {tool} command (make bootstrap installs it)")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    env = {
        **base,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    glass = tmp_path / "glass"
    glass.mkdir()
    env_file = tmp_path / "backupflow.env"
    env.update(  # key init leaves its key record in these tiers
        {
            "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
            "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
            "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        }
    )
    cli = [sys.executable, "-m", "backupflow_app"]
    init = subprocess.run(
        [*cli, "key", "init", "--env-file", str(env_file), "--identity-file", "identity.txt"],
        env=env,
        cwd=glass,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    verify_key = re.search(r"bfverify1[0-9a-f]{64}", init.stdout)
    assert verify_key
    live = tmp_path / "app" / "gantt.db"
    _seed(live)
    env.update(
        {
            "BACKUPFLOW_CONFIG": str(env_file),
            "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
            "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
            "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
            "BACKUPFLOW_DATABASE__NAME": DB,
            "BACKUPFLOW_DATABASE__SQLITE_PATH": str(live),
            "BACKUPFLOW_BACKUP_LOG": str(tmp_path / "backup.log"),
            "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
        }
    )
    backup = subprocess.run(
        [*cli, "backup", "database", "--type", "full"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert backup.returncode == 0, backup.stderr
    return {"tmp": tmp_path, "glass": glass, "live": live, "verify_key": verify_key.group(0)}


def _run_steps(
    backed_up: dict[str, Path | str], steps: str, glass: Path, bucket: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``steps`` in ``glass`` (which gets the escrowed identity.txt) against the bucket
    kept in the folder ``bucket``."""
    tmp = Path(backed_up["tmp"])
    glass.mkdir()
    shutil.copy(Path(backed_up["glass"]) / "identity.txt", glass / "identity.txt")
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "aws").write_text(FAKE_AWS)
    (bin_dir / "aws").chmod(0o755)
    steps = re.sub(r"^BUCKET=.*$", f"BUCKET={BUCKET}", steps, count=1, flags=re.M)
    steps = re.sub(r"^DB=.*$", f"DB={DB}", steps, count=1, flags=re.M)
    steps = re.sub(
        r"^VERIFY_KEY=.*$", f"VERIFY_KEY={backed_up['verify_key']}", steps, count=1, flags=re.M
    )
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "FAKE_S3_ROOT": str(bucket),
        "FAKE_S3_BUCKET": BUCKET,
    }
    return subprocess.run(
        ["bash", "-c", steps],
        env=env,
        cwd=glass,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_full_backup_restores_by_hand_as_the_security_doc_says(
    backed_up: dict[str, Path | str], tmp_path: Path
) -> None:
    glass, live = tmp_path / "glass", Path(backed_up["live"])

    done = _run_steps(backed_up, runbook_steps(), glass, Path(backed_up["tmp"]) / "dr")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Signature Verified Successfully" in done.stdout
    assert "restored.db: OK" in done.stdout
    assert done.stdout.rstrip().endswith("ok")  # PRAGMA integrity_check
    manifest = json.loads((glass / "manifest.json").read_text())
    data = next(o for o in manifest["objects"] if o["role"] == "data")
    assert data["encryption"] == "age-v1-x25519" and data["key"].endswith(".zst.age")
    restored = (glass / "restored.db").read_bytes()
    assert hashlib.sha256(restored).hexdigest() == data["raw_sha256"]
    assert content_digest(glass / "restored.db") == content_digest(live)
    stored = (glass / "data.zst.age").read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert b"SQLite format 3" not in stored and b"task 1234" not in stored


def test_a_tampered_manifest_stops_the_break_glass_at_the_signature(
    backed_up: dict[str, Path | str], tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    shutil.copytree(Path(backed_up["tmp"]) / "dr", bucket)
    manifests = sorted((bucket / "database" / DB / "manifests").iterdir())
    envelope = json.loads(manifests[-1].read_text())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["objects"][0]["raw_sha256"] = "0" * 64  # what a forger would change
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    manifests[-1].chmod(0o600)
    manifests[-1].write_text(json.dumps(envelope))

    done = _run_steps(backed_up, runbook_steps(), tmp_path / "glass", bucket)

    assert done.returncode != 0
    assert "Signature Verification Failure" in done.stdout + done.stderr
    assert not (tmp_path / "glass" / "restored.db").exists()


def test_the_wrong_identity_cannot_decrypt(
    backed_up: dict[str, Path | str], tmp_path: Path
) -> None:
    from backupflow.keys import generate_keys
    from backupflow.keystore import write_escrow_file

    glass = tmp_path / "glass"
    steps = runbook_steps().replace("-i identity.txt", "-i other.txt")
    other = tmp_path / "other.txt"
    write_escrow_file(other, generate_keys())
    steps = steps.replace("other.txt", str(other))

    done = _run_steps(backed_up, steps, glass, Path(backed_up["tmp"]) / "dr")

    assert done.returncode != 0
    assert "no identity matched" in done.stderr
    assert "Signature Verified Successfully" in done.stdout  # the manifest itself was genuine
    restored = glass / "restored.db"
    assert not restored.exists() or restored.stat().st_size == 0
