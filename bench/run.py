"""backupflow benchmark: our pipeline against the standard command-line tools doing the same
work (``bench/limit.py``) and against the seed's way (gzip -6, then aws s3 cp), in one run on
one machine.  ``make bench`` runs it; results go to bench/out/results.json (``BENCH_OUT``
moves that folder).

Every scenario runs in its own process so that its peak RSS is its own.  ``BENCH_SIZE_MB``
sets the input size (1024 by default; the memory row uses four times as much) and
``BENCH_REPEAT`` how often each local row and its standard-tool chain run, interleaved
(A B, then B A, ...; 5 by default): ratios are taken between the medians.  The output ends
with one line for scripts::

    LIMIT local_backup=R local_restore=R local_backup_encrypted=R local_restore_encrypted=R

each R being backupflow's speed divided by the standard-tool chain's in the same run (the goal:
at least 0.9).  ``--quick`` runs every scenario on small inputs in seconds (``make test`` runs
it through tests/integration/test_bench.py and checks that every row was produced).

The PostgreSQL rows (``bench/postgres.py``: base backup, wal-push latency, a restore over an
hour of WAL) run last when PostgreSQL is installed, with pgBackRest measured beside ours on
the same cluster (``bench/pgbackrest.py``); ``--postgres-only`` runs only them and adds them
to the existing results.json under "postgres".  After the LIMIT line comes::

    PGBACKREST full=R push_p50=R push_p99=R restore=R

each R being backupflow's speed ÷ pgBackRest's in the same run (pgBackRest's time ÷ ours:
R ≥ 1.0 is as fast or faster) against pgBackRest's full backup (process-max=2, zst), its
synchronous archive-push and its restore with asynchronous archive-get.  A ratio below 1 is
reported, not a failure; a restored copy without the target's rows, or a tool's error, is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent / "out").resolve()
MiB = 1 << 20
#: The sizes of a --quick run (every scenario, in seconds), unless the environment sets them.
QUICK = {
    "BENCH_SIZE_MB": "8",
    "BENCH_REPEAT": "1",
    "BENCH_PLAN_BACKUPS": "300",
    "BENCH_PG_MB": "16",
    "BENCH_PG_WAL_MB": "48",
    "BENCH_PG_PUSH_SEGMENTS": "1",
}
PGBACKREST_KEYS = ("full", "push_p50", "push_p99", "restore")
LIMIT_KEYS = ("local_backup", "local_restore", "local_backup_encrypted", "local_restore_encrypted")
#: The text fields of GeneratedKeys kept in bench-keys.json (not its creation time).
KEY_FIELDS = ("identity", "recipient", "signing_key", "verify_key")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "ap-northeast-2",
}


# -- input --------------------------------------------------------------------------------


def make_input(path: Path, size: int) -> Path:
    """Half compressible rows (like a database's pages of workload rows), half random bytes."""
    if path.exists() and path.stat().st_size == size:
        return path
    rng = random.Random(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        written = 0
        index = 0
        while written < size:
            if index % 2 == 0:
                rows = [
                    b"%08d,eng%03d,project-%02d,task-%05d,2026-%02d-%02d,%4.1f\n"
                    % (
                        written + i,
                        rng.randrange(200),
                        rng.randrange(40),
                        rng.randrange(30000),
                        rng.randrange(1, 13),
                        rng.randrange(1, 29),
                        rng.randrange(0, 90) / 10,
                    )
                    for i in range(21000)
                ]
                block = b"".join(rows)[:MiB]
            else:
                block = rng.randbytes(MiB)
            block = block[: size - written]
            out.write(block)
            written += len(block)
            index += 1
    return path


# -- scenarios (each in its own process) ---------------------------------------------------


def _rss_mib() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the forked parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _s3(url: str, bucket: str, region: str) -> Any:
    """The tier's storage as a backup opens it (``open_tier``: botocore client, retries and
    checksums as configured; parts of 8 MiB, 4 in flight)."""
    from backupflow.config import load_settings
    from backupflow.storage import open_tier

    tier = {"url": f"s3://{bucket}", "region": region, "endpoint_url": url}
    settings = load_settings(
        repository={
            "primary": {"url": str(OUT / "unused")},
            "secondary": {**tier, "addressing_style": "path"},
            "dr": {"url": str(OUT / "unused")},
            "part_bytes": 8 * MiB,
            "max_concurrency": 4,
        }
    )
    return open_tier("secondary", settings, keyring=_bench_keyring()).storage


def _bench_keyring() -> Any:
    """The same throwaway keys in every scenario process (the restore must decrypt what the
    backup encrypted), kept in the bench's own output folder."""
    from backupflow.keys import GeneratedKeys, generate_keys

    path = OUT / "bench-keys.json"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        keys = generate_keys()
        text = json.dumps({name: getattr(keys, name) for name in KEY_FIELDS})
        # written whole under a private temporary name, then renamed: never a torn file
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    stored = json.loads(path.read_text())
    return GeneratedKeys(**{name: str(stored[name]) for name in KEY_FIELDS}).keyring()


def scenario(name: str, args: dict[str, Any]) -> dict[str, Any]:
    from backupflow.codecs import ZstdCodec
    from backupflow.models import StoredObject
    from backupflow.pipeline import open_verified, store_stream
    from backupflow.storage import LocalStorage
    from backupflow.storage.base import ObjectInfo, Storage
    from backupflow.tiers import copy_object

    source = Path(args.get("input", "-"))
    codec = ZstdCodec(3, -1)
    keyring = _bench_keyring() if args.get("encrypt") else None
    extra: dict[str, Any] = {}
    cpu = os.times()
    start = time.perf_counter()
    if name in ("ours-local", "ours-3-tiers"):
        local = LocalStorage(Path(args["work"]) / "primary")
        with open(source, "rb") as handle:
            record = store_stream(
                local,
                f"database/bench/{time.time_ns()}.data.zst",  # a new object in every run
                handle,
                codec,
                role="data",
                keyring=keyring,
            )
        extra["stored_bytes"] = record.size
        if name == "ours-3-tiers":
            # as the backup flow does: compressed once, then copied to each remote tier
            for bucket, region in (
                ("ours-secondary", "ap-northeast-2"),
                ("ours-dr", "ap-northeast-1"),
            ):
                copy_object(
                    local,
                    _s3(args["s3"], bucket, region),
                    record,
                    chunk_bytes=MiB,
                    write_once=False,
                )
        (Path(args["work"]) / "record.json").write_text(record.model_dump_json())
    elif name == "ours-null":

        class Null(Storage):
            name = "null"

            def put(self, key: str, chunks: Any) -> ObjectInfo:
                size = sum(len(c) for c in chunks)
                return ObjectInfo(key, size, datetime.now(UTC))

            def open(self, key: str) -> Any:
                raise NotImplementedError

            def stat(self, key: str) -> ObjectInfo:
                raise NotImplementedError

            def list(self, prefix: str = "") -> Any:
                return iter(())

            def delete(self, key: str) -> None:
                pass

        with open(source, "rb") as handle:
            store_stream(Null(), "x", handle, codec, role="data", verify=False)
    elif name in ("ours-restore-local", "ours-restore-s3"):
        record = StoredObject.model_validate_json((Path(args["work"]) / "record.json").read_text())
        storage: Storage = (
            LocalStorage(Path(args["work"]) / "primary")
            if name == "ours-restore-local"
            else _s3(args["s3"], "ours-dr", "ap-northeast-1")
        )
        with (
            open_verified(storage, record, keyring=keyring) as stream,
            open(Path(args["work"]) / "restored.bin", "wb") as out,
        ):
            shutil.copyfileobj(stream, out, MiB)
    else:
        raise SystemExit(f"unknown scenario {name}")
    seconds = time.perf_counter() - start
    used = os.times()
    extra["cpu_s"] = round(used.user - cpu.user + used.system - cpu.system, 2)
    return {"seconds": seconds, "rss_mib": _rss_mib(), **extra}


def run_ours(name: str, **args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--scenario", name, "--args", json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **CREDENTIALS},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_seed(commands: list[str]) -> dict[str, Any]:
    """Shell commands run one after the other (the seed's way), peak RSS of the largest."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "for c in sys.argv[1:]: subprocess.run(['bash', '-c', c], check=True)\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(time.perf_counter() - t, r.ru_maxrss, r.ru_utime + r.ru_stime)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *commands],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **CREDENTIALS},
    )
    seconds, rss, cpu = done.stdout.split()
    return {"seconds": float(seconds), "rss_mib": int(rss) / 1024, "cpu_s": round(float(cpu), 2)}


# -- planning over 10,000 backups ----------------------------------------------------------


def planning(count: int = 10_000) -> dict[str, Any]:
    from moto import mock_aws

    os.environ.update(CREDENTIALS)
    import boto3

    from backupflow.catalog import Catalog, manifest_key
    from backupflow.engines.sqlite import SqliteEngine
    from backupflow.envelope import seal
    from backupflow.models import BackupKind, Category, Manifest
    from backupflow.restore import load_plan
    from backupflow.retention import RetentionPolicy, plan_retention
    from backupflow.storage import S3Storage, Tier

    keyring = _bench_keyring()
    with mock_aws():
        client = boto3.client("s3", region_name="ap-northeast-1")
        client.create_bucket(
            Bucket="plan", CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"}
        )
        start = datetime(2025, 11, 1, tzinfo=UTC)
        full = previous = None
        for index in range(count):
            at = start + timedelta(hours=index)
            kind = (
                BackupKind.FULL
                if index % 24 == 0
                else BackupKind.DIFF
                if index % 4 == 0
                else BackupKind.LOG
            )
            parent = (
                None if kind is BackupKind.FULL else (full if kind is BackupKind.DIFF else previous)
            )
            manifest = Manifest(
                id=f"{at:%Y%m%dT%H%M%S}Z-{kind.value}-{index:06x}",
                category=Category.DATABASE,
                kind=kind,
                engine="sqlite",
                database="gantt",
                started_at=at,
                finished_at=at,
                restore_point=at,
                parent_id=parent,
                objects=(),
            )
            client.put_object(
                Bucket="plan", Key=manifest_key(manifest), Body=seal(manifest.to_json(), keyring)
            )
            full = manifest.id if kind is BackupKind.FULL else full
            previous = manifest.id
        requests: list[str] = []
        client.meta.events.register(
            "before-send.s3", lambda request, **_: requests.append(request.method)
        )
        storage = S3Storage(client, "plan")
        now = start + timedelta(hours=count)
        clock = time.perf_counter()
        listed = sum(1 for _ in storage.list("database/gantt/manifests/"))
        list_seconds = time.perf_counter() - clock
        requests.clear()
        clock = time.perf_counter()
        loaded = load_plan(
            [Tier("dr", storage, keyring)], SqliteEngine(Path("gantt.db")), "gantt", None, now
        )
        plan_seconds = time.perf_counter() - clock
        plan_requests = len(requests)
        requests.clear()
        clock = time.perf_counter()
        entries = Catalog(storage, keyring).entries(Category.DATABASE, "gantt")
        retention = plan_retention(
            entries,
            RetentionPolicy({BackupKind.FULL: 30, BackupKind.DIFF: 7, BackupKind.LOG: 3}),
            now,
        )
        retention_seconds = time.perf_counter() - clock
        return {
            "backups": count,
            "listing_only_seconds": round(list_seconds, 3),
            "listed": listed,
            "restore_plan_seconds": round(plan_seconds, 3),
            "restore_plan_requests": plan_requests,
            "restore_plan_steps": len(loaded.plan.steps),
            "retention_plan_seconds": round(retention_seconds, 3),
            "retention_plan_requests": len(requests),
            "retention_deletions": len(retention.deletions),
        }


# -- main ------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


class Bench:
    """One run: the input, the moto server, the rows and the results."""

    def __init__(self, size: int, repeat: int) -> None:
        self.size = size
        self.repeat = repeat
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {"input_bytes": size, "machine_cores": os.cpu_count()}

    def row(
        self,
        label: str,
        ours: dict[str, Any],
        reference: dict[str, Any] | None = None,
        reference_name: str = "",
        size: int | None = None,
    ) -> dict[str, Any]:
        """One table row; ``ratio`` is our speed divided by the reference's."""
        mib = (size or self.size) / MiB
        entry: dict[str, Any] = {
            "scenario": label,
            "ours_s": round(ours["seconds"], 3),
            "ours_MBps": round(mib / ours["seconds"]),
            "ours_rss_MiB": round(ours["rss_mib"]),
        }
        if "cpu_s" in ours:
            entry["ours_cpu_s"] = ours["cpu_s"]
        if "samples" in ours:
            entry["ours_samples_s"] = ours["samples"]
        if reference:
            entry.update(
                reference=reference_name,
                ref_s=round(reference["seconds"], 3),
                ref_MBps=round(mib / reference["seconds"]),
                ref_rss_MiB=round(reference["rss_mib"]),
                ratio=round(reference["seconds"] / ours["seconds"], 2),
            )
            if "cpu_s" in reference:
                entry["ref_cpu_s"] = reference["cpu_s"]
            if "samples" in reference:
                entry["ref_samples_s"] = reference["samples"]
        self.rows.append(entry)
        print(json.dumps(entry), flush=True)
        return entry


def _medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": _median([s["seconds"] for s in samples]),
        "rss_mib": max(s["rss_mib"] for s in samples),
        "cpu_s": round(_median([s["cpu_s"] for s in samples]), 2),
        "samples": [round(s["seconds"], 3) for s in samples],
    }


def at_the_limit(bench: Bench, source: Path, work: Path, hash_command: str) -> dict[str, float]:
    """The four local rows, each against the standard-tool chain doing the same work, run
    interleaved ``bench.repeat`` times; returns the LIMIT ratios.

    Every timed run starts from the same state: dirty pages written out (``sync``, untimed)
    and the stored object out of the page cache (our folder tier drops what it writes; the
    chain's file is dropped the same way), and a restore's output is checked and deleted
    before the next run, so no run pays for another's write-back."""
    import limit

    expected = sha256_of(source)
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    keyring_file = work / "age-identity.txt"  # the bench's identity for age -d, private
    keys = json.loads((OUT / "bench-keys.json").read_text())
    fd = os.open(keyring_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(keys["identity"] + "\n")

    def backup(who: str, folder: Path, encrypt: bool) -> dict[str, Any]:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.sync()
        if who == "ours":
            return run_ours("ours-local", input=str(source), work=str(folder), encrypt=encrypt)
        recipient = keys["recipient"] if encrypt else None
        stored = folder / "stored.zst"
        done = run_seed([limit.backup_command(source, stored, recipient, hash_command)])
        limit.drop_cache(stored)  # as ours: the restore reads the disk
        return done

    def restore(who: str, folder: Path, encrypt: bool) -> dict[str, Any]:
        os.sync()
        restored = folder / "restored.bin"
        if who == "ours":
            done = run_ours("ours-restore-local", work=str(folder), encrypt=encrypt)
            got = sha256_of(restored)
        else:
            identity = keyring_file if encrypt else None
            command = limit.restore_command(folder / "stored.zst", restored, identity, hash_command)
            done = run_seed([command])
            got = Path(f"{restored}.sha256").read_text().split()[0]
        restored.unlink()
        if got != expected:
            raise SystemExit(f"{who}'s restore from {folder.name} did not give the input back")
        return done

    ratios: dict[str, float] = {}
    for encrypt in (False, True):
        variant = "encrypted" if encrypt else "plain"
        backups: dict[str, list[dict[str, Any]]] = {"ours": [], "ref": []}
        restores: dict[str, list[dict[str, Any]]] = {"ours": [], "ref": []}
        for index in range(bench.repeat):
            order = ("ours", "ref") if index % 2 == 0 else ("ref", "ours")
            for who in order:  # backups, alternating who goes first
                backups[who].append(backup(who, work / f"{who}-{variant}", encrypt))
            for who in order:  # then the restores of what each stored
                restores[who].append(restore(who, work / f"{who}-{variant}", encrypt))
        suffix = "_encrypted" if encrypt else ""
        label = ", age-encrypted" if encrypt else ""
        age, unage = (" age |", "age -d | ") if encrypt else ("", "")
        entry = bench.row(
            f"backup to local tier{label}",
            _medians(backups["ours"]),
            _medians(backups["ref"]),
            f"zstd -3 -T0 |{age} tee | sha256; sync",
        )
        ratios[f"local_backup{suffix}"] = entry["ratio"]
        entry = bench.row(
            f"restore from local tier{label}",
            _medians(restores["ours"]),
            _medians(restores["ref"]),
            f"{unage}zstd -d | tee | sha256",
        )
        ratios[f"local_restore{suffix}"] = entry["ratio"]
    keyring_file.unlink()
    return ratios


def three_tiers(work: Path, source: Path, url: str, gz: Path, s3cp: str) -> dict[str, Any]:
    """Ours (local, then a copy to each bucket) against the seed's way (gzip -6, then aws s3
    cp to each bucket), on the same input and the same loopback moto server."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ours = run_ours("ours-3-tiers", input=str(source), work=str(work), s3=url)
    seed = run_seed(
        [
            f"gzip -6 -c {source} > {gz}",
            f"{s3cp} {gz} s3://seed-secondary/full.gz",
            f"{s3cp} {gz} s3://seed-dr/full.gz",
        ]
    )
    return {"ours": ours, "seed": seed}


def main(only_three_tiers: int = 0, limit_only: bool = False) -> None:
    """Every row; with ``only_three_tiers``, that row only, that many times; with
    ``limit_only``, the local rows against the standard-tool chain only (nothing saved)."""
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDENTIALS)
    import logging

    import limit

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    missing = limit.missing_tools()
    if missing:
        raise SystemExit(f"the benchmark needs {', '.join(missing)} (make bootstrap installs them)")
    size = int(os.environ.get("BENCH_SIZE_MB", "1024")) * MiB
    bench = Bench(size, max(1, int(os.environ.get("BENCH_REPEAT", "5"))))
    one = make_input(OUT / f"input-{size // MiB}m.bin", size)
    work = OUT / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _bench_keyring()  # made once, before the scenario processes read it
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    import boto3

    for bucket, region in (
        ("ours-secondary", "ap-northeast-2"),
        ("ours-dr", "ap-northeast-1"),
        ("seed-secondary", "ap-northeast-2"),
        ("seed-dr", "ap-northeast-1"),
    ):
        boto3.client("s3", region_name=region, endpoint_url=url).create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )
    aws = os.environ.get("BENCH_AWS", shutil.which("aws") or "aws")
    gz = work / "seed.gz"
    s3cp = f"{aws} s3 cp --quiet --endpoint-url {url}"
    results = bench.results
    try:
        if only_three_tiers:
            ratios = []
            for _ in range(only_three_tiers):
                pair = three_tiers(work / "tiers", one, url, gz, s3cp)
                entry = bench.row("backup to local + 2 S3 tiers", pair["ours"], pair["seed"])
                ratios.append(entry["ratio"])
            ratios.sort()
            print(f"three tiers vs the seed's way on {size // MiB} MiB: {ratios}, median ", end="")
            print(f"{ratios[len(ratios) // 2]}x (the goal is >= 3x)")
            return
        hash_command, hash_seconds = limit.fastest_hash(one)
        results["limit_hash"] = {"command": hash_command, "seconds_on_input": hash_seconds}
        print(f"standard-tool chain hashes with: {hash_command} {hash_seconds}", flush=True)
        bench.row(
            "CPU ceiling: pipeline to /dev/null",
            run_ours("ours-null", input=str(one)),
            run_seed([f"zstd -q -3 -T0 -c {one} > /dev/null"]),
            "zstd -3 -T0 > /dev/null",
        )
        ratios = at_the_limit(bench, one, work / "limit", hash_command)
        results["limit"] = ratios
        if limit_only:
            print_limit(ratios)
            return
        plain, encrypted = (
            next(r for r in bench.rows if r["scenario"] == label)
            for label in ("backup to local tier", "backup to local tier, age-encrypted")
        )
        results["encrypted_vs_plain_backup"] = round(plain["ours_s"] / encrypted["ours_s"], 2)
        pair = three_tiers(work / "tiers", one, url, gz, s3cp)
        bench.row("backup to local + 2 S3 tiers", pair["ours"], pair["seed"], "seed's way")
        results["three_tiers_vs_seed"] = bench.rows[-1]["ratio"]
        from_s3 = bench.row(
            "restore from S3 (DR)",
            run_ours("ours-restore-s3", work=str(work / "tiers"), s3=url),
            run_seed(
                [
                    f"{s3cp} s3://seed-dr/full.gz {work / 'dl.gz'}",
                    f"gunzip -c {work / 'dl.gz'} > {work / 'seed-restored.bin'}",
                ]
            ),
            "seed's way",
        )
        if sha256_of(work / "tiers" / "restored.bin") != sha256_of(one):
            raise SystemExit("the restore from S3 did not give the input back")
        from_local = next(r for r in bench.rows if r["scenario"] == "restore from local tier")
        results["local_vs_s3_restore"] = round(from_s3["ours_s"] / from_local["ours_s"], 2)
        four = OUT / f"input-{4 * size // MiB}m.bin"
        if not (four.exists() and four.stat().st_size == 4 * size):
            with open(four, "wb") as out:
                for _ in range(4):
                    with open(one, "rb") as src:
                        shutil.copyfileobj(src, out, 16 * MiB)
        shutil.rmtree(work / "big", ignore_errors=True)
        big = run_ours("ours-local", input=str(four), work=str(work / "big"))
        bench.row("memory: backup of 4x the input to local tier", big, size=4 * size)
        results["peak_rss_MiB"] = {
            f"{size // MiB} MiB": plain["ours_rss_MiB"],
            f"{4 * size // MiB} MiB": round(big["rss_mib"]),
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["rows"] = bench.rows
    results["planning"] = planning(int(os.environ.get("BENCH_PLAN_BACKUPS", "10000")))
    print(json.dumps(results["planning"]), flush=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    pg = postgres_rows()
    over = over_budget(results["planning"])
    print_limit(results["limit"])
    print_pgbackrest(pg)
    if over:
        raise SystemExit(1)  # requests are what S3 charges for, and do not depend on noise


#: Requests allowed for planning over the bench's backups (10,000 by default).
BUDGET = {"restore_plan_requests": 20, "retention_plan_requests": 15}


def over_budget(planning: dict[str, Any]) -> list[str]:
    """Print each request count against its budget; the ones over it."""
    over = []
    for key, budget in BUDGET.items():
        verdict = "within" if planning[key] <= budget else "OVER"
        print(f"{key}: {planning[key]} ({verdict} the budget of {budget})")
        if planning[key] > budget:
            over.append(key)
    return over


def print_limit(ratios: dict[str, float]) -> None:
    """The last line of the output, for scripts (each R: ours ÷ the standard-tool chain)."""
    below = [key for key in LIMIT_KEYS if ratios[key] < 0.9]
    if below:
        print(f"below the goal of 0.9: {', '.join(below)}")
    print("LIMIT " + " ".join(f"{key}={ratios[key]:.2f}" for key in LIMIT_KEYS), flush=True)


def print_pgbackrest(pg: dict[str, Any] | None) -> None:
    """After the LIMIT line, for scripts: backupflow's speed ÷ pgBackRest's in the same run
    (full backup vs process-max=2, archive push p50/p99 vs sync, restore vs async get)."""
    summary = (pg or {}).get("pgbackrest")
    if not summary:
        return
    print("PGBACKREST " + " ".join(f"{k}={summary[k]:.2f}" for k in PGBACKREST_KEYS), flush=True)


def postgres_rows() -> dict[str, Any] | None:
    """The PostgreSQL rows (bench/postgres.py), added to results.json under "postgres"."""
    import postgres

    reason = postgres.missing()
    if reason:
        print(f"PostgreSQL rows skipped: {reason}")
        return None
    found = OUT / "results.json"
    results = json.loads(found.read_text()) if found.exists() else {}
    results["postgres"] = postgres.run()
    results["postgres"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    OUT.mkdir(parents=True, exist_ok=True)
    found.write_text(json.dumps(results, indent=2))
    postgres.print_table(results["postgres"])
    pg: dict[str, Any] = results["postgres"]
    return pg


def print_table(results: dict[str, Any]) -> None:
    print()
    print(
        "| scenario | ours s | ours MB/s | ours RSS MiB | reference | ref s | ref MB/s "
        "| ref RSS MiB | ours ÷ ref speed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["rows"]:
        print(
            f"| {r['scenario']} | {r['ours_s']} | {r['ours_MBps']} | {r['ours_rss_MiB']} | "
            f"{r.get('reference', '-')} | {r.get('ref_s', '-')} | {r.get('ref_MBps', '-')} | "
            f"{r.get('ref_rss_MiB', '-')} | {r.get('ratio', '-')} |"
        )
    print(f"\npeak RSS of our backup: {results['peak_rss_MiB']}")
    print(f"planning: {results['planning']}")
    print(
        f"restore from the local tier vs from S3: {results['local_vs_s3_restore']}x as fast; "
        f"backup to three tiers: {results['three_tiers_vs_seed']}x the seed's way"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario")
    parser.add_argument("--args")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every scenario on small inputs, in seconds (make test runs it); "
        "the environment's BENCH_* values still win",
    )
    parser.add_argument(
        "--three-tiers",
        type=int,
        default=0,
        metavar="N",
        help="run only the three-tier backup row, N times, and print the ratios",
    )
    parser.add_argument(
        "--postgres-only",
        action="store_true",
        help="run only the PostgreSQL rows (BENCH_PG_MB, BENCH_PG_WAL_MB set their sizes)",
    )
    parser.add_argument(
        "--limit-only",
        action="store_true",
        help="run only the local rows against the standard-tool chain and print LIMIT",
    )
    options = parser.parse_args()
    if options.quick:
        for name, value in QUICK.items():
            os.environ.setdefault(name, value)
    if options.scenario:
        print(json.dumps(scenario(options.scenario, json.loads(options.args))))
    elif options.postgres_only:
        print_pgbackrest(postgres_rows())
    else:
        main(options.three_tiers, options.limit_only)
