"""Issue 12, class 9: malformed command lines and settings, as a tired operator or an
attacker would type them.

Every row asserts what the operator sees: the exact exit code, exactly one non-empty line on
standard error (no traceback, no "internal error", no terminal escapes, no secret), and that
nothing changed on disk (the backups, the live database, the file-set root, the staging
folder and the log).  The rows run in-process through ``cli.main`` (fast); a selection also
runs as a real ``python -m backupflow_app.cli`` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backupflow
from backupflow.keys import generate_keys
from backupflow_app import cli
from tests.support.keys import key_env
from tests.support.trees import make_api_tree

SECRET = "Pa55-w0rd-n0t-f0r-0utput"
#: The session's repository keys, as an operator's environment holds them.
KEYS_ENV = key_env()
W = "{w}"  # replaced by the world folder in arguments and settings
EXIT_USAGE, EXIT_CONFIG, EXIT_FAILED = 2, 3, 1
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Row:
    """One malformed invocation: arguments, extra settings, expected code and a fragment
    of the one error line that shows it is the right error."""

    args: tuple[str, ...]
    code: int
    fragment: str
    #: Settings for this row; None removes one of the world's.
    env: dict[str, str | None] = field(default_factory=dict)
    subprocess: bool = False


def usage(*args: str, fragment: str, subprocess: bool = False) -> Row:
    return Row(args, EXIT_USAGE, fragment, subprocess=subprocess)


def setting(
    variable: str,
    value: str,
    fragment: str,
    *args: str,
    subprocess: bool = False,
    unset: tuple[str, ...] = (),
) -> Row:
    env: dict[str, str | None] = {variable: value, **dict.fromkeys(unset)}
    return Row(args or ("catalog",), EXIT_CONFIG, fragment, env, subprocess=subprocess)


RESTORE_DB = ("restore", "database")
RESTORE_CONFIG = ("restore", "files", "--set", "config")
ASIDE = f"{W}/api/.backupflow-aside-"
BACKUP = ("backup", "database")

ROWS: dict[str, Row] = {
    # --- commands, options and their values ---------------------------------------------
    "no-arguments": usage(fragment="needs a command", subprocess=True),
    "unknown-command": usage("nope", fragment="No such command 'nope'", subprocess=True),
    "unknown-subcommand": usage("restore", "nope", fragment="No such command 'nope'"),
    "group-without-command": usage("restore", fragment="needs a command"),
    "config-without-command": usage("config", fragment="needs a command"),
    "unknown-option": usage(*BACKUP, "--bogus", fragment="No such option: --bogus"),
    "unknown-option-failover": usage("dr", "failover", "--bogus", fragment="--bogus"),
    "unknown-option-replicate": usage("replicate", "--all", fragment="--all"),
    "bad-backup-type": usage(*BACKUP, "--type", "weekly", fragment="'weekly'"),
    "backup-type-without-value": usage(*BACKUP, "--type", fragment="requires an argument"),
    "bad-file-set": usage("backup", "files", "--set", "photos", fragment="'photos'"),
    "restore-bad-file-set": usage(
        "restore", "files", "--set", "nope", "--latest", fragment="'nope'"
    ),
    "from-bogus": usage(
        *RESTORE_DB, "--from", "bogus", "--latest", fragment="'bogus'", subprocess=True
    ),
    "from-empty": usage(*RESTORE_DB, "--from", "", "--latest", fragment="--from"),
    "latest-and-at": usage(
        *RESTORE_DB, "--latest", "--at", "2026-01-01T00:00:00+00:00", fragment="not both"
    ),
    "at-without-value": usage(
        *RESTORE_DB, "--at", fragment="requires an argument", subprocess=True
    ),
    "neither-at-nor-latest": usage(*RESTORE_DB, fragment="--latest"),
    "extra-argument": usage(*RESTORE_DB, "--latest", "now", fragment="unexpected extra"),
    "config-show-extra-argument": usage("config", "show", "x", fragment="unexpected extra"),
    "catalog-bad-tier": usage("catalog", "--tier", "tape", fragment="'tape'"),
    "prune-bad-tier": usage("prune", "--tier", "tape", fragment="'tape'"),
    "prune-extra-argument": usage("prune", "everything", fragment="unexpected extra"),
    "demo-workdir-empty": usage("demo", "--workdir", "", fragment="--workdir is empty"),
    "demo-workdir-without-value": usage("demo", "--workdir", fragment="requires an argument"),
    # --- restore times --------------------------------------------------------------------
    "at-empty": usage(*RESTORE_DB, "--at", "", fragment="--at is empty", subprocess=True),
    "at-empty-with-replace": usage(*RESTORE_DB, "--at", "", "--replace", fragment="empty"),
    "at-whitespace": usage(*RESTORE_DB, "--at", " \t ", fragment="--at is empty"),
    "at-words": usage(*RESTORE_DB, "--at", "yesterday", fragment="ISO-8601"),
    "at-year-1": usage(
        *RESTORE_DB, "--at", "0001-01-01T00:00:00", fragment="out of range", subprocess=True
    ),
    "at-year-1-utc": usage(
        *RESTORE_DB, "--at", "0001-01-01T00:00:00+00:00", fragment="before 2000"
    ),
    "at-year-9999": usage(*RESTORE_DB, "--at", "9999-12-31T23:59:59", fragment="later than now"),
    "at-year-9999-west": usage(
        *RESTORE_DB, "--at", "9999-12-31T23:59:59-12:00", fragment="out of range"
    ),
    "at-1999": usage(*RESTORE_DB, "--at", "1999-12-31T23:59:59+00:00", fragment="before 2000"),
    "at-tomorrow": usage(
        *RESTORE_DB, "--at", (NOW + timedelta(days=1)).isoformat(), fragment="later than now"
    ),
    "at-in-ten-minutes": usage(
        *RESTORE_DB, "--at", (NOW + timedelta(minutes=10)).isoformat(), fragment="later than now"
    ),
    "at-february-30": usage(*RESTORE_DB, "--at", "2026-02-30T00:00:00", fragment="ISO-8601"),
    "at-hour-25": usage(*RESTORE_DB, "--at", "2026-01-01T25:00:00", fragment="ISO-8601"),
    "at-offset-25h": usage(*RESTORE_DB, "--at", "2026-01-01T00:00:00+25:00", fragment="ISO-8601"),
    "at-terminal-escape": usage(
        *RESTORE_DB, "--at", "\x1b[2J\x1b[31mred", fragment="\\x1b[2J", subprocess=True
    ),
    "at-rich-markup": usage(*RESTORE_DB, "--at", "[/red][bold]x", fragment="[/red][bold]x"),
    "at-bidi-override": usage(*RESTORE_DB, "--at", "2026\u202e-01-01", fragment="\\u202e"),
    "at-huge": usage(*RESTORE_DB, "--at", "2026-01-01T00:00:00" + "0" * 100_000, fragment="ISO"),
    "files-at-empty-in-place": usage(
        *RESTORE_CONFIG, "--at", "", "--in-place", fragment="--at is empty"
    ),
    "files-at-1999": usage(*RESTORE_CONFIG, "--at", "1999-01-01", "--in-place", fragment="2000"),
    "files-neither-at-nor-latest": usage(*RESTORE_CONFIG, "--in-place", fragment="--latest"),
    "system-at-empty": usage("dr", "restore-system", "--at", "", fragment="--at is empty"),
    "system-at-future": usage(
        "dr", "restore-system", "--at", "2999-01-01T00:00:00Z", fragment="later than now"
    ),
    "system-from-auto": usage("dr", "restore-system", "--from", "auto", fragment="not auto"),
    "system-from-bogus": usage("dr", "restore-system", "--from", "tape", fragment="'tape'"),
    # --- names and paths ------------------------------------------------------------------
    "database-traversal": usage(
        *RESTORE_DB, "--latest", "--database", "../../etc/cron.d/x", fragment="not a database"
    ),
    "database-empty": usage(*RESTORE_DB, "--latest", "--database", "", fragment="--database"),
    "database-unc": usage(
        *RESTORE_DB, "--latest", "--database", "\\\\attacker\\share", fragment="not a database"
    ),
    "database-quote": usage(
        *RESTORE_DB, "--latest", "--database", "x'; DROP DATABASE y;--", fragment="not a database"
    ),
    "into-relative-outside-roots": usage(
        *RESTORE_DB, "--latest", "--into", "r.db", fragment=f"{W}/cwd/r.db is not under"
    ),
    "into-absolute-outside-roots": usage(
        *RESTORE_DB, "--latest", "--into", "/etc/backupflow-test.db", fragment="not under"
    ),
    "into-through-planted-link": usage(
        *RESTORE_DB, "--latest", "--into", f"{W}/app/escape/x.db", fragment="not under"
    ),
    "into-dotdot": usage(
        *RESTORE_DB, "--latest", "--into", f"{W}/app/../outside/x.db", fragment="not under"
    ),
    "into-empty": usage(*RESTORE_DB, "--latest", "--into", "", fragment="--into is empty"),
    "into-sql-server-path": Row(
        (*RESTORE_DB, "--latest", "--into", "../../var/lib/x"),
        EXIT_USAGE,
        "is not a database name",
        {"BACKUPFLOW_DATABASE__ENGINE": "sqlserver"},
    ),
    "files-into-through-planted-link": usage(
        *RESTORE_CONFIG, "--latest", "--into", f"{W}/app/escape/config", fragment="not under"
    ),
    "into-replace-outside": usage(
        *RESTORE_DB,
        "--latest",
        "--replace",
        "--into",
        f"{W}/outside/victim.db",
        fragment="not under",
    ),
    "files-in-place-and-into": usage(
        *RESTORE_CONFIG, "--latest", "--in-place", "--into", f"{W}/api/x", fragment="not both"
    ),
    "files-into-relative-outside": usage(
        *RESTORE_CONFIG, "--latest", "--into", "restored", fragment="not under"
    ),
    "files-into-empty": usage(*RESTORE_CONFIG, "--latest", "--into", "", fragment="empty"),
    "undo-without-value": usage(*RESTORE_CONFIG, "--undo", fragment="requires an argument"),
    "undo-empty": usage(*RESTORE_CONFIG, "--undo", "", fragment="--undo is empty"),
    "undo-missing": usage(
        *RESTORE_CONFIG, "--undo", ASIDE + "gone", fragment="No such file", subprocess=True
    ),
    "undo-a-file": usage(*RESTORE_CONFIG, "--undo", ASIDE + "file", fragment="not a folder"),
    "undo-a-link": usage(*RESTORE_CONFIG, "--undo", ASIDE + "link", fragment="is a link"),
    "undo-not-an-aside-folder": usage(
        *RESTORE_CONFIG, "--undo", f"{W}/api/config", fragment="not a folder kept aside"
    ),
    "undo-aside-of-another-root": usage(
        *RESTORE_CONFIG,
        "--undo",
        f"{W}/outside/.backupflow-aside-x",
        fragment="not a folder kept aside",
    ),
    "undo-with-latest": usage(
        *RESTORE_CONFIG, "--undo", ASIDE + "good", "--latest", fragment="cannot be combined"
    ),
    "undo-with-dry-run": usage(
        *RESTORE_CONFIG, "--undo", ASIDE + "good", "--dry-run", fragment="--dry-run"
    ),
    "undo-with-into": usage(
        *RESTORE_CONFIG, "--undo", ASIDE + "good", "--into", f"{W}/api/x", fragment="--into"
    ),
    # --- damaged undo records: the operation fails (exit 1), nothing is touched -----------
    "undo-record-corrupt-json": Row(
        (*RESTORE_CONFIG, "--undo", ASIDE + "corrupt"), 1, "undo record"
    ),
    "undo-record-empty-object": Row((*RESTORE_CONFIG, "--undo", ASIDE + "empty"), 1, "undo record"),
    "undo-record-wrong-types": Row((*RESTORE_CONFIG, "--undo", ASIDE + "types"), 1, "undo record"),
    "undo-record-missing": Row((*RESTORE_CONFIG, "--undo", ASIDE + "bare"), 1, "undo record"),
    "undo-record-is-a-link": Row((*RESTORE_CONFIG, "--undo", ASIDE + "linked"), 1, "undo record"),
    "undo-record-is-a-fifo": Row((*RESTORE_CONFIG, "--undo", ASIDE + "fifo"), 1, "undo record"),
    "undo-record-too-deep": Row((*RESTORE_CONFIG, "--undo", ASIDE + "deep"), 1, "undo record"),
    # --- settings ---------------------------------------------------------------------------
    "list-setting-not-json": setting(
        "BACKUPFLOW_DATABASE__DATABASES", "not json", "cannot be parsed", subprocess=True
    ),
    "restore-roots-not-json": setting("BACKUPFLOW_RESTORE_ROOTS", "/srv", "restore_roots"),
    "hook-not-json": setting("BACKUPFLOW_FILES__POST_RESTORE_HOOK", "pm2 reload", "files"),
    "hook-env-secret-not-json": setting("BACKUPFLOW_FILES__HOOK_ENV", SECRET, "files"),
    "json-nested-too-deep": setting("BACKUPFLOW_RESTORE_ROOTS", "[" * 50_000, "cannot be read"),
    "env-file-binary": setting(
        "BACKUPFLOW_CONFIG", f"{W}/conf/binary.conf", "not UTF-8", subprocess=True
    ),
    "env-file-nul": setting("BACKUPFLOW_CONFIG", f"{W}/conf/nul.conf", "binary file"),
    "env-file-latin1": setting("BACKUPFLOW_CONFIG", f"{W}/conf/latin1.conf", "not UTF-8"),
    "env-file-a-folder": setting("BACKUPFLOW_CONFIG", f"{W}/conf", "not a readable file"),
    "env-file-missing": setting("BACKUPFLOW_CONFIG", f"{W}/conf/nope.conf", "not a readable"),
    "env-file-under-a-file": setting("BACKUPFLOW_CONFIG", f"{W}/afile/x", "not a readable"),
    "env-file-too-large": setting("BACKUPFLOW_CONFIG", f"{W}/conf/big.conf", "larger than"),
    "env-file-fifo": setting("BACKUPFLOW_CONFIG", f"{W}/conf/fifo", "not a regular file"),
    "env-file-device": setting("BACKUPFLOW_CONFIG", "/dev/zero", "not a regular file"),
    "env-file-secret-and-bad-list": setting(
        "BACKUPFLOW_CONFIG", f"{W}/conf/secret-bad-list.conf", "cannot be parsed"
    ),
    "env-file-secret-and-bad-name": setting(
        "BACKUPFLOW_CONFIG",
        f"{W}/conf/secret-bad-name.conf",
        "database.name",
        unset=("BACKUPFLOW_DATABASE__NAME", "BACKUPFLOW_DATABASE__PASSWORD"),
    ),
    "password-as-a-list": setting(
        "BACKUPFLOW_DATABASE",
        json.dumps({"password": [SECRET]}),
        "database.password",
        unset=("BACKUPFLOW_DATABASE__PASSWORD",),
    ),
    "port-is-the-secret": setting("BACKUPFLOW_DATABASE__PORT", SECRET, "database.port"),
    "cron-minute-99": setting(
        "BACKUPFLOW_JOBS__DATABASE_FULL__SCHEDULE", "99 * * * *", "schedule", subprocess=True
    ),
    "cron-letters": setting("BACKUPFLOW_JOBS__DATABASE_FULL__SCHEDULE", "a b c d e", "schedule"),
    "cron-four-fields": setting("BACKUPFLOW_JOBS__LOGS__SCHEDULE", "0 2 * *", "five fields"),
    "cron-at-reboot": setting("BACKUPFLOW_JOBS__CONFIG__SCHEDULE", "@reboot", "five fields"),
    "timezone-unknown": setting("BACKUPFLOW_TIMEZONE", "Mars/Olympus", "timezone"),
    "timezone-traversal": setting("BACKUPFLOW_TIMEZONE", "../../etc/passwd", "timezone"),
    "timezone-empty": setting("BACKUPFLOW_TIMEZONE", "", "timezone"),
    "staging-relative": setting("BACKUPFLOW_STAGING_DIR", "staging", "staging_dir"),
    "staging-is-a-file": setting(
        "BACKUPFLOW_STAGING_DIR", f"{W}/afile", "not a folder", *BACKUP, subprocess=True
    ),
    "staging-is-a-link": setting(
        "BACKUPFLOW_STAGING_DIR", f"{W}/staging-link", "is a link", *BACKUP
    ),
    "backup-log-relative": setting("BACKUPFLOW_BACKUP_LOG", "backup.log", "backup_log"),
    "backup-log-is-a-folder": setting("BACKUPFLOW_BACKUP_LOG", f"{W}/conf", "is a folder", *BACKUP),
    "backup-log-under-a-file": setting(
        "BACKUPFLOW_BACKUP_LOG", f"{W}/afile/backup.log", "not a folder", *BACKUP
    ),
    "file-set-root-relative": setting("BACKUPFLOW_FILES__CONFIG__ROOT", "api", "files.config.root"),
    "restore-root-relative": setting("BACKUPFLOW_RESTORE_ROOTS", '["srv"]', "restore_roots"),
    "failover-address-not-an-ip": setting(
        "BACKUPFLOW_FAILOVER__STANDBY_ADDRESS", "not-an-ip;x", "IPv4"
    ),
    "failover-ipv6-for-a-record": setting("BACKUPFLOW_FAILOVER__STANDBY_ADDRESS", "::1", "IPv4"),
    "failover-health-file-url": setting(
        "BACKUPFLOW_FAILOVER__HEALTH_URL", "file:///etc/passwd", "http"
    ),
    "failover-record-name": setting("BACKUPFLOW_FAILOVER__RECORD_NAME", "bad name!", "DNS name"),
    "database-name-traversal": setting("BACKUPFLOW_DATABASE__NAME", "../../etc/x", "database.name"),
    "databases-traversal": setting(
        "BACKUPFLOW_DATABASE__DATABASES", '["ok", "../x"]', "database.databases"
    ),
    "databases-too-many": setting(
        "BACKUPFLOW_DATABASE__DATABASES", json.dumps(["a"] * 2000), "at most 1000"
    ),
    "zstd-level-99": setting("BACKUPFLOW_PIPELINE__ZSTD_LEVEL", "99", "zstd_level"),
    "tier-url-ftp": setting("BACKUPFLOW_REPOSITORY__PRIMARY__URL", "ftp://x", "tier URL"),
    "database-object-bad-type": setting(
        "BACKUPFLOW_DATABASE", '{"name": 5}', "database.name", unset=("BACKUPFLOW_DATABASE__NAME",)
    ),
    "orphan-grace-negative": setting("BACKUPFLOW_ORPHAN_GRACE_MINUTES", "-1", "orphan_grace"),
    # --- repository keys (issue 13) -------------------------------------------------------
    "key-without-command": usage("key", fragment="needs a command"),
    "key-init-nowhere": usage("key", "init", fragment="--env-file PATH", subprocess=True),
    "key-init-env-file-empty": usage("key", "init", "--env-file", "", fragment="is empty"),
    "key-init-env-file-folder": usage("key", "init", "--env-file", W, fragment="regular file"),
    "key-init-env-file-no-folder": usage(
        "key", "init", "--env-file", f"{W}/nope/k.env", fragment="does not exist"
    ),
    "key-init-escrow-not-age": usage(
        "key", "init", "--print-secrets", "--escrow-recipient", "ssh-ed25519 AAAA", fragment="age1"
    ),
    "key-show-env-file-missing": usage(
        "key", "show", "--env-file", f"{W}/nope.env", fragment="does not exist"
    ),
    "key-show-bad-signing-key": setting(
        "BACKUPFLOW_CRYPTO__SIGNING_KEY", SECRET, "BACKUPFLOW_CRYPTO__SIGNING_KEY", "key", "show"
    ),
    "key-show-bad-identity": setting(
        "BACKUPFLOW_CRYPTO__IDENTITIES",
        f"AGE-SECRET-KEY-1{SECRET}",
        "BACKUPFLOW_CRYPTO__IDENTITIES",
        "key",
        "show",
        subprocess=True,
    ),
    "key-show-bad-recipient": setting(
        "BACKUPFLOW_CRYPTO__RECIPIENTS",
        '["age1zz"]',
        "BACKUPFLOW_CRYPTO__RECIPIENTS",
        "key",
        "show",
    ),
    "key-show-bad-verify-key": setting(
        "BACKUPFLOW_CRYPTO__VERIFY_KEYS",
        '["bfverify1"]',
        "BACKUPFLOW_CRYPTO__VERIFY_KEYS",
        "key",
        "show",
    ),
    "key-show-missing-block": setting(
        "BACKUPFLOW_CRYPTO__IDENTITIES_BLOCK",
        "no-such-block",
        "'no-such-block'",
        "key",
        "show",
        unset=("BACKUPFLOW_CRYPTO__IDENTITIES",),
    ),
    "key-init-already-configured": setting(
        "BACKUPFLOW_CRYPTO__SIGNING_KEY",
        generate_keys().signing_key,
        "already configured",
        "key",
        "init",
        "--print-secrets",
    ),
    "key-rotate-nothing": Row(
        ("key", "rotate", "--print-secrets"),
        EXIT_CONFIG,
        "no keys",
        dict.fromkeys(KEYS_ENV),
        subprocess=True,
    ),
    "adopt-set-and-database": usage(
        "adopt", "--set", "config", "--database", "gantt", fragment="not both"
    ),
    "adopt-bad-database": usage("adopt", "--database", "a;b", fragment="not a database name"),
    "verify-read-data-over-100": usage("verify", "--read-data", "101", fragment="--read-data"),
    "verify-read-data-words": usage("verify", "--read-data", "all", fragment="valid number"),
}


def _build_world(root: Path) -> dict[str, str]:
    """A live database with a backup in three tiers, an API folder with a config backup,
    and the hostile things the rows point at.  Returns the settings (environment)."""
    env = {
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(root / "backups"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(root / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(root / "dr"),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(root / "app" / "gantt.db"),
        "BACKUPFLOW_DATABASE__PASSWORD": SECRET,
        "BACKUPFLOW_BACKUP_LOG": str(root / "log" / "backup.log"),
        "BACKUPFLOW_STAGING_DIR": str(root / "staging"),
        **key_env(),
        **{
            f"BACKUPFLOW_FILES__{s}__ROOT": str(root / "api") for s in ("CONFIG", "LOGS", "UPLOADS")
        },
        **KEYS_ENV,
    }
    (root / "app").mkdir(parents=True)
    conn = sqlite3.connect(root / "app" / "gantt.db")
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(500)])
    conn.close()
    api = make_api_tree(root / "api")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert cli.run(["backup", "database"]) == 0
        assert cli.run(["backup", "files", "--set", "config"]) == 0

    (root / "cwd").mkdir()
    (root / "outside").mkdir()
    (root / "outside" / "victim.db").write_bytes(b"not a database, and not to be replaced")
    os.symlink(root / "outside", root / "app" / "escape")
    (root / "afile").write_text("a file where a folder should be\n")
    os.symlink(root / "outside", root / "staging-link")
    conf = root / "conf"
    conf.mkdir()
    (conf / "binary.conf").write_bytes(b"DB_NAME=\xff\xfe\x00\x01\n")
    (conf / "nul.conf").write_bytes(b"DB_NAME=gantt\x00\n")
    (conf / "latin1.conf").write_bytes("DB_NAME=caf\xe9\n".encode("latin-1"))
    (conf / "big.conf").write_bytes(b"# padding\n" * (200 << 10))
    os.mkfifo(conf / "fifo")
    (conf / "secret-bad-list.conf").write_text(
        f"DB_PASSWORD='{SECRET}'\nBACKUPFLOW_DATABASE__DATABASES=not json {SECRET}\n"
    )
    (conf / "secret-bad-name.conf").write_text(f"DB_PASSWORD='{SECRET}'\nDB_NAME='Gantt DB!'\n")

    def aside(name: str, record: bytes | None) -> Path:
        folder = api / f".backupflow-aside-{name}"
        folder.mkdir()
        if record is not None:
            (folder / "undo.json").write_bytes(record)
        return folder

    good = json.dumps({"created": ["config/new.json"], "replaced": []}).encode()
    aside("good", good)
    aside("corrupt", b'{"created": ["config/app.json"], "replaced": [')
    aside("empty", b"{}")
    aside("types", b'{"created": 5, "replaced": [{"path": "config/app.json"}]}')
    aside("bare", None)
    aside("deep", b"[" * 100_000)
    os.symlink(api / ".backupflow-aside-good" / "undo.json", aside("linked", None) / "undo.json")
    os.mkfifo(aside("fifo", None) / "undo.json")
    (api / ".backupflow-aside-file").write_text(good.decode())
    os.symlink(api / ".backupflow-aside-good", api / ".backupflow-aside-link")
    other = root / "outside" / ".backupflow-aside-x"
    other.mkdir()
    (other / "undo.json").write_bytes(good)
    return env


@dataclass
class World:
    root: Path
    env: dict[str, str]

    def fill(self, text: str) -> str:
        return text.replace(W, str(self.root))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> World:
    del prefect_server  # in-process flows run against the session's test server
    root = tmp_path_factory.mktemp("cli-errors")
    return World(root, _build_world(root))


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, size, modification time and content hash of every entry under ``root``."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            entry: tuple[object, ...] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
            if stat.S_ISLNK(info.st_mode):
                entry += (os.readlink(path),)
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entry += (info.st_size, info.st_mtime_ns, digest)
            found[os.path.relpath(path, root)] = entry
    return found


@pytest.fixture
def in_world(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The world's settings in the environment and its ``cwd`` folder as the current one."""
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(world.root / "cwd")
    yield world


