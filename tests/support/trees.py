"""Sample API trees and a comparison of folder trees (types, modes, contents, links)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["make_api_tree", "tree"]


def make_api_tree(root: Path) -> Path:
    """A small Gantt-workload API folder: config, .env files, logs and uploads."""
    (root / "config" / "env").mkdir(parents=True)
    (root / "config" / "app.json").write_text('{"port": 8080, "db": "gantt"}\n')
    (root / "config" / "env" / "production.json").write_text('{"debug": false}\n')
    (root / "config" / "start.sh").write_text("#!/bin/sh\nexec node server.js\n")
    os.chmod(root / "config" / "start.sh", 0o750)
    (root / ".env").write_text("DB_PASSWORD=not-in-any-log\n")
    os.chmod(root / ".env", 0o600)
    (root / ".env.production").write_text("NODE_ENV=production\n")
    os.symlink("app.json", root / "config" / "current.json")
    (root / "logs").mkdir()
    (root / "logs" / "api.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    (root / "logs" / "empty.log").write_bytes(b"")
    (root / "uploads" / "2026" / "11").mkdir(parents=True)
    for i in range(6):
        (root / "uploads" / "2026" / "11" / f"chart-{i}.png").write_bytes(os.urandom(20_000))
    (root / "uploads" / "2026" / "11" / "copy-of-0.png").write_bytes(
        (root / "uploads" / "2026" / "11" / "chart-0.png").read_bytes()
    )
    (root / "server.js").write_text("// not in any file set\n")
    return root


def tree(root: Path, *, prefixes: tuple[str, ...] = ("",)) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` whose path starts with one of ``prefixes``."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".backupflow-")]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(prefixes):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes(), int(st.st_mtime))
    return found
