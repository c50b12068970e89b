"""``backupflow key init | show | rotate`` as an operator runs them: a real process, the
files and blocks it leaves, and what reaches the terminal (never a secret unless asked)."""

from __future__ import annotations

import grp
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backupflow.config import CONFIG_ENV_VAR, Settings, load_settings
from backupflow.crypto import decrypting, encrypting
from backupflow.envelope import open_envelope, seal
from backupflow.errors import ForeignManifestError, MissingKeyError
from backupflow.keys import GeneratedKeys, Keyring, generate_keys, key_id, load_keyring
from tests.conftest import need
from tests.support.pgcluster import OS_USER, as_cluster_user, launcher, pg_missing, pg_workdir

CLI = [sys.executable, "-m", "backupflow_app"]
SECRET_SHAPES = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{20}|BACKUPFLOW-SIGNING-KEY-1[0-9a-f]{16}")


@pytest.fixture
def env(tmp_path: Path, prefect_server: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    return {
        **base,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "primary"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
    }


def key(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "key", *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ring_of(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> Keyring:
    """The keys a worker reading ``env_file`` would hold."""
    monkeypatch.setenv(CONFIG_ENV_VAR, str(env_file))
    return load_keyring(load_settings().crypto)


def secrets_in(env_file: Path) -> list[str]:
    """Every secret value written into ``env_file``."""
    found = re.findall(
        r"(AGE-SECRET-KEY-1[0-9A-Z]+|BACKUPFLOW-SIGNING-KEY-1[0-9a-f]+)", env_file.read_text()
    )
    assert found
    return found


def round_trip(writer: Keyring, reader: Keyring) -> bytes:
    stored = b"".join(encrypting([b"gantt rows"], writer.age_recipients()))
    with decrypting(io.BytesIO(stored), reader.age_identities(writer.recipient_ids)) as plain:
        return plain.read()


def test_init_writes_a_private_env_file_and_prints_no_secret(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    done = key(env, "init", "--env-file", str(env_file))

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    shown = done.stdout + done.stderr
    assert not SECRET_SHAPES.search(shown)
    for secret in secrets_in(env_file):
        assert secret not in shown
    ring = ring_of(env_file, monkeypatch)
    assert ring.signer is not None
    assert ring.recipient_ids[0] in done.stdout and ring.signer.key_id in done.stdout
    assert ring.recipients[0] in done.stdout  # the public key, whole
    assert "losing the keys means losing the backups" in done.stdout.lower()
    assert round_trip(ring, ring) == b"gantt rows"
    payload = open_envelope(seal(b"{}", ring), ring, source="t")
    assert payload == b"{}"


def test_init_keeps_the_env_files_other_lines_and_its_mode(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    env_file.write_text("BACKUPFLOW_DATABASE__NAME=gantt\n# comment\n")
    env_file.chmod(0o640)

    done = key(env, "init", "--env-file", str(env_file))

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert env_file.read_text().startswith("BACKUPFLOW_DATABASE__NAME=gantt\n# comment\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(env_file))
    assert load_settings().database.name == "gantt"


def test_init_refuses_to_replace_configured_keys(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    assert key(env, "init", "--env-file", str(env_file)).returncode == 0
    before = env_file.read_bytes()
    first = ring_of(env_file, monkeypatch)
    assert first.signer is not None

    again = key(env, "init", "--env-file", str(env_file))

    assert again.returncode == 3
    assert again.stderr.count("\n") == 1 and again.stderr.startswith("error: ")
    assert "already configured" in again.stderr and first.signer.key_id in again.stderr
    assert "key rotate" in again.stderr
    assert env_file.read_bytes() == before
    # keys in the environment count as configured too
    elsewhere = tmp_path / "other.env"
    from_env = key(
        env,
        "init",
        "--env-file",
        str(elsewhere),
        BACKUPFLOW_CRYPTO__SIGNING_KEY=generate_keys().signing_key,
    )
    assert from_env.returncode == 3 and not elsewhere.exists()
    forced = key(env, "init", "--env-file", str(env_file), "--force")
    assert forced.returncode == 0, forced.stderr
    assert env_file.read_bytes() != before


def test_show_prints_public_parts_and_key_ids_only(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    assert key(env, "init", "--env-file", str(env_file)).returncode == 0
    ring = ring_of(env_file, monkeypatch)
    assert ring.signer is not None

    shown = key(env, "show", "--env-file", str(env_file))

    assert shown.returncode == 0, shown.stderr
    assert not SECRET_SHAPES.search(shown.stdout + shown.stderr)
    for secret in secrets_in(env_file):
        assert secret not in shown.stdout
    for public in (*ring.recipients, ring.signer.public_text, *ring.identity_ids()):
        assert public in shown.stdout
    assert "missing" not in shown.stdout

    # a worker that holds only the public parts and the signing key
    worker = key(
        env,
        "show",
        BACKUPFLOW_CRYPTO__RECIPIENTS=f'["{ring.recipients[0]}"]',
        BACKUPFLOW_CRYPTO__VERIFY_KEYS=f'["{ring.signer.public_text}"]',
    )
    assert worker.returncode == 0, worker.stderr
    assert "no signing key: this host cannot record backups" in worker.stdout
    assert "no age identity: this host cannot restore" in worker.stdout


def test_rotate_keeps_old_identities_and_revokes_the_old_signing_key(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    assert key(env, "init", "--env-file", str(env_file)).returncode == 0
    old = ring_of(env_file, monkeypatch)
    old_manifest = seal(b'{"id": "old"}', old)
    stored = tmp_path / "primary" / "database" / "gantt" / "manifests" / "old.manifest.json"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(old_manifest)
    old_object = b"".join(encrypting([b"old backup"], old.age_recipients()))

    done = key(env, "rotate", "--env-file", str(env_file))

    assert done.returncode == 0, done.stderr
    assert not SECRET_SHAPES.search(done.stdout + done.stderr)
    new = ring_of(env_file, monkeypatch)
    assert new.signer is not None and old.signer is not None
    assert new.signer.key_id != old.signer.key_id
    assert new.recipient_ids != old.recipient_ids and len(new.recipients) == 1
    assert set(old.identity_ids()) < set(new.identity_ids())
    # old backups stay restorable and trusted (re-signed in the tier) ...
    assert open_envelope(stored.read_bytes(), new, source="primary/old") == b'{"id": "old"}'
    # ... and the old signing key alone is trusted no more
    with pytest.raises(ForeignManifestError, match="signed by no trusted key"):
        open_envelope(old_manifest, new, source="primary/old")
    with decrypting(io.BytesIO(old_object), new.age_identities(old.recipient_ids)) as plain:
        assert plain.read() == b"old backup"
    # ... new ones are signed and encrypted with the new keys only
    fresh = seal(b'{"id": "new"}', new)
    assert f'"keyid": "{new.signer.key_id}"' in fresh.decode()
    new_object = b"".join(encrypting([b"new backup"], new.age_recipients()))
    with pytest.raises(MissingKeyError, match="none of them is configured"):
        Keyring(identities=old.identities).age_identities(new.recipient_ids)
    with decrypting(io.BytesIO(new_object), new.age_identities(new.recipient_ids)) as plain:
        assert plain.read() == b"new backup"
    assert old.identity_ids()[0] in done.stdout  # "kept: ..."


def test_rotate_keeps_the_env_files_owner_group_and_mode_so_postgres_still_reads_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env-file PostgreSQL's archive_command reads (root:postgres 0640): after a
    rotation it is still root:postgres 0640, and the postgres OS user still loads the
    keys from it through backupflow itself (as wal-push does), now the new ones."""
    need(os.geteuid() == 0, "giving a file to the postgres group needs root (CI runs as root)")
    need(pg_missing() is None, pg_missing() or "")
    group = grp.getgrnam(OS_USER).gr_gid
    etc = Path(tempfile.mkdtemp(prefix="bf-etc-", dir="/tmp"))  # like /etc/backupflow
    work = pg_workdir()
    try:
        etc.chmod(0o711)
        env_file = etc / "backupflow.env"
        env_file.write_text("BACKUPFLOW_DATABASE__NAME=gantt\n")
        os.chown(env_file, 0, group)
        env_file.chmod(0o640)
        assert key(env, "init", "--env-file", str(env_file)).returncode == 0
        old = ring_of(env_file, monkeypatch)
        assert old.signer is not None

        done = key(env, "rotate", "--env-file", str(env_file))

        assert done.returncode == 0, done.stderr
        info = env_file.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, group, 0o640)
        new = ring_of(env_file, monkeypatch)
        assert new.signer is not None and new.signer.key_id != old.signer.key_id
        as_postgres = subprocess.run(
            [*as_cluster_user([str(launcher(work)), "key", "show", "--env-file", str(env_file)])],
            env={**env, "PREFECT_HOME": str(work / "prefect-home"), "HOME": str(work)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert as_postgres.returncode == 0, as_postgres.stderr
        assert new.signer.key_id in as_postgres.stdout
        assert "no signing key" not in as_postgres.stdout
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_rotate_with_nothing_configured_is_one_sentence(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = key(env, "rotate", "--env-file", str(tmp_path / "none.env"))
    assert done.returncode == 3
    assert done.stderr.startswith("error: no keys are configured") and done.stderr.count("\n") == 1
    assert not (tmp_path / "none.env").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BACKUPFLOW_CRYPTO__SIGNING_KEY", "BACKUPFLOW-SIGNING-KEY-1" + "ab" * 31 + "zz"),
        ("BACKUPFLOW_CRYPTO__IDENTITIES", "AGE-SECRET-KEY-1NOTAREALKEYATALL"),
        ("BACKUPFLOW_CRYPTO__RECIPIENTS", '["age1nope"]'),
        ("BACKUPFLOW_CRYPTO__VERIFY_KEYS", '["bfverify1short"]'),
        ("BACKUPFLOW_CRYPTO__SIGNING_KEY_BLOCK", "no-such-block"),
    ],
)
def test_a_bad_or_missing_key_is_one_sentence_with_exit_3(
    env: dict[str, str], variable: str, value: str
) -> None:
    for command in (("show",), ("rotate", "--print-secrets"), ("init", "--print-secrets")):
        done = key(env, *command, **{variable: value})
        assert done.returncode == 3, (command, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert variable.removesuffix("_BLOCK") in lines[0] or "no-such-block" in lines[0]
        assert "Traceback" not in done.stdout + done.stderr
        if "SECRET" in value or "SIGNING" in value:
            assert value not in done.stdout + done.stderr


def test_the_env_file_is_never_a_link_or_readable_by_others(
    env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    target.chmod(0o600)
    link = tmp_path / "link.env"
    link.symlink_to(target)
    through = key(env, "init", "--env-file", str(link))
    assert through.returncode == 2 and "is a link" in through.stderr
    assert target.read_text() == "" and link.is_symlink()

    shared = tmp_path / "shared.env"
    shared.write_text("X=1\n")
    shared.chmod(0o644)
    refused = key(env, "init", "--env-file", str(shared))
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    assert shared.read_text() == "X=1\n"

    nowhere = key(env, "init")
    assert nowhere.returncode == 2 and "--env-file PATH" in nowhere.stderr


def test_print_secrets_and_the_escrow_file_are_age_identity_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    escrow = tmp_path / "escrow.txt"
    done = key(env, "init", "--print-secrets", "--identity-file", str(escrow))

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(escrow.stat().st_mode) == 0o600
    text = escrow.read_text()
    assert re.search(r"^# public key: age1[0-9a-z]+$", text, re.M)
    assert re.search(r"^AGE-SECRET-KEY-1[0-9A-Z]+$", text, re.M)
    assert text in done.stdout  # printed only because it was asked for
    refused = key(env, "init", "--print-secrets", "--identity-file", str(escrow))
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert escrow.read_text() == text


def test_init_and_rotate_into_prefect_secret_blocks(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    from prefect.blocks.system import Secret

    env_file = tmp_path / "public.env"
    nowhere = key(env, "init", "--blocks")
    assert nowhere.returncode == 2 and "age identity would be lost" in nowhere.stderr
    done = key(env, "init", "--blocks", "--identities-block", "--env-file", str(env_file))

    assert done.returncode == 0, done.stderr
    assert not SECRET_SHAPES.search(done.stdout + done.stderr + env_file.read_text())
    assert "BACKUPFLOW_CRYPTO__SIGNING_KEY_BLOCK" in env_file.read_text()
    ring = ring_of(env_file, monkeypatch)  # loads the blocks
    assert ring.signer is not None and ring.identities
    assert round_trip(ring, ring) == b"gantt rows"
    again = key(env, "init", "--blocks", "--print-secrets")
    assert again.returncode == 3 and "Secret block" in again.stderr

    rotated = key(env, "rotate", "--blocks", "--identities-block", "--env-file", str(env_file))
    assert rotated.returncode == 0, rotated.stderr
    new = ring_of(env_file, monkeypatch)
    assert set(ring.identity_ids()) < set(new.identity_ids())
    assert new.signer is not None and new.signer.key_id != ring.signer.key_id
    assert ring.signer.key_id not in new.verify_key_ids  # revoked: nothing left to re-sign
    assert "AGE-SECRET-KEY-1" in str(Secret.load("backupflow-age-identities").get())
    assert key_id(new.recipients[0]) in rotated.stdout


def test_bootstrap_saves_the_key_blocks_once_and_never_drops_an_identity(
    prefect_server: str,
) -> None:
    import asyncio

    from prefect.blocks.system import Secret

    from backupflow.keys import parse_identities
    from deployments.bootstrap import _key_blocks

    first, second = generate_keys(), generate_keys()

    def settings_for(keys: GeneratedKeys, block: str) -> Settings:
        return load_settings(
            crypto={
                "identities": keys.identity,
                "identities_block": f"{block}-identities",
                "signing_key": keys.signing_key,
                "signing_key_block": f"{block}-signing",
            }
        )

    done = asyncio.run(_key_blocks(settings_for(first, "boot")))
    assert done == [
        "Secret block boot-signing saved (signing key)",
        "Secret block boot-identities saved (1 age identities)",
    ]
    assert not SECRET_SHAPES.search(" ".join(done))
    again = asyncio.run(_key_blocks(settings_for(first, "boot")))
    assert again == [
        "Secret block boot-signing unchanged",
        "Secret block boot-identities unchanged",
    ]

    rotated = asyncio.run(_key_blocks(settings_for(second, "boot")))
    assert "Secret block boot-identities saved (2 age identities)" in rotated
    held = parse_identities(str(Secret.load("boot-identities").get()))
    assert {str(i) for i in held} == {first.identity, second.identity}
    assert str(Secret.load("boot-signing").get()) == second.signing_key


def test_rotation_round_trip_and_a_removed_old_identity_named_by_key_id(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back up with key 1, rotate, back up with key 2: both restore.  Without the old
    identity, the old backup's restore is one sentence naming the key id it needs."""
    import json
    import sqlite3

    from tests.support.chain import content_digest

    env_file = tmp_path / "backupflow.env"
    live = tmp_path / "app" / "gantt.db"
    live.parent.mkdir()
    world = {
        **env,
        "BACKUPFLOW_CONFIG": str(env_file),
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(live),
        "BACKUPFLOW_BACKUP_LOG": str(tmp_path / "backup.log"),
        "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
    }

    def bf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=world, capture_output=True, text=True, timeout=180, check=False
        )

    def write(rows: int) -> str:
        conn = sqlite3.connect(live)
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(rows)])
        conn.close()
        return content_digest(live)

    keys_env = {k: v for k, v in world.items() if k != "BACKUPFLOW_CONFIG"}
    assert key(keys_env, "init", "--env-file", str(env_file)).returncode == 0
    old = ring_of(env_file, monkeypatch)
    first = write(500)
    assert bf("backup", "database").returncode == 0
    rotated = key(keys_env, "rotate", "--env-file", str(env_file))
    assert rotated.returncode == 0, rotated.stderr
    assert "tier primary: 2 signed records re-signed" in rotated.stdout  # backup, key record
    assert "revoked: the old signing keys" in rotated.stdout
    new = ring_of(env_file, monkeypatch)
    assert old.signer is not None and new.verifier(old.signer.key_id) is None
    second = write(700)
    assert bf("backup", "database").returncode == 0

    # A thief with the old signing key re-signs the old backup's manifest, now claiming a
    # later restore point: refused everywhere, since the old key is no longer trusted.
    stolen = Keyring(signer=old.signer)
    for manifest in (tmp_path / "backups").rglob("*.manifest.json"):
        payload = open_envelope(manifest.read_bytes(), new, source="primary")
        forged = tmp_path / "forged.manifest.json"
        forged.write_bytes(seal(payload.replace(b'"notes": []', b'"notes": ["x"]'), stolen))
        with pytest.raises(ForeignManifestError, match="signed by no trusted key"):
            open_envelope(forged.read_bytes(), new, source="forged")
    planted = tmp_path / "dr" / "database" / "gantt" / "manifests"
    original = sorted(planted.glob("*.manifest.json"))[0]
    payload = open_envelope(original.read_bytes(), new, source="dr")
    original.write_bytes(seal(payload, stolen))  # the old key's signature only
    verify = bf("verify")
    assert verify.returncode != 0 and "signed by no trusted key" in verify.stdout + verify.stderr
    repaired = bf("replicate")  # reports the forgery, and copies the trusted one over it
    assert "signed by no trusted key" in repaired.stderr
    assert "from primary to dr" in repaired.stderr
    assert open_envelope(original.read_bytes(), new, source="dr") == payload

    backups = json.loads(bf("catalog", "--json").stdout)["backups"]
    assert len(backups) == 2
    at_first = backups[0]["restore_point"]
    one = bf("restore", "database", "--at", at_first, "--into", str(live.parent / "1.db"))
    assert one.returncode == 0, one.stderr
    assert content_digest(live.parent / "1.db") == first
    two = bf("restore", "database", "--latest", "--into", str(live.parent / "2.db"))
    assert two.returncode == 0, two.stderr
    assert content_digest(live.parent / "2.db") == second

    # the old identity is gone from this host: its backups cannot be read, and say why
    text = env_file.read_text()
    old_identity = str(old.identities[0])
    env_file.write_text(text.replace(f" {old_identity}", "").replace(old_identity, ""))
    lost = bf("restore", "database", "--at", at_first, "--into", str(live.parent / "3.db"))
    assert lost.returncode == 3, lost.stderr  # a missing key is a configuration error
    last = lost.stderr.splitlines()[-1]
    assert last.startswith("error: ") and old.recipient_ids[0] in last, lost.stderr
    assert "Traceback" not in lost.stderr and not SECRET_SHAPES.search(lost.stdout + lost.stderr)
    assert not (live.parent / "3.db").exists()


def test_an_escrow_recipient_decrypts_every_new_backup_and_survives_rotation(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escrow = generate_keys()  # made offline with age-keygen; only its public key is given
    env_file = tmp_path / "backupflow.env"
    done = key(env, "init", "--env-file", str(env_file), "--escrow-recipient", escrow.recipient)
    assert done.returncode == 0, done.stderr
    ring = ring_of(env_file, monkeypatch)
    assert escrow.recipient in ring.recipients and len(ring.recipients) == 2
    assert escrow.identity not in env_file.read_text()
    offline = Keyring(identities=escrow.keyring().identities)
    assert round_trip(ring, offline) == b"gantt rows"

    forgot = key(env, "rotate", "--env-file", str(env_file))
    assert forgot.returncode == 0, forgot.stderr
    warned = next(line for line in forgot.stdout.splitlines() if "no longer encrypted" in line)
    assert key_id(escrow.recipient) in warned and "--escrow-recipient" in warned
    kept = key(env, "rotate", "--env-file", str(env_file), "--escrow-recipient", escrow.recipient)
    assert kept.returncode == 0, kept.stderr
    assert round_trip(ring_of(env_file, monkeypatch), offline) == b"gantt rows"


def test_init_for_postgres_gives_the_wal_key_its_own_file_and_scopes(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's OS user gets a file with the WAL key, the recipients and the verify keys,
    and nothing else; the workers' file has no WAL key; every verify key is scoped."""
    postgres = {
        **env,
        "BACKUPFLOW_DATABASE__ENGINE": "postgres",
        "BACKUPFLOW_DATABASE__NAME": "main",
    }
    workers, postgres_user = tmp_path / "workers.env", tmp_path / "postgres.env"
    done = key(postgres, "init", "--env-file", str(workers), "--wal-env-file", str(postgres_user))
    assert done.returncode == 0, done.stderr
    assert not SECRET_SHAPES.search(done.stdout + done.stderr)
    assert "WAL verify key" in done.stdout
    assert stat.S_IMODE(postgres_user.stat().st_mode) == 0o600
    held = postgres_user.read_text()
    assert "WAL_SIGNING_KEY" in held and "__SIGNING_KEY=" not in held
    assert "IDENTITIES" not in held
    assert "WAL_SIGNING_KEY" not in workers.read_text()
    ring = ring_of(workers, monkeypatch)
    scopes = sorted(v.scope.text for v in ring.verifiers)
    assert scopes == ["kinds=manifest", "kinds=wal series=database/main"]
    wal_host = ring_of(postgres_user, monkeypatch)
    assert wal_host.signer is None and wal_host.wal_signer is not None and not wal_host.identities
    shown = key(postgres, "show", "--env-file", str(postgres_user))
    assert "WAL signing key" in shown.stdout and "no signing key" in shown.stdout
    # a key record of the manifest key is in the (folder) tier
    assert list((tmp_path / "primary" / "keys").glob("*.key.json"))
    wrong = key(
        env,
        "init",
        "--env-file",
        str(tmp_path / "x.env"),
        "--wal-env-file",
        str(tmp_path / "y.env"),
    )
    assert wrong.returncode == 2 and "PostgreSQL" in wrong.stderr
