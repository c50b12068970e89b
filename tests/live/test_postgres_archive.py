"""A real PostgreSQL cluster archives its WAL through ``backupflow wal-push`` into an S3
tier (moto's HTTP server); while the tier is down the pushes fail, PostgreSQL keeps the
segments and retries, and once the tier is back every segment arrives: none is lost."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backupflow.config import load_settings
from backupflow.engines.postgres.archive import archived, fetch_wal, system_identifier_of
from backupflow.engines.postgres.walnames import parse_wal_name
from backupflow.storage import Tier, open_tier, open_tiers
from tests.conftest import key_settings, need
from tests.support.keys import TEST_KEYS, key_env
from tests.support.pgcluster import Cluster, free_port, launcher, pg_missing, pg_workdir
from tests.support.s3 import MotoServer, client_for, make_bucket

DB = "pgarchive"
REGION = "us-east-1"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    need(pg_missing() is None, f"live PostgreSQL: {pg_missing()}")
    folder = pg_workdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoServer]:
    """Our own moto server on a fixed port, so the test can stop it and start it again."""
    server = MotoServer(port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def _tier(bucket: str, server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Tier:
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(
        crypto=key_settings(TEST_KEYS),
        repository={
            "primary": {
                "url": f"s3://{bucket}/repo",
                "region": REGION,
                "endpoint_url": server.url,
                "addressing_style": "path",
            },
            "secondary": {"enabled": False},
            "dr": {"enabled": False},
        },
        database={"name": DB},
    )
    return open_tier("primary", settings)


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_segment_arrives_even_across_an_outage(
    workdir: Path, s3: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"pgwal-{uuid.uuid4().hex[:10]}"
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    make_bucket(client_for(REGION, s3.url), bucket, REGION)
    env = {
        **AWS,
        **key_env(),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "BACKUPFLOW_DATABASE__NAME": DB,
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": f"s3://{bucket}/repo",
        "BACKUPFLOW_REPOSITORY__PRIMARY__REGION": REGION,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ENDPOINT_URL": s3.url,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ADDRESSING_STYLE": "path",
        "BACKUPFLOW_REPOSITORY__SECONDARY__ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__DR__ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__REQUEST_ATTEMPTS": "1",
        "BACKUPFLOW_DATABASE__ARCHIVER_IDLE_SECONDS": "30",
    }
    command = launcher(workdir)
    cluster = Cluster.create(
        workdir / "cluster",
        archive_command=f"{command} wal-push %p",
        settings={"wal_keep_size": "'1GB'"},  # archived segments stay for comparison
        env=env,
    )
    try:
        cluster.start()
        tier = _tier(bucket, s3, monkeypatch)
        sysid = system_identifier_of(cluster.data)

        def switch(rows: int) -> str:
            cluster.execute("CREATE TABLE IF NOT EXISTS t (id serial, payload text)")
            cluster.execute(
                f"INSERT INTO t (payload) SELECT repeat('x', 200) FROM generate_series(1, {rows})"
            )
            return str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())"))

        def archived_names() -> list[str]:
            return [n.name for n in archived(tier, DB, sysid) if n.is_segment]

        first = switch(100)
        second = switch(100)
        # archived as PostgreSQL counts it: wal-push exited 0 (its record can be listed a
        # moment before: the push still checks what S3 stored)
        _wait(
            "the first segments",
            lambda: (
                second in archived_names()
                and cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver") == second
            ),
        )

        # the tier goes away: pushes fail, PostgreSQL keeps the segments and counts failures
        s3.stop()
        during = [switch(50) for _ in range(2)]
        _wait(
            "a failed push",
            lambda: (cluster.execute("SELECT failed_count FROM pg_stat_archiver") or 0) >= 1,
        )
        assert cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver") == second
        log = cluster.log_tail(200)
        assert "archive command failed with exit code 1" in log, log
        assert "Traceback" not in log, log
        said = [line for line in log.splitlines() if line.startswith("error: ")]
        assert said and all(bucket in line for line in said), log  # one sentence per failure

        # back again: a new segment wakes the archiver, and everything kept arrives
        s3.start()
        last = switch(10)
        # (the archiver pushes ready segments ahead: the last can land before the others)
        _wait(
            "every kept segment",
            lambda: {first, second, *during, last} <= set(archived_names()),
            timeout=120,
        )
        names = archived_names()
        assert {first, second, *during, last} <= set(names)
        numbers = [parse_wal_name(n).segno for n in names]
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), names  # no gap

        for name in (second, during[0], last):
            dest = workdir / "RECOVERYXLOG"
            outcome = fetch_wal([tier], DB, sysid, name, dest)
            assert outcome.outcome == "fetched", outcome
            assert dest.read_bytes() == (cluster.data / "pg_wal" / name).read_bytes()
            dest.unlink()

        # PostgreSQL itself replays from the archive through wal-fetch (restore_command)
        _replay_from_archive(cluster, workdir, command)
    finally:
        if s3._server is None:
            s3.start()
        cluster.destroy()


def _replay_from_archive(cluster: Cluster, workdir: Path, command: Path) -> None:
    """A base backup without WAL (``-X none``), recovered by PostgreSQL with
    ``restore_command = '<backupflow> wal-fetch %f %p'`` to the end of the archive: it holds
    every row of the last archived segment, so every file wal-fetch served was whole."""
    root = workdir / "copy"
    root.mkdir(mode=0o700)
    entry = pwd.getpwnam("postgres")
    if os.geteuid() == 0:
        os.chown(root, entry.pw_uid, entry.pw_gid)
    copy = Cluster(root, free_port(), dict(cluster.env))
    cluster._run(
        [
            str(cluster.bin / "pg_basebackup"),
            "-D",
            str(copy.data),
            "-Fp",
            "-X",
            "none",
            "--checkpoint=fast",
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "--no-sync",
        ]
    )
    cluster.execute("INSERT INTO t (payload) SELECT 'after base' FROM generate_series(1, 7)")
    expected = cluster.execute("SELECT count(*) FROM t")
    last = str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())"))
    _wait(
        "the last segment",
        lambda: cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver") == last,
        timeout=60,
    )
    with (copy.data / "postgresql.auto.conf").open("a") as handle:
        handle.write(
            f"port = {copy.port}\n"
            f"unix_socket_directories = '{copy.socket_dir}'\n"
            "archive_mode = off\n"
            f"restore_command = '{command} wal-fetch %f %p'\n"
            "recovery_target_action = promote\n"
        )
    copy.socket_dir.mkdir(mode=0o700)
    (copy.data / "recovery.signal").write_text("")
    for path in (copy.socket_dir, copy.data / "recovery.signal"):
        if os.geteuid() == 0:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        copy.start()
        _wait(
            "the end of recovery",
            lambda: copy.execute("SELECT pg_is_in_recovery()") is False,
            timeout=120,
        )
        assert copy.execute("SELECT count(*) FROM t") == expected
        log = copy.log_tail(400)
        assert f'restored log file "{last}" from archive' in log, log
        assert "Traceback" not in log and "error: " not in log, log
    finally:
        copy.destroy()


#: The bound the docs state for a segment to reach every enabled tier once PostgreSQL
#: archived it (archive_timeout is the server's own share; this is ours).
EVERY_TIER_SECONDS = 60.0


def test_every_segment_reaches_every_tier_and_the_dr_tier_catches_up_after_an_outage(
    workdir: Path, s3: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary is an S3 bucket, the secondary a folder, the DR tier a bucket on its own
    server.  Each segment PostgreSQL archives reaches all three within the bound; while the
    DR tier is down archiving goes on (primary and secondary), and once it is back what it
    missed arrives within the bound too."""
    dr_server = MotoServer(port=free_port()).start()
    bucket, dr_bucket = (f"pgwal-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    make_bucket(client_for(REGION, s3.url), bucket, REGION)
    make_bucket(client_for(REGION, dr_server.url), dr_bucket, REGION)
    secondary = workdir / "secondary"
    secondary.mkdir(mode=0o700)
    postgres = pwd.getpwnam("postgres")
    os.chown(secondary, postgres.pw_uid, postgres.pw_gid)
    env = {
        **AWS,
        **key_env(),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "BACKUPFLOW_DATABASE__NAME": DB,
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": f"s3://{bucket}/repo",
        "BACKUPFLOW_REPOSITORY__PRIMARY__REGION": REGION,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ENDPOINT_URL": s3.url,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ADDRESSING_STYLE": "path",
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(secondary),
        "BACKUPFLOW_REPOSITORY__DR__URL": f"s3://{dr_bucket}/repo",
        "BACKUPFLOW_REPOSITORY__DR__REGION": REGION,
        "BACKUPFLOW_REPOSITORY__DR__ENDPOINT_URL": dr_server.url,
        "BACKUPFLOW_REPOSITORY__DR__ADDRESSING_STYLE": "path",
        "BACKUPFLOW_REPOSITORY__REQUEST_ATTEMPTS": "1",
        "BACKUPFLOW_DATABASE__ARCHIVER_IDLE_SECONDS": "30",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(crypto=key_settings(TEST_KEYS))
    tiers = open_tiers(settings)
    assert [t.name for t in tiers] == ["primary", "secondary", "dr"]
    command = launcher(workdir)
    cluster = Cluster.create(
        workdir / "cluster-tiers", archive_command=f"{command} wal-push %p", env=env
    )
    try:
        cluster.start()
        sysid = system_identifier_of(cluster.data)

        def switch() -> str:
            cluster.execute("CREATE TABLE IF NOT EXISTS t (id serial, payload text)")
            cluster.execute(
                "INSERT INTO t (payload) SELECT repeat('y', 200) FROM generate_series(1, 50)"
            )
            return str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())"))

        def held(tier: Tier) -> set[str]:
            return {n.name for n in archived(tier, DB, sysid) if n.is_segment}

        def arrives(names: set[str], where: Sequence[Tier]) -> None:
            archived_at = time.monotonic()
            _wait(
                f"{sorted(names)} in {[t.name for t in where]}",
                lambda: all(names <= held(t) for t in where),
                timeout=EVERY_TIER_SECONDS,
            )
            assert time.monotonic() - archived_at <= EVERY_TIER_SECONDS

        before = {switch(), switch()}
        _wait("PostgreSQL's archiving", lambda: cluster.execute(
            "SELECT last_archived_wal FROM pg_stat_archiver") == max(before))  # fmt: skip
        arrives(before, tiers)

        dr_server.stop()
        during = {switch(), switch()}
        # archiving does not wait for the DR tier
        _wait("archiving while the DR tier is down", lambda: cluster.execute(
            "SELECT last_archived_wal FROM pg_stat_archiver") == max(during))  # fmt: skip
        arrives(during, tiers[:2])

        dr_server.start()
        after = {switch()}
        _wait("PostgreSQL's archiving", lambda: cluster.execute(
            "SELECT last_archived_wal FROM pg_stat_archiver") == max(after))  # fmt: skip
        arrives(before | during | after, tiers)
        # each copy is whole: the DR tier serves the bytes PostgreSQL wrote
        for name in sorted(during):
            dest = workdir / "RECOVERYXLOG"
            outcome = fetch_wal([tiers[2]], DB, sysid, name, dest)
            assert (outcome.outcome, outcome.tier) == ("fetched", "dr"), outcome
            dest.unlink()
    finally:
        if dr_server._server is None:
            dr_server.start()
        cluster.destroy()
        dr_server.stop()


def test_racing_and_killed_pushes_never_leave_a_record_that_disagrees_with_its_object(
    workdir: Path, s3: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22's reproduction, live: PostgreSQL's push of a segment stores its object and
    its record write is held (a proxy holds the request); another push of the same file
    runs to completion; then the held write lands.  Both succeed, and the record names the
    object the tier holds.  Then a push is killed between its object and its record:
    PostgreSQL pushes again, the record names a whole object, and the orphan goes after the
    grace period."""
    from datetime import UTC, datetime, timedelta

    from backupflow.engines.postgres.archive import read_record
    from backupflow.engines.postgres.pruning import remove_loose_wal
    from backupflow.models import Category
    from tests.support.pgcluster import as_cluster_user
    from tests.support.s3 import HoldingProxy

    bucket = f"pgwal-{uuid.uuid4().hex[:10]}"
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    make_bucket(client_for(REGION, s3.url), bucket, REGION)
    proxy = HoldingProxy(s3.port)
    common = {
        **AWS,
        **key_env(),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "BACKUPFLOW_DATABASE__NAME": DB,
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": f"s3://{bucket}/repo",
        "BACKUPFLOW_REPOSITORY__PRIMARY__REGION": REGION,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ADDRESSING_STYLE": "path",
        "BACKUPFLOW_REPOSITORY__SECONDARY__ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__DR__ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__REQUEST_ATTEMPTS": "1",
        "BACKUPFLOW_WAL_ARCHIVER": "off",  # each push its own process, to hold and kill
    }
    through_proxy = {**common, "BACKUPFLOW_REPOSITORY__PRIMARY__ENDPOINT_URL": proxy.url}
    direct = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BACKUPFLOW_")},
        **common,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ENDPOINT_URL": s3.url,
    }
    command = launcher(workdir)
    cluster = Cluster.create(
        workdir / "cluster-race",
        archive_command=f"{command} wal-push %p",
        settings={"wal_keep_size": "'1GB'"},
        env=through_proxy,
    )
    tier = _tier(bucket, s3, monkeypatch)
    try:
        cluster.start()
        sysid = system_identifier_of(cluster.data)

        def switch() -> str:
            cluster.execute("CREATE TABLE IF NOT EXISTS t (id serial, payload text)")
            cluster.execute("INSERT INTO t (payload) SELECT 'z' FROM generate_series(1, 100)")
            return str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())"))

        def consistent(name: str) -> None:
            record = read_record(tier, DB, sysid, name)
            assert record is not None
            assert tier.storage.stat(record.object.key).size == record.object.size
            dest = workdir / "RECOVERYXLOG"
            outcome = fetch_wal([tier], DB, sysid, name, dest)
            assert outcome.outcome == "fetched", outcome
            assert dest.read_bytes() == (cluster.data / "pg_wal" / name).read_bytes()
            dest.unlink()

        def objects(name: str) -> list[str]:
            prefix = f"database/{DB}/wal/{sysid}/{name}."
            return [i.key for i in tier.storage.list(prefix) if not i.key.endswith(".rec")]

        def archived_by_server(name: str) -> bool:
            return cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver") == name

        # 1. the race
        proxy.hold(".rec")
        raced = switch()
        assert proxy.held.wait(60), cluster.log_tail()
        other = subprocess.run(
            as_cluster_user([str(command), "wal-push", f"pg_wal/{raced}"]),
            cwd=cluster.data, env=direct, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        proxy.release()
        _wait("the held push", lambda: archived_by_server(raced))
        consistent(raced)
        assert len(objects(raced)) == 1  # the loser removed its own object

        # 2. a push killed between its object and its record
        proxy.hold(".rec")
        killed = switch()
        assert proxy.held.wait(60), cluster.log_tail()
        pushes = subprocess.run(
            ["pgrep", "-f", f"wal-push pg_wal/{killed}"], capture_output=True, text=True,
            check=False,
        ).stdout.split()  # fmt: skip
        assert pushes, "no wal-push process to kill"
        for pid in pushes:
            os.kill(int(pid), 9)
        proxy.release()
        _wait("PostgreSQL's next push", lambda: archived_by_server(killed), timeout=120)
        consistent(killed)
        named = read_record(tier, DB, sysid, killed)
        assert named is not None
        orphans = [k for k in objects(killed) if k != named.object.key]
        assert len(orphans) == 1  # the killed push's object: no record names it
        later = datetime.now(UTC) + timedelta(hours=2)
        removed = remove_loose_wal(tier, Category.DATABASE, DB, now=later, grace=timedelta(hours=1))
        assert removed == orphans
        consistent(killed)
    finally:
        proxy.close()
        cluster.destroy()
