"""backupflow benchmark: our pipeline against the seed's way (gzip -6, then aws s3 cp), in one
run on one machine.  ``make bench`` runs it; results go to bench/out/results.json.

Every scenario runs in its own process so that its peak RSS is its own.  ``BENCH_SIZE_MB``
sets the input size (1024 by default; the memory row uses four times as much).  The row the
issue measures is "backup to local + 2 S3 tiers": one backupflow backup to three tiers (a
folder, then copies to two buckets on a loopback moto server, not read back because S3
verified every part) against the seed's way on the same input (gzip -6 to a file, then
``aws s3 cp`` of it to each bucket); its ratio is printed last (the goal: at least 3x).

The PostgreSQL rows (``bench/postgres.py``: base backup, wal-push latency, a restore over an
hour of WAL) run last when PostgreSQL is installed; ``--postgres-only`` runs only them and
adds them to the existing results.json under "postgres".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
MiB = 1 << 20
SIZE = int(os.environ.get("BENCH_SIZE_MB", "1024")) * MiB
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(generate_keys().__dict__, out)
    return GeneratedKeys(**json.loads(path.read_text())).keyring()


def scenario(name: str, args: dict[str, Any]) -> dict[str, Any]:
    from backupflow.codecs import ZstdCodec
    from backupflow.models import StoredObject
    from backupflow.pipeline import open_verified, store_stream
    from backupflow.storage import LocalStorage
    from backupflow.storage.base import ObjectInfo, Storage
    from backupflow.tiers import copy_object

    source = Path(args["input"])
    codec = ZstdCodec(3, -1)
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    keyring = _bench_keyring() if args.get("encrypt") else None
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
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *commands],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **CREDENTIALS},
    )
    seconds, rss = done.stdout.split()
    return {"seconds": float(seconds), "rss_mib": int(rss) / 1024}


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


def three_tiers(
    common: dict[str, Any], gz: Path, s3cp: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ours (local, then a copy to each bucket) and the seed's way (gzip -6, then aws s3 cp
    to each bucket), on the same input and the same loopback moto server."""
    shutil.rmtree(Path(common["work"]) / "primary", ignore_errors=True)
    ours = run_ours("ours-3-tiers", **common)
    seed = run_seed(
        [
            f"gzip -6 -c {common['input']} > {gz}",
            f"{s3cp} {gz} s3://seed-secondary/full.gz",
            f"{s3cp} {gz} s3://seed-dr/full.gz",
        ]
    )
    return ours, seed


