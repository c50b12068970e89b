"""The file-set part of the demo: configuration, logs and uploads backed up and restored."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

from rich.console import Console
from rich.table import Table

from backupflow.config import Settings
from backupflow.filesets import FileSetName
from backupflow.reporting import iso
from backupflow.storage import open_primary

__all__ = ["create_sample_api", "run_file_demo", "tree_digest"]

SETS = {"config": ("config/", ".env"), "logs": ("logs/",), "uploads": ("uploads/",)}


def create_sample_api(root: Path, *, seed: int = 11) -> None:
    """A sample API folder: config/, .env files, PM2-style logs and user uploads."""
    rng = random.Random(seed)
    (root / "config").mkdir(parents=True)
    (root / "config" / "app.json").write_text('{"port": 8080, "database": "gantt_workload"}\n')
    (root / "config" / "ecosystem.config.js").write_text("module.exports = {apps: []}\n")
    (root / ".env").write_text("DB_PASSWORD=demo-only\n")
    os.chmod(root / ".env", 0o600)
    (root / ".env.production").write_text("NODE_ENV=production\n")
    os.symlink("app.json", root / "config" / "current.json")
    (root / "logs").mkdir()
    (root / "logs" / "api-out.log").write_text(
        "".join(f"2026-11-26T0{i % 10}:00 GET /api/workload 200\n" for i in range(20_000))
    )
    (root / "uploads" / "projects").mkdir(parents=True)
    for i in range(40):
        (root / "uploads" / "projects" / f"attachment-{i:02d}.bin").write_bytes(
            rng.randbytes(64_000)
        )


def tree_digest(root: Path, prefixes: tuple[str, ...]) -> str:
    """SHA-256 over paths, types, modes, contents and link targets under ``root``."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".backupflow-"))
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(prefixes):
                continue
            st = path.lstat()
            digest.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
            else:
                digest.update(str(stat.S_IMODE(st.st_mode)).encode())
                if stat.S_ISREG(st.st_mode):
                    digest.update(path.read_bytes())
    return digest.hexdigest()


def run_file_demo(settings: Settings, workdir: Path, console: Console) -> bool:
    """Back up the three sets (uploads on three days), restore them, one of them in place."""
    from flows.backup_files import backup_files
    from flows.restore_files import restore_files

    api = settings.files.config.root
    create_sample_api(api)
    console.rule("[bold]file sets: configuration, logs, uploads")
    before = {name: tree_digest(api, prefixes) for name, prefixes in SETS.items()}
    names: tuple[FileSetName, ...] = ("config", "logs")
    for name in names:
        manifest = backup_files(file_set=name)
        console.print(
            f"[green]{name} backup[/green] {manifest.id}: {manifest.position['files']} files, "
            f"{manifest.position['bytes']:,} bytes -> {manifest.stored_bytes:,} stored"
        )
    logical = 0
    for day in (1, 2, 3):
        if day == 2:
            (api / "uploads" / "projects" / "new-on-day-2.bin").write_bytes(os.urandom(64_000))
        manifest = backup_files(file_set="uploads")
        logical += manifest.position["bytes"]
        console.print(
            f"[green]uploads backup, day {day}[/green] {manifest.id}: "
            f"{manifest.position['files']} files, {manifest.position['bytes']:,} bytes"
        )
    before["uploads"] = tree_digest(api, SETS["uploads"])
    content = sum(i.size for i in open_primary(settings).list("uploads/uploads/content/"))
    console.print(
        f"uploads: 3 daily restore points of {logical:,} bytes in all are kept in {content:,} "
        f"bytes of content per tier: {100 * (1 - content / logical):.0f}% saved by storing "
        "each distinct file once"
    )

    ok = True
    table = Table(title="File restores")
    for column in ("set", "how", "restore point", "files", "matches the backed-up files"):
        table.add_column(column)
    every: tuple[FileSetName, ...] = ("config", "logs", "uploads")
    for name in every:
        into = workdir / "restored-files" / name
        report = restore_files(file_set=name, into=str(into))
        same = tree_digest(into, SETS[name]) == before[name]
        ok = ok and same
        table.add_row(
            name,
            f"into {into}",
            iso(report.plan.restore_point),
            str(len(report.changes)),
            "[green]yes[/green]" if same else "[red]NO[/red]",
        )
    (api / "config" / "app.json").write_text('{"port": "oops"}\n')  # a bad deploy
    report = restore_files(file_set="config", in_place=True)
    same = tree_digest(api, SETS["config"]) == before["config"]
    ok = ok and same
    table.add_row(
        "config",
        "in place (live files kept aside, post-restore hook run)",
        iso(report.plan.restore_point),
        str(len(report.changes)),
        "[green]yes[/green]" if same else "[red]NO[/red]",
    )
    console.print(table)
    if report.outcome is not None:
        for aside in report.outcome.kept_aside:
            console.print(f"the replaced config files are kept in {aside} (undo: --undo)")
    if report.hook is not None:
        console.print(f"post-restore hook said: {report.hook.output.strip()}")
    return ok
