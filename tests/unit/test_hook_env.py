"""Class 8 (hook environment): a post-restore command that prints its environment sees no
secret, and a secret it echoes anyway is masked in its captured output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from backupflow.config import Settings
from backupflow.filesets.contents import run_configured_hook, run_hook
from backupflow.redact import MASK, known_secrets, mask

#: What the worker's environment holds while a restore runs.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAHOOKTEST0000001",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYhook",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEHook//session",
    "BACKUPFLOW_DATABASE__PASSWORD": "env-db-password-9f3a",
    "PREFECT_API_KEY": "pnu_hooktestapikey0123456789",
    "PREFECT_API_AUTH_STRING": "admin:hook-auth-pass",
    "DB_PASSWORD": "legacy-conf-password-77",
}
DATABASE_PASSWORD = 'settings-pa"ss\\word-42'
PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", "/home/backupflow")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("PM2_HOME", "/srv/pm2")
    monkeypatch.setenv("NODE_OPTIONS", "--require /tmp/evil.js")  # not allowed: not passed


@pytest.fixture
def hook_settings(settings: Settings, tmp_path: Path) -> Settings:
    files = settings.files.model_copy(
        update={"post_restore_cwd": tmp_path, "hook_env": ["PM2_HOME"], "hook_timeout_seconds": 30}
    )
    database = settings.database.model_copy(update={"password": SecretStr(DATABASE_PASSWORD)})
    return settings.model_copy(update={"files": files, "database": database})


def _secret_values() -> list[str]:
    return [*SECRETS.values(), DATABASE_PASSWORD]


def test_the_hook_gets_path_home_lang_and_the_allowed_names_only(
    worker_env: None, hook_settings: Settings
) -> None:
    files = hook_settings.files.model_copy(update={"post_restore_hook": PRINT_ENV})
    result = run_configured_hook(hook_settings.model_copy(update={"files": files}))
    assert result.ok, result.output
    seen = json.loads(result.output)
    assert set(seen) == {"PATH", "HOME", "LANG", "PM2_HOME"}
    assert (seen["HOME"], seen["LANG"], seen["PM2_HOME"]) == (
        "/home/backupflow",
        "C.UTF-8",
        "/srv/pm2",
    )
    for value in _secret_values():
        assert value not in result.output


def test_env_as_the_hook_prints_no_secret(worker_env: None, hook_settings: Settings) -> None:
    files = hook_settings.files.model_copy(update={"post_restore_hook": ["env"]})
    result = run_configured_hook(hook_settings.model_copy(update={"files": files}))
    assert result.ok and "PM2_HOME=/srv/pm2" in result.output
    assert "NODE_OPTIONS" not in result.output
    for key, value in SECRETS.items():
        assert key not in result.output and value not in result.output


def test_a_secret_the_hook_echoes_is_masked_in_every_spelling(
    worker_env: None, hook_settings: Settings, tmp_path: Path
) -> None:
    """The hook reads secrets on its own (an .env file) and prints them: raw, as JSON,
    as a Python repr and URL-encoded."""
    leaked = tmp_path / "leaked.json"
    leaked.write_text(json.dumps(_secret_values()))
    script = (
        "import json, sys, urllib.parse\n"
        f"values = json.load(open({str(leaked)!r}))\n"
        "for v in values:\n"
        "    print(v, json.dumps(v), repr(v), sep='\\n')\n"
        "    print(urllib.parse.quote(v, safe=''))\n"
        "print('reload done', file=sys.stderr)\n"
    )
    files = hook_settings.files.model_copy(
        update={"post_restore_hook": [sys.executable, "-c", script]}
    )
    result = run_configured_hook(hook_settings.model_copy(update={"files": files}))
    assert result.ok and "reload done" in result.output
    assert result.output.count(MASK) >= 4 * len(_secret_values())
    for value in _secret_values():
        assert value not in result.output
    assert 'pa\\"ss' not in result.output and "pa%22ss" not in result.output


def test_output_of_a_hook_that_times_out_is_masked_too(worker_env: None, tmp_path: Path) -> None:
    script = "import sys, time; print('env-db-password-9f3a', flush=True); time.sleep(30)"
    result = run_hook(
        [sys.executable, "-c", script],
        tmp_path,
        timeout=2,
        secrets=["env-db-password-9f3a"],
    )
    assert result.returncode == 124 and "timed out" in result.output
    assert "env-db-password-9f3a" not in result.output


def test_known_secrets_covers_the_environment_and_the_settings(
    hook_settings: Settings,
) -> None:
    environ = {**SECRETS, "PATH": "/usr/bin", "HOME": "/home/x", "SHORT_TOKEN": "abc"}
    known = known_secrets(hook_settings, environ, load_blocks=False)
    for value in _secret_values():
        assert value in known
    assert "/usr/bin" not in known and "/home/x" not in known
    assert "abc" not in known  # too short to mask without garbling output
    assert known == sorted(known, key=len, reverse=True)


def test_a_secret_inside_another_is_masked_whole() -> None:
    text = "token=abcd1234efgh and abcd1234"
    assert mask(text, ["abcd1234efgh", "abcd1234"]) == f"token={MASK} and {MASK}"
