"""PostgreSQL's OS user holds only the WAL key (issue 23): a real cluster archives with an
environment that has no manifest signing key and no age identity, its WAL records carry the
WAL key's signature and their own payload type, and a restore host that trusts that key only
for this cluster's WAL restores the latest state from them."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from backupflow.envelope import WAL_PAYLOAD_TYPE
from backupflow.keys import generate_keys, key_id
from backupflow.models import BackupKind
from backupflow.storage import open_tiers
from backupflow.storage.base import get_bytes
from tests.conftest import need
from tests.live.postgres_support import DB, LivePg, rows, start_restored, tier_env
from tests.support.chain import restore, take_backup
from tests.support.pgcluster import Cluster, launcher, pg_missing, pg_workdir
from tests.support.s3 import MotoServer

_CRYPTO = "BACKUPFLOW_CRYPTO__"


def test_wal_signed_by_the_postgres_users_own_key_restores(
    _shared_moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need(pg_missing() is None, f"live PostgreSQL: {pg_missing()}")
    keys = generate_keys(wal=True)
    trust = json.dumps(keys.verify_entries([f"database/{DB}"]))
    shared = {
        k: v
        for k, v in tier_env(_shared_moto_server, f"pgwal-{uuid.uuid4().hex[:10]}").items()
        if not k.startswith(_CRYPTO)
    }
    recipients = json.dumps([keys.recipient])
    postgres_user = {
        **shared,
        _CRYPTO + "RECIPIENTS": recipients,
        _CRYPTO + "VERIFY_KEYS": trust,
        _CRYPTO + "WAL_SIGNING_KEY": keys.wal_signing_key,
    }
    worker = {
        **shared,
        _CRYPTO + "RECIPIENTS": recipients,
        _CRYPTO + "VERIFY_KEYS": trust,
        _CRYPTO + "SIGNING_KEY": keys.signing_key,
        _CRYPTO + "IDENTITIES": keys.identity,
    }
    root = pg_workdir()
    try:
        command = launcher(root)
        cluster = Cluster.create(
            root / "live", archive_command=f"{command} wal-push %p", env=postgres_user
        )
        try:
            cluster.start()
            cluster.add_backup_role()
            cluster.execute("CREATE TABLE events (id int PRIMARY KEY, note text NOT NULL)")
            cluster.execute("INSERT INTO events SELECT g, 'before' FROM generate_series(1, 50) g")
            for key, value in worker.items():
                monkeypatch.setenv(key, value)
            live = LivePg(root, cluster, worker, command)
            settings = live.settings(tmp_path)
            take_backup(settings, BackupKind.FULL)
            cluster.execute("INSERT INTO events SELECT g, 'after' FROM generate_series(51, 80) g")
            segment = cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")
            deadline = time.monotonic() + 120
            while (cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver") or "") < str(
                segment
            ):
                assert time.monotonic() < deadline, cluster.log_tail()
                time.sleep(0.2)
            take_backup(settings, BackupKind.LOG)

            storage = open_tiers(settings)[0].storage
            records = [i.key for i in storage.list(f"database/{DB}/wal/") if i.key.endswith(".rec")]
            assert records
            for record in records:
                envelope = json.loads(get_bytes(storage, record))
                assert envelope["payloadType"] == WAL_PAYLOAD_TYPE
                assert [s["keyid"] for s in envelope["signatures"]] == [key_id(keys.wal_verify_key)]

            data = live.new_folder("latest") / "data"
            restore(settings, None, data)
            with start_restored(data) as copy, copy.connect() as conn:
                restored = rows(conn)
            assert [r[0] for r in restored] == list(range(1, 81))
            assert restored[-1][1] == "after"
        finally:
            cluster.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