def main(only_three_tiers: int = 0) -> None:
    """Every row; with ``only_three_tiers``, that row only, that many times."""
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDENTIALS)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    one = make_input(OUT / f"input-{SIZE // MiB}m.bin", SIZE)
    work = OUT / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
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
    results: dict[str, Any] = {"input_bytes": SIZE, "machine_cores": os.cpu_count()}
    rows = []

    def row(label: str, ours: dict[str, Any], seed: dict[str, Any] | None) -> None:
        mbps = SIZE / MiB / ours["seconds"]
        entry = {
            "scenario": label,
            "ours_s": round(ours["seconds"], 2),
            "ours_MBps": round(mbps),
            "ours_rss_MiB": round(ours["rss_mib"]),
        }
        if seed:
            entry.update(
                seed_s=round(seed["seconds"], 2),
                seed_MBps=round(SIZE / MiB / seed["seconds"]),
                seed_rss_MiB=round(seed["rss_mib"]),
                speedup=round(seed["seconds"] / ours["seconds"], 2),
            )
        rows.append(entry)
        print(json.dumps(entry), flush=True)

    common = {"input": str(one), "work": str(work), "s3": url}
    if only_three_tiers:
        row("backup to local + 2 S3 tiers", *three_tiers(common, gz, s3cp))
        results["three_tiers_vs_seed"] = rows[-1]["speedup"]
        for _ in range(only_three_tiers - 1):
            row("backup to local + 2 S3 tiers", *three_tiers(common, gz, s3cp))
        ratios = sorted(r["speedup"] for r in rows)
        print(f"three tiers vs the seed's way on {SIZE // MiB} MiB: {ratios}, median ", end="")
        print(f"{ratios[len(ratios) // 2]}x (the goal is >= 3x)")
        server.stop()
        return
    zstd_cli = run_seed([f"zstd -q -3 -T0 -c {one} > /dev/null"])
    row(
        "CPU ceiling: pipeline to /dev/null vs zstd -3 -T0",
        run_ours("ours-null", **common),
        zstd_cli,
    )
    seed_local = run_seed([f"gzip -6 -c {one} > {gz}"])
    row("backup to local tier", run_ours("ours-local", **common), seed_local)
    plain_local = rows[-1]
    shutil.rmtree(work / "primary")
    row(
        "backup to local tier, age-encrypted",
        run_ours("ours-local", encrypt=True, **common),
        seed_local,
    )
    results["encrypted_vs_plain_backup"] = round(plain_local["ours_s"] / rows[-1]["ours_s"], 2)
    row(
        "restore from local, age-encrypted",
        run_ours("ours-restore-local", encrypt=True, **common),
        run_seed([f"gunzip -c {gz} > {work / 'seed-restored.bin'}"]),
    )
    # the measure: a backup to three tiers against the seed's way
    row("backup to local + 2 S3 tiers", *three_tiers(common, gz, s3cp))
    results["three_tiers_vs_seed"] = rows[-1]["speedup"]
    row(
        "restore from local",
        run_ours("ours-restore-local", **common),
        run_seed([f"gunzip -c {gz} > {work / 'seed-restored.bin'}"]),
    )
    row(
        "restore from S3 (DR)",
        run_ours("ours-restore-s3", **common),
        run_seed(
            [
                f"{s3cp} s3://seed-dr/full.gz {work / 'dl.gz'}",
                f"gunzip -c {work / 'dl.gz'} > {work / 'seed-restored.bin'}",
            ]
        ),
    )
    server.stop()
    four = OUT / f"input-{4 * SIZE // MiB}m.bin"
    if not (four.exists() and four.stat().st_size == 4 * SIZE):
        with open(four, "wb") as out:
            for _ in range(4):
                with open(one, "rb") as src:
                    shutil.copyfileobj(src, out, 16 * MiB)
    shutil.rmtree(work / "primary", ignore_errors=True)
    big = run_ours("ours-local", input=str(four), work=str(work), s3=url)
    results["peak_rss_MiB"] = {
        f"{SIZE // MiB} MiB": rows[1]["ours_rss_MiB"],
        f"{4 * SIZE // MiB} MiB": round(big["rss_mib"]),
    }
    results["rows"] = rows
    results["planning"] = planning()
    print(json.dumps(results["planning"]))
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    postgres_rows()


def postgres_rows() -> None:
    """The PostgreSQL rows (bench/postgres.py), added to results.json under "postgres"."""
    import postgres

    reason = postgres.missing()
    if reason:
        print(f"PostgreSQL rows skipped: {reason}")
        return
    found = OUT / "results.json"
    results = json.loads(found.read_text()) if found.exists() else {}
    results["postgres"] = postgres.run()
    results["postgres"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    OUT.mkdir(parents=True, exist_ok=True)
    found.write_text(json.dumps(results, indent=2))
    postgres.print_table(results["postgres"])


def print_table(results: dict[str, Any]) -> None:
    print()
    print(
        "| scenario | ours s | ours MB/s | ours RSS MiB "
        "| seed s | seed MB/s | seed RSS MiB | seed/ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["rows"]:
        print(
            f"| {r['scenario']} | {r['ours_s']} | {r['ours_MBps']} | {r['ours_rss_MiB']} | "
            f"{r.get('seed_s', '-')} | {r.get('seed_MBps', '-')} | {r.get('seed_rss_MiB', '-')} | "
            f"{r.get('speedup', '-')} |"
        )
    print(f"\npeak RSS of our backup: {results['peak_rss_MiB']}")
    print(f"planning: {results['planning']}")
    print(
        f"backup to three tiers (local + 2 S3, no read-back of S3 copies): "
        f"{results['three_tiers_vs_seed']}x the seed's way (gzip -6 + aws s3 cp to each "
        f"bucket) on {results['input_bytes'] // MiB} MiB; the goal is >= 3x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario")
    parser.add_argument("--args")
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
    options = parser.parse_args()
    if options.scenario:
        print(json.dumps(scenario(options.scenario, json.loads(options.args))))
    elif options.postgres_only:
        postgres_rows()
    else:
        main(options.three_tiers)
