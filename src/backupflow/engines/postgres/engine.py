"""The PostgreSQL engine: a whole cluster, base backups plus archived WAL.

* full: ``pg_basebackup -Ft -X fetch`` with its SHA-256 backup manifest (the base is
  self-consistent: the WAL it needs is inside ``base.tar``);
* log: the WAL ``backupflow wal-push`` archived into the first tier since the previous
  backup, listed as they are there after a forced segment switch (the run copies them to the
  other tiers);
* no differential (PostgreSQL 15 has none).

A restore lays the base down in a scratch folder beside the target, checks it with
``pg_verifybackup``, starts it privately to replay WAL fetched from the tiers by
``backupflow wal-fetch`` to the target (see :mod:`.restoring`), runs ``pg_amcheck``, stops
it, and only then installs it: the live cluster is stopped, renamed aside and the copy
renamed in (``--replace``).  While the checked copy still runs, the row count of each user
table is read for a drill's smoke report (:meth:`PostgresEngine.smoke`).

Size: about 410 lines: the engine's one class (backup, restore, install) over its helper
modules.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupflow.config import DatabaseSettings
from backupflow.engines.base import (
    BackupSource,
    Capabilities,
    ChainCatalog,
    Dump,
    DumpFile,
    Engine,
    Installed,
    Restored,
)
from backupflow.engines.postgres import installing, layout, restoring
from backupflow.engines.postgres.prefetch import Prefetcher, replay_order, spool_command
from backupflow.engines.postgres.presence import check_presence
from backupflow.engines.postgres.server import Copy, Programs, live_session, stop_postmaster
from backupflow.engines.postgres.walnames import (
    WalName,
    format_lsn,
    parse_lsn,
    parse_wal_name,
    segment_name,
    segment_of,
)
from backupflow.errors import EngineError, IntegrityError
from backupflow.models import BackupKind, Manifest, compact
from backupflow.planning import RestorePlan

if TYPE_CHECKING:
    from backupflow.storage import Tier

__all__ = ["PostgresEngine"]


class PostgresEngine(Engine):
    """Backs up and restores one PostgreSQL cluster (``name`` is its series label)."""

    name = "postgres"
    capabilities = Capabilities(
        differential=False, log=True, point_in_time="exact", chain="positions", target="path"
    )

    def __init__(
        self,
        settings: DatabaseSettings,
        password: Callable[[], str],
        *,
        first_tier: Callable[[], Tier],
        tier_names: Sequence[str],
        tiers: Callable[[], Sequence[Tier]] | None = None,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self.settings = settings
        self.database = settings.name
        self._password = password
        self._first_tier = first_tier
        self._tiers = tiers or (lambda: [first_tier()])
        self.tier_names = tuple(tier_names)
        self.chunk_bytes = chunk_bytes
        self.programs = Programs(settings)
        #: Row counts read from each checked copy, by the folder it was installed as.
        self._counts: dict[Path, dict[str, int]] = {}

    # -- the live server ------------------------------------------------------------

    def _query(self, sql: str) -> tuple[Any, ...]:
        with live_session(self.settings, self._password()) as conn:
            row = conn.execute(sql.encode()).fetchone()
        return tuple(row) if row else ()

    def check_source(self) -> None:
        """Connect; refuse a cluster with extra tablespaces (not supported)."""
        with live_session(self.settings, self._password()) as conn:
            rows = conn.execute(
                "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', "
                "'pg_global') ORDER BY spcname"
            ).fetchall()
        if rows:
            names = ", ".join(str(r[0]) for r in rows[:5])
            raise EngineError(
                f"the PostgreSQL cluster at {self.settings.server}:{self.settings.port} has "
                f"tablespaces outside its data folder ({names}), which backupflow does not "
                "back up; move them into pg_default."
            )

    def _identity(self) -> tuple[int, int, int]:
        """(system identifier, WAL segment bytes, server version number)."""
        row = self._query(
            "SELECT (SELECT system_identifier FROM pg_control_system()), "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
            "current_setting('server_version_num')::int"
        )
        return int(row[0]), int(row[1]), int(row[2])

    # -- backup ---------------------------------------------------------------------------

    def dump(self, kind: BackupKind, parent: BackupSource | None, staging: Path) -> Dump:
        if kind is BackupKind.FULL:
            return self._base_backup(staging)
        if kind is BackupKind.LOG:
            return self._log_backup(parent)
        raise EngineError("PostgreSQL has no differential backups; take a full or a log.")

    def _base_backup(self, staging: Path) -> Dump:
        sysid, segment_bytes, version = self._identity()
        out = staging / "base"
        label = f"backupflow-{compact(datetime.now(UTC))}"
        before = self._query("SELECT clock_timestamp()")[0]
        self.programs.run(
            "pg_basebackup",
            [
                *("-D", str(out), "-Ft", "-X", "fetch", "--manifest-checksums=SHA256"),
                *("--checkpoint=fast", "--no-password", "--label", label),
                *("-h", self.settings.server, "-p", str(self.settings.port)),
                *("-U", self.settings.user or "postgres"),
            ],
            password=self._password(),
            what="pg_basebackup",
        )
        known = ("base.tar", "backup_manifest")
        extra = sorted(p.name for p in out.iterdir() if p.name not in known)
        if extra:
            raise EngineError(
                f"pg_basebackup wrote {', '.join(extra[:3])} beside base.tar (tablespaces "
                "outside the data folder are not supported); move them into pg_default."
            )
        manifest = json.loads((out / "backup_manifest").read_text())
        ranges = manifest.get("WAL-Ranges") or [{}]
        first, last = ranges[0], ranges[-1]
        start = parse_lsn(str(first.get("Start-LSN", "")))
        end = parse_lsn(str(last.get("End-LSN", "")))
        timeline = int(last.get("Timeline", 1))
        start_segment = segment_name(
            int(first.get("Timeline", timeline)), segment_of(start, segment_bytes), segment_bytes
        )
        history = f"{start_segment}.{start % segment_bytes:08X}.backup"
        return Dump(
            kind=BackupKind.FULL,
            restore_point=self._backup_end(history, before).astimezone(UTC),
            files=(
                DumpFile("base", out / "base.tar"),
                DumpFile("backup-manifest", out / "backup_manifest"),
            ),
            position={
                "system_identifier": str(sysid),
                "timeline": timeline,
                "start_lsn": format_lsn(start),
                "end_lsn": format_lsn(end),
                "start_segment": start_segment,
                "segment_bytes": segment_bytes,
                "server_version": version,
            },
        )

    def _backup_end(self, history: str, before: datetime) -> datetime:
        """The latest moment a restore of this base alone (``recovery_target = immediate``)
        is sure to hold every commit of: the server wrote the backup history file
        ``history`` in ``pg_wal`` just after the backup's end record, and its time (whole
        seconds) less one second lies before that record.  ``before`` (read before the
        backup started) when the file cannot be read."""
        try:
            with live_session(self.settings, self._password()) as conn:
                row = conn.execute(
                    "SELECT modification FROM pg_ls_waldir() WHERE name = %s", (history,)
                ).fetchone()
        except (EngineError, psycopg.Error):
            row = None
        if row is None or not isinstance(row[0], datetime):
            return before
        return max(before, row[0] - timedelta(seconds=1))

    def _log_backup(self, parent: BackupSource | None) -> Dump:
        from backupflow.engines.postgres import archive

        sysid, segment_bytes, _version = self._identity()
        if parent is None:
            raise EngineError("a PostgreSQL log backup needs a base backup first; take a full.")
        previous = parent.manifest
        if layout.position_str(previous, "system_identifier") != str(sysid):
            raise EngineError(
                f"the newest backup of {self.database} ({previous.id}) is of another cluster "
                "(its system identifier differs); take a full backup of this one."
            )
        after, from_timeline = self._start_after(previous, segment_bytes)
        with live_session(self.settings, self._password()) as conn:
            moment = conn.execute("SELECT clock_timestamp()").fetchone()
            conn.execute("SELECT txid_current()")  # a commit after the restore point
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            switched = conn.execute("SELECT pg_switch_wal()::text").fetchone()
            assert moment is not None and lsn is not None and switched is not None
            end_lsn = parse_lsn(str(lsn[0]))
            boundary = parse_lsn(str(switched[0]))
            named = conn.execute(
                "SELECT pg_walfile_name(%s::pg_lsn)", (format_lsn(max(boundary, end_lsn) - 1),)
            ).fetchone()
        assert named is not None
        last = parse_wal_name(str(named[0]), segment_bytes)
        tier = self._first_tier()
        names = self._wait_archived(archive, tier, sysid, last, segment_bytes)
        chosen = layout.wal_since(names, after, from_timeline, last)
        self._check_continuous(previous, chosen, after, last, segment_bytes, tier.name)
        segments = [n for n in chosen if n.kind == "segment"]
        stored = archive.archived_objects(tier, self.database, sysid, [n.name for n in chosen])
        return Dump(
            kind=BackupKind.LOG,
            restore_point=moment[0].astimezone(UTC),
            files=(),
            stored=tuple(stored),
            stored_in=tier.name,
            position={
                "system_identifier": str(sysid),
                "timeline": last.timeline,
                "segment_bytes": segment_bytes,
                "first": segments[0].name if segments else last.name,
                "last": last.name,
                "files": [n.name for n in chosen],
                "end_lsn": format_lsn(end_lsn),
                "start_time": previous.restore_point.astimezone(UTC).isoformat(),
            },
        )

    @staticmethod
    def _check_continuous(
        previous: Manifest,
        chosen: list[WalName],
        after: int,
        last: WalName,
        segment_bytes: int,
        tier: str,
    ) -> None:
        """A log backup is only recorded without a hole: from the segment after the previous
        log (or from the base's start segment) through the switched one."""
        if previous.kind is BackupKind.LOG:
            floor = after + 1
        else:
            floor = parse_wal_name(
                layout.position_str(previous, "start_segment"), segment_bytes
            ).segno
        have = {n.segno for n in chosen if n.kind in ("segment", "partial")}
        hole = next((s for s in range(floor, last.segno + 1) if s not in have), None)
        if hole is not None:
            name = segment_name(last.timeline, hole, segment_bytes)
            raise EngineError(
                f"WAL segment {name} is not archived in the {tier} tier, so this log backup "
                "would have a hole and is not recorded; check archive_command (backupflow "
                "wal-push %p), pg_stat_archiver and that tier, then run the log job again."
            )

    def _start_after(self, previous: Manifest, segment_bytes: int) -> tuple[int, int]:
        """(last segment number already covered, its timeline) from the previous backup."""
        if previous.kind is BackupKind.LOG:
            last = parse_wal_name(layout.position_str(previous, "last"), segment_bytes)
            return last.segno, last.timeline
        start = parse_wal_name(layout.position_str(previous, "start_segment"), segment_bytes)
        sysid = layout.position_str(previous, "system_identifier")
        newest = layout.newest_log_last(self._first_tier(), self.database, sysid, segment_bytes)
        if newest is not None and newest.timeline == start.timeline:
            return min(newest.segno, start.segno - 1), start.timeline
        return start.segno - 1, start.timeline

    def _wait_archived(
        self, archive: Any, tier: Tier, sysid: int, last: WalName, segment_bytes: int
    ) -> list[WalName]:
        deadline = time.monotonic() + self.settings.archive_wait_seconds
        while True:
            names: list[WalName] = archive.archived(tier, self.database, sysid, segment_bytes)
            if any(n.name == last.name for n in names):
                return names
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        failed = self._query(
            "SELECT last_failed_wal, last_failed_time, last_archived_wal FROM pg_stat_archiver"
        )
        why = (
            f"the server's last failure was {failed[0]} at {failed[1]}"
            if failed and failed[0]
            else f"the server last archived {failed[2] if failed else None}"
        )
        raise EngineError(
            f"WAL segment {last.name} was not archived into the {tier.name} tier within "
            f"{self.settings.archive_wait_seconds} s ({why}); check archive_command "
            "(backupflow wal-push %p) in postgresql.conf and the server's log."
        )

    # -- restore --------------------------------------------------------------------------

    def plan_restore(
        self, catalog: ChainCatalog, database: str, target: datetime | None, now: datetime
    ) -> RestorePlan[Manifest]:
        """A base backup plus a continuous WAL range (:mod:`.chain`)."""
        from backupflow.engines.postgres.chain import plan_wal_chain

        return plan_wal_chain(catalog, database, target, now)

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> Restored:

        manifests = tuple(source.manifest for source in chain)
        if not manifests or manifests[0].kind is not BackupKind.FULL:
            raise EngineError("a PostgreSQL restore starts from a base backup.")
        sysid = restoring.system_identifier(manifests)
        files = restoring.plan_files(manifests, sysid)
        check_presence(
            manifests, files, self._tiers, database=self.database, sysid=sysid,
            latest=until is None,
        )  # fmt: skip
        scratch.mkdir(mode=0o700)
        self.programs.chown(scratch)
        copy = Copy(self.programs, scratch)
        recovery = restoring.recovery_for(manifests, until)
        report = scratch / restoring.REPORT_FILE
        report.touch(mode=0o600)
        self.programs.chown(report)
        timeline = layout.position_int(manifests[-1], "timeline")
        segment_bytes = layout.position_int(manifests[0], "segment_bytes")
        tiers = list(self._tiers())
        # WAL is fetched ahead from now on, while the base is laid down.
        prefetcher = Prefetcher(
            tiers,
            self.database,
            sysid,
            scratch / "wal-spool",
            replay_order(
                files, loose=recovery.loose, tier=tiers[0] if tiers else None,
                database=self.database, sysid=sysid, timeline=timeline,
                segment_bytes=segment_bytes,
            ),
            files,
            report=report,
            chown=self.programs.chown,
        )  # fmt: skip
        prefetcher.start()
        try:
            return self._replay(chain, manifests, scratch, copy, recovery, files, prefetcher, until)
        finally:
            prefetcher.stop()

    def _replay(
        self,
        chain: Sequence[BackupSource],
        manifests: tuple[Manifest, ...],
        scratch: Path,
        copy: Copy,
        recovery: restoring.Recovery,
        files: dict[str, Any],
        prefetcher: Prefetcher,
        until: datetime | None,
    ) -> Restored:
        from backupflow.engines.postgres import archive

        sysid = restoring.system_identifier(manifests)
        report = scratch / restoring.REPORT_FILE
        # The backup manifest first (beside the copy, not in it): each file's SHA-256 is
        # checked while the base streams in, so pg_verifybackup need not read it all again.
        manifest_path = scratch / "backup_manifest"
        with chain[0].open_object("backup-manifest") as stream, manifest_path.open("xb") as out:
            shutil.copyfileobj(stream, out, self.chunk_bytes)
        self.programs.chown(manifest_path)
        checksums = layout.manifest_checksums(manifest_path)
        with chain[0].open_object("base") as stream:
            layout.extract_base(
                stream, copy.data, self.programs.chown, chunk=self.chunk_bytes,
                checksums=checksums,
            )  # fmt: skip
        # Every file's checksum matched already: pg_verifybackup checks the rest (each file
        # there, of its size, nothing extra, the manifest's own checksum, the WAL).
        skip = ["--skip-checksums"] if checksums is not None else []
        try:
            self.programs.run(
                "pg_verifybackup",
                [*skip, "--manifest-path", str(manifest_path), str(copy.data)],
                what="pg_verifybackup",
            )
        except EngineError as exc:
            raise IntegrityError(f"the base backup {manifests[0].id} {exc}") from None
        manifest_path.unlink()
        plan_path = scratch / restoring.PLAN_FILE
        archive.write_plan(
            plan_path,
            archive.FetchPlan(
                database=self.database,
                system_identifier=str(sysid),
                tiers=list(self.tier_names),
                files=files,
                loose=recovery.loose,
                report=str(report),
            ),
        )
        self.programs.chown(plan_path)
        signal_file = copy.data / "recovery.signal"
        signal_file.touch(mode=0o600)
        self.programs.chown(signal_file)
        copy.prepare()
        script = prefetcher.write_script(
            scratch / "restore-command.sh",
            restoring.fetch_command(self.settings.pg_backupflow_command, plan_path),
        )
        command = spool_command(script)
        copy.start(
            {
                "archive_mode": "on",
                "archive_command": "",
                "restore_command": command,
                "recovery_target_action": "promote",
                # PostgreSQL refuses a second recovery target set after the first, even to
                # '': every reset comes first, the chosen target last.
                **{
                    k: v for k, v in restoring.RECOVERY_RESETS.items() if k not in recovery.settings
                },
                # The chain's own timeline in every mode: a history file another restored
                # copy pushed must not lead recovery onto its fork.
                "recovery_target_timeline": str(layout.position_int(manifests[-1], "timeline")),
                **recovery.settings,
            }
        )
        try:
            wait = self.settings.recovery_wait_seconds
            restoring.wait(copy, self.settings.pg_superuser, wait, until)
            restoring.check_report(copy, set(files))
            self._before_check(copy)
            checks = self._amcheck(copy)
            counts = restoring.row_counts(copy, self.settings.pg_superuser)
            served_elsewhere = restoring.fallbacks(copy)
        finally:
            copy.stop()
        return Restored(
            scratch,
            manifests,
            checks=(f"pg_verifybackup ({manifests[0].id})", recovery.describe, *checks),
            detail=counts,
            problems=served_elsewhere,
        )

    def _before_check(self, copy: Copy) -> None:
        """A seam between recovery and the integrity check (tests corrupt a page here)."""
        del copy

    def _amcheck(self, copy: Copy) -> tuple[str, ...]:
        """``pg_amcheck --all`` as the superuser over the copy's private socket; amcheck is
        installed where it is missing (and stays in the restored copy)."""
        args = [
            *("--all", "--install-missing", "--no-password", "-h", str(copy.socket_dir)),
            *("-p", str(copy.port), "-U", self.settings.pg_superuser),
        ]
        try:
            self.programs.run("pg_amcheck", args, what="pg_amcheck", as_owner=True)
        except EngineError as exc:
            raise IntegrityError(
                f"the restored copy failed its integrity check ({exc}); nothing live was touched."
            ) from None
        return ("pg_amcheck --all (amcheck installed where missing)",)

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Rename the checked copy in as ``target`` (see :mod:`.installing`)."""
        self.check_target(target, replace)
        live = target.resolve() == self.settings.pg_data_dir.resolve()
        installed = installing.install(
            self.programs, restored.scratch / "data", target, stamp=stamp, archive=live
        )
        if isinstance(restored.detail, dict):
            self._counts[target] = restored.detail
        return installed

    def smoke(self, target: Path) -> dict[str, int]:
        """The row count of each user table (``<database>/<schema>.<table>``), read from the
        checked copy before it was installed as ``target`` (starting it again would cost a
        second recovery); empty for a folder this engine did not restore."""
        return dict(self._counts.get(target, {}))

    def discard(self, scratch: Path) -> None:
        """Stop a copy still running in ``scratch`` (by its pid), then remove the folder."""
        if scratch.is_symlink() or not scratch.is_dir():
            return super().discard(scratch)
        stop_postmaster(scratch / "data")
        shutil.rmtree(scratch, ignore_errors=True)

    def drop(self, target: Path) -> None:
        stop_postmaster(target)
        super().drop(target)

    def check_target(self, target: Path, replace: bool) -> None:
        installing.check_target(target, replace)

    def space_needed(self, chain: Sequence[Manifest]) -> int:
        """The base's raw size plus every WAL file's (what the copy holds at most)."""
        return sum(
            obj.raw_size
            for manifest in chain
            for obj in manifest.objects
            if obj.role == "base" or obj.role.startswith("wal:")
        )

    def default_target(self, restore_point: datetime) -> Path:
        live = self.settings.pg_data_dir
        return live.with_name(f"{live.name}-restored-{restore_point.astimezone(UTC):%Y%m%d_%H%M%S}")

    def live_target(self) -> Path:
        return self.settings.pg_data_dir
