"""The ``backupflow`` command as an operator runs it: a real process, real exit codes."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.chain import content_digest
from tests.support.keys import KEYRING, key_env
from tests.support.trees import make_api_tree

CLI = [sys.executable, "-m", "backupflow_app"]
EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 1, 2, 3
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path, prefect_server: str) -> dict[str, str]:
    """Environment of an operator's shell: settings as BACKUPFLOW_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    return {
        **base,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(tmp_path / "app" / "gantt.db"),
        "BACKUPFLOW_BACKUP_LOG": str(tmp_path / "backup.log"),
        "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
        **key_env(),
    }


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def _run(
        *args: str, extra: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env={**env, **(extra or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return _run


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(2000)])
    conn.close()


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Refused before anything ran: standard error is exactly one line, the sentence."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    _the_sentence(result, lines[0], fragments)


def _flow_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A flow ran and failed: Prefect's log lines come first, then exactly one sentence,
    last."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert lines, result.stdout
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], result.stderr
    _the_sentence(result, lines[-1], fragments)


def _the_sentence(
    result: subprocess.CompletedProcess[str], line: str, fragments: tuple[str, ...]
) -> None:
    assert line.startswith("error: ") and line.endswith("."), line
    assert "internal error" not in line
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in line, line


def test_backup_then_restore_from_the_command_line(run: Run, tmp_path: Path) -> None:
    live = tmp_path / "app" / "gantt.db"
    _seed(live)
    done = run("backup", "database", "--type", "full")
    assert done.returncode == 0, done.stderr
    assert "full backup" in done.stdout
    catalog = run("catalog", "--json")
    assert catalog.returncode == 0
    backups = json.loads(catalog.stdout)["backups"]
    assert [b["kind"] for b in backups] == ["full"]
    assert backups[0]["tiers"] == "primary, secondary, dr"

    shutil.rmtree(tmp_path / "secondary")  # a tier loses its copy
    only_dr = run("catalog", "--tier", "secondary", "--json")
    assert json.loads(only_dr.stdout)["backups"] == []
    healed = run("replicate")
    assert healed.returncode == 0, healed.stderr
    assert "to secondary" in healed.stdout
    again = json.loads(run("catalog", "--json").stdout)["backups"]
    assert again[0]["tiers"] == "primary, secondary, dr"

    copy = tmp_path / "app" / "r.db"
    restored = run("restore", "database", "--latest", "--into", str(copy))
    assert restored.returncode == 0, restored.stderr
    assert "integrity check passed" in restored.stdout
    assert content_digest(copy) == content_digest(live)

    again = run("restore", "database", "--latest", "--into", str(copy))
    _flow_error(again, EXIT_FAILED, "already exists", "--replace")

    # A time after the only backup: nothing reaches it, so it is refused unless accepted.
    at = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    late = tmp_path / "app" / "late.db"
    refused = run("restore", "database", "--at", at, "--into", str(late))
    _flow_error(refused, EXIT_FAILED, "lies after every backup of gantt", "--accept-earlier")
    assert not late.exists()
    accepted = run("restore", "database", "--at", at, "--accept-earlier", "--into", str(late))
    assert accepted.returncode == 0, accepted.stderr
    assert content_digest(late) == content_digest(live)

    plan = run("prune", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "Retention of gantt in primary (dry run)" in plan.stdout
    assert "within the 30-day full retention" in plan.stdout
    assert "nothing was deleted" in plan.stdout
    pruned = run("prune", "--tier", "dr")
    assert pruned.returncode == 0, pruned.stderr
    assert "dr (gantt): deleted 0" in pruned.stdout
    assert len(json.loads(run("catalog", "--json").stdout)["backups"]) == 1


def test_user_mistakes_get_one_sentence_and_an_exit_code(run: Run, tmp_path: Path) -> None:
    _one_line_error(run("backup", "database", "--type", "weekly"), EXIT_USAGE, "weekly")
    _flow_error(run("backup", "database"), EXIT_FAILED, "does not exist")
    _seed(tmp_path / "app" / "gantt.db")
    assert run("backup", "database").returncode == 0
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _one_line_error(run("restore", "database", "--at", future), EXIT_USAGE, "later than now")
    _flow_error(
        run("restore", "database", "--at", "2020-01-01T00:00:00+09:00"),
        EXIT_FAILED,
        "earliest restore point",
    )
    _one_line_error(run("restore", "database", "--at", "yesterday"), EXIT_USAGE, "ISO-8601")
    _one_line_error(run("restore", "database"), EXIT_USAGE, "--latest")
    _one_line_error(run("restore", "database", "--at", ""), EXIT_USAGE, "--at is empty")
    _one_line_error(
        run("backup", "database", extra={"BACKUPFLOW_PIPELINE__ZSTD_LEVEL": "99"}),
        EXIT_CONFIG,
        "pipeline.zstd_level",
    )


def test_relative_into_is_read_against_the_current_folder(run: Run, tmp_path: Path) -> None:
    app = tmp_path / "app"
    _seed(app / "gantt.db")
    assert run("backup", "database").returncode == 0

    restored = run("restore", "database", "--latest", "--into", "copy.db", cwd=app)

    assert restored.returncode == 0, restored.stderr
    assert content_digest(app / "copy.db") == content_digest(app / "gantt.db")
    assert str(app / "copy.db") in restored.stdout
    outside = run("restore", "database", "--latest", "--into", "copy.db", cwd=tmp_path)
    _one_line_error(outside, EXIT_USAGE, f"{tmp_path / 'copy.db'} is not under")
    assert not (tmp_path / "copy.db").exists()


def test_an_unsigned_manifest_is_reported_and_skipped(run: Run, tmp_path: Path) -> None:
    """A manifest planted without a signature (here: of a future format) is never a backup."""
    _seed(tmp_path / "app" / "gantt.db")
    assert run("backup", "database").returncode == 0
    manifest = next((tmp_path / "backups").rglob("*.manifest.json"))
    payload = json.loads(manifest.read_text())["payload"]
    data = json.loads(base64.b64decode(payload))
    newer = datetime.fromisoformat(data["restore_point"]) + timedelta(milliseconds=500)
    data.update(
        format_version=99,
        id=data["id"][:-6] + "ffffff",
        restore_point=newer.isoformat(),
    )
    name = f"{newer.strftime('%Y%m%dT%H%M%S')}{newer.microsecond // 1000:03d}Z_{data['id']}_none"
    (manifest.parent / f"{name}.manifest.json").write_text(json.dumps(data))
    listed = run("catalog")
    assert listed.returncode == EXIT_FAILED
    assert "unsigned manifest" in listed.stderr.splitlines()[-1]
    assert data["id"] not in listed.stdout
    dry = run("restore", "database", "--latest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "unsigned manifest" in dry.stderr
    assert "nothing was changed" in dry.stdout
    assert data["id"] not in dry.stdout  # the plan uses the readable backup


def test_config_show_masks_the_seed_password(run: Run, tmp_path: Path) -> None:
    conf = tmp_path / "backup.conf"
    conf.write_text(
        "DB_SERVER=sql01.internal\nDB_USER=backup\nDB_PASSWORD='Pa55-w0rd!'\nDB_NAME=GanttDB\n"
    )
    shown = run("config", "show", "--json", extra={"BACKUPFLOW_CONFIG": str(conf)})
    assert shown.returncode == 0, shown.stderr
    assert "Pa55-w0rd!" not in shown.stdout + shown.stderr
    data = json.loads(shown.stdout)
    assert data["database"]["server"] == "sql01.internal"
    assert data["database"]["password"] == "**********"
    assert data["repository"]["primary"]["url"] == str(tmp_path / "backups")  # env wins
    missing = run("config", "show", extra={"BACKUPFLOW_CONFIG": str(tmp_path / "nope.conf")})
    _one_line_error(missing, EXIT_CONFIG, "BACKUPFLOW_CONFIG")


def test_file_sets_from_the_command_line(run: Run, tmp_path: Path) -> None:
    api = make_api_tree(tmp_path / "api")
    extra = {f"BACKUPFLOW_FILES__{name}__ROOT": str(api) for name in ("CONFIG", "LOGS", "UPLOADS")}
    done = run("backup", "files", "--set", "config", extra=extra)
    assert done.returncode == 0, done.stderr
    assert "config backup" in done.stdout
    (api / "config" / "app.json").write_text("{}")
    dry = run(
        "restore", "files", "--set", "config", "--latest", "--in-place", "--dry-run", extra=extra
    )
    assert dry.returncode == 0, dry.stderr
    assert "config/app.json" in dry.stdout and "replace" in dry.stdout
    assert (api / "config" / "app.json").read_text() == "{}"
    placed = run("restore", "files", "--set", "config", "--latest", "--in-place", extra=extra)
    assert placed.returncode == 0, placed.stderr
    assert '"port": 8080' in (api / "config" / "app.json").read_text()
    aside = next(api.glob(".backupflow-aside-*"))
    undone = run("restore", "files", "--set", "config", "--undo", str(aside), extra=extra)
    assert undone.returncode == 0, undone.stderr
    assert (api / "config" / "app.json").read_text() == "{}"
    _flow_error(
        run("restore", "files", "--set", "config", "--latest", "--into", str(api), extra=extra),
        EXIT_FAILED,
        "not empty",
    )
    _one_line_error(run("backup", "files", "--set", "photos", extra=extra), EXIT_USAGE, "photos")


def test_verify_passes_then_reports_a_planted_manifest(run: Run, tmp_path: Path) -> None:
    _seed(tmp_path / "app" / "gantt.db")
    assert run("backup", "database").returncode == 0

    clean = run("verify", "--read-data", "100")
    assert clean.returncode == 0, clean.stderr
    assert "every tier verified" in clean.stdout

    genuine = next((tmp_path / "secondary").rglob("*.manifest.json"))
    payload = json.loads(base64.b64decode(json.loads(genuine.read_text())["payload"]))
    planted = genuine.with_name(genuine.name.replace("_none", "_x"))
    planted.write_text(json.dumps(payload))  # unsigned: what a bucket writer can make

    found = run("verify")
    assert found.returncode == EXIT_FAILED
    finding = next(line for line in found.stdout.splitlines() if planted.name in line)
    assert finding.startswith("finding: secondary foreign")
    lines = found.stderr.splitlines()
    assert lines[-1].startswith("error: verify found") and "Traceback" not in found.stderr
    restored = run("restore", "database", "--latest", "--into", str(tmp_path / "app" / "r.db"))
    assert restored.returncode == 0, restored.stderr


def _unsign(manifest: Path, **changes: object) -> Path:
    """Rewrite a signed manifest as a format-1 (pre-keys, unsigned) one; returns its path."""
    data = json.loads(base64.b64decode(json.loads(manifest.read_text())["payload"]))
    data["format_version"] = 1
    for obj in data["objects"]:
        obj.pop("encryption", None)
        obj.pop("recipients", None)
        obj.update(changes)
    manifest.write_text(json.dumps(data))
    return manifest


def test_adopt_signs_old_unsigned_backups_once_their_objects_check_out(
    run: Run, tmp_path: Path
) -> None:
    live = tmp_path / "app" / "gantt.db"
    _seed(live)
    clear = {"BACKUPFLOW_CRYPTO__ENCRYPT": "false"}  # format 1 had no encryption
    assert run("backup", "database", extra=clear).returncode == 0
    for manifest in tmp_path.rglob("*.manifest.json"):
        _unsign(manifest)
    unsigned = run("restore", "database", "--latest", "--into", str(tmp_path / "app" / "a.db"))
    assert unsigned.returncode != 0  # never restored before it is adopted
    assert not (tmp_path / "app" / "a.db").exists()

    no_record = run("adopt")
    assert no_record.returncode == 1 and "no tier holds a key record" in no_record.stderr
    _key_records(tmp_path)  # what `backupflow key init` leaves: the keys came after
    dry = run("adopt")
    assert dry.returncode == 0, dry.stderr
    digest = re.search(r"--confirm ([0-9a-f]{20})", dry.stdout)
    assert digest and dry.stdout.count("would adopt ") == 3  # one backup, three tiers
    assert unsigned_manifests(tmp_path) == 3  # a dry run changes nothing

    adopted = run("adopt", "--confirm", digest[1])

    assert adopted.returncode == 0, adopted.stderr
    assert "3 backups adopted" in adopted.stdout
    assert unsigned_manifests(tmp_path) == 0
    restored = run("restore", "database", "--latest", "--into", str(tmp_path / "app" / "b.db"))
    assert restored.returncode == 0, restored.stderr
    assert content_digest(tmp_path / "app" / "b.db") == content_digest(live)
    again = run("adopt")
    assert again.returncode == 0 and "no unsigned backup qualifies" in again.stdout


def unsigned_manifests(root: Path) -> int:
    return sum('"payloadType"' not in m.read_text() for m in root.rglob("*.manifest.json"))


def _key_records(tmp_path: Path) -> None:
    from backupflow.rekey import write_key_record
    from backupflow.storage.local import LocalStorage

    for folder in ("backups", "secondary", "dr"):
        storage = LocalStorage(tmp_path / folder, name=folder)
        assert write_key_record(storage, KEYRING, datetime.now(UTC))


def test_adopt_refuses_an_unsigned_backup_whose_object_does_not_match(
    run: Run, tmp_path: Path
) -> None:
    _seed(tmp_path / "app" / "gantt.db")
    assert run("backup", "database", extra={"BACKUPFLOW_CRYPTO__ENCRYPT": "false"}).returncode == 0
    for manifest in tmp_path.rglob("*.manifest.json"):
        _unsign(manifest, raw_sha256="0" * 64, sha256="0" * 64)

    _key_records(tmp_path)
    dry = run("adopt")
    digest = re.search(r"--confirm ([0-9a-f]{20})", dry.stdout)
    assert digest, dry.stdout + dry.stderr
    refused = run("adopt", "--confirm", digest[1])

    _flow_error(refused, EXIT_FAILED, "were not adopted", "does not match its recorded SHA-256")
    for manifest in tmp_path.rglob("*.manifest.json"):
        assert json.loads(manifest.read_text())["format_version"] == 1  # left as it was


def test_the_catalog_table_never_cuts_an_id(run: Run, tmp_path: Path) -> None:
    """A full, a differential and a log backup: every id (and parent id) is printed whole,
    on one line, so it can be copied from the table."""
    _seed(tmp_path / "app" / "gantt.db")
    for kind in ("full", "diff", "log"):
        assert run("backup", "database", "--type", kind).returncode == 0
    table = run("catalog")
    assert table.returncode == 0, table.stderr
    backups = json.loads(run("catalog", "--json").stdout)["backups"]
    assert len(backups) == 3
    for backup in backups:
        line = next(line for line in table.stdout.splitlines() if backup["id"] in line)
        assert backup["restore_point"] in line
        if backup["parent"] != "-":
            assert backup["parent"] in line


def test_runs_shows_why_a_run_failed(run: Run, tmp_path: Path) -> None:
    """`backupflow runs --failed`: the failed restore, newest first, with its reason."""
    failed = run("restore", "database", "--latest", "--into", str(tmp_path / "app" / "x.db"))
    assert failed.returncode != 0
    shown = run("runs", "--failed", "--limit", "5")
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if "restore-database" in line)
    assert "Failed" in line
    rows = json.loads(run("runs", "--failed", "--json").stdout)
    newest = next(r for r in rows if r["run"].startswith("restore-database"))
    assert newest["state"] == "Failed" and "no backups of gantt" in newest["why"]
    assert "+09:00" in newest["started"] and "UTC" in newest["started"]
    gone = run("runs", extra={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    _one_line_error(gone, EXIT_CONFIG, "cannot be reached", "backup log")