def check_one_error_line(world: World, row: Row, code: int, stdout: str, stderr: str) -> None:
    assert code == row.code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert world.fill(row.fragment) in line, line
    assert "Traceback" not in stdout + stderr
    assert "internal error" not in line
    assert "\x1b" not in stderr  # no terminal escape reaches the operator's terminal
    assert "\u202e" not in stderr
    assert SECRET not in stdout + stderr
    assert len(line) <= 2000


def _apply(world: World, row: Row, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for key, value in row.env.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, world.fill(value))
    return [world.fill(arg) for arg in row.args]


@pytest.mark.parametrize("name", list(ROWS))
def test_malformed_invocation_is_one_line_and_its_exit_code(
    name: str,
    in_world: World,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = ROWS[name]
    args = _apply(in_world, row, monkeypatch)
    before = snapshot(in_world.root)

    with pytest.raises(SystemExit) as leaving:
        cli.main(args)

    out, err = capsys.readouterr()
    assert isinstance(leaving.value.code, int)
    check_one_error_line(in_world, row, leaving.value.code, out, err)
    assert snapshot(in_world.root) == before


def _subprocess_env(world: World, row: Row, prefect_server: str, home: Path) -> dict[str, str]:
    source = Path(backupflow.__file__).resolve().parents[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    env = {
        **base,
        "PYTHONPATH": os.pathsep.join([str(source), str(source.parent)]),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **world.env,
    }
    for key, value in row.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = world.fill(value)
    return env


@pytest.mark.parametrize("name", [name for name, row in ROWS.items() if row.subprocess])
def test_malformed_invocation_in_a_real_process(
    name: str, world: World, prefect_server: str, tmp_path: Path
) -> None:
    row = ROWS[name]
    before = snapshot(world.root)

    done = subprocess.run(
        [sys.executable, "-m", "backupflow_app.cli", *(world.fill(a) for a in row.args)],
        env=_subprocess_env(world, row, prefect_server, tmp_path / "prefect-home"),
        cwd=world.root / "cwd",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    check_one_error_line(world, row, done.returncode, done.stdout, done.stderr)
    assert snapshot(world.root) == before


def test_the_battery_is_large_and_covers_every_kind() -> None:
    codes = [row.code for row in ROWS.values()]
    assert len(ROWS) >= 60
    assert codes.count(EXIT_USAGE) >= 40 and codes.count(EXIT_CONFIG) >= 30
    assert EXIT_FAILED in codes


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        cli.main(["--help"])

    out, err = capsys.readouterr()
    assert leaving.value.code == 0 and err == ""
    flat = " ".join(out.replace("│", " ").split())
    for code in (0, 1, 2, 3, 70, 130):
        assert f"{code} {cli.EXIT_CODES[code].split()[0]}" in flat


@pytest.mark.parametrize(
    ("raised", "code", "says"),
    [
        (PermissionError(13, "Permission denied", "/var/backups/x"), 1, "Permission denied"),
        (IsADirectoryError(21, "Is a directory", "/var/log/backup.log"), 1, "/var/log/backup.log"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (ZeroDivisionError("division by zero"), 70, "internal error: ZeroDivisionError"),
    ],
)
def test_what_escapes_a_command_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: BaseException,
    code: int,
    says: str,
) -> None:
    def explode(*, for_flows: bool = True) -> None:
        raise raised

    monkeypatch.setattr(cli, "cli_settings", explode)

    with pytest.raises(SystemExit) as leaving:
        cli.main(["catalog"])

    out, err = capsys.readouterr()
    assert leaving.value.code == code
    assert len(err.splitlines()) == 1 and says in err, err
    assert "Traceback" not in out + err


def test_debug_shows_where_a_bug_is(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*, for_flows: bool = True) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cli_settings", explode)
    monkeypatch.setenv("BACKUPFLOW_DEBUG", "1")

    with pytest.raises(ZeroDivisionError):
        cli.main(["catalog"])
