"""The honest limit: the same work as our pipeline, done by the standard command-line tools,
each in its own process on its own cores (``bench/run.py`` runs it beside ours, interleaved).

* backup:  ``zstd -3 -T0 -c IN | age -r RECIPIENT | tee OUT | HASH > OUT.sha256``, then ``sync``
  (compressed, encrypted, hashed, durable: what a local-tier backup does);
* restore: ``age -d -i KEYFILE OUT | zstd -d | tee RESTORED | HASH > RESTORED.sha256``
  (decrypted, decompressed, written, hashed: what a restore from a local tier does).

Without encryption the ``age`` stage is left out.  ``HASH`` is the faster SHA-256 tool on this
machine, ``sha256sum`` or ``openssl dgst -sha256`` (measured once per run on the input: on some
machines coreutils' ``sha256sum`` runs at a third of OpenSSL's speed, and the limit should be
the best the standard tools can do).  The age identity is read from a private file, never
from a command line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

__all__ = [
    "TOOLS",
    "backup_command",
    "drop_cache",
    "fastest_hash",
    "missing_tools",
    "restore_command",
]

#: What the chain needs on PATH (openssl is optional: sha256sum is the fallback).
TOOLS = ("zstd", "age", "tee", "sha256sum", "sync", "bash")

_HASHES = {"sha256sum": "sha256sum", "openssl": "openssl dgst -sha256 -r"}


def missing_tools() -> list[str]:
    """The tools of the chain this machine lacks."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def fastest_hash(sample: Path) -> tuple[str, dict[str, float]]:
    """The faster SHA-256 command on ``sample`` (its seconds per tool, for the record)."""
    seconds: dict[str, float] = {}
    for name, command in _HASHES.items():
        if shutil.which(name) is None:
            continue
        start = time.perf_counter()
        subprocess.run(
            f"{command} < {shlex.quote(str(sample))} > /dev/null",
            shell=True,
            check=True,
            executable="/bin/bash",
        )
        seconds[name] = round(time.perf_counter() - start, 3)
    best = min(seconds, key=seconds.__getitem__)
    return _HASHES[best], seconds


def backup_command(source: Path, stored: Path, recipient: str | None, hash_command: str) -> str:
    """Compress (and encrypt to ``recipient``), hash and store ``source`` as ``stored``."""
    q = shlex.quote
    stages = [f"zstd -q -3 -T0 -c {q(str(source))}"]
    if recipient:
        stages.append(f"age -r {q(recipient)}")
    stages.append(f"tee {q(str(stored))}")
    stages.append(f"{hash_command} > {q(str(stored) + '.sha256')}")
    return "set -o pipefail; " + " | ".join(stages) + "; sync"


def restore_command(
    stored: Path, restored: Path, identity_file: Path | None, hash_command: str
) -> str:
    """Decrypt (with ``identity_file``), decompress, write and hash ``stored``; the output's
    SHA-256 goes to ``restored`` + ``.sha256`` (the caller compares it with the input's)."""
    q = shlex.quote
    if identity_file:
        stages = [f"age -d -i {q(str(identity_file))} {q(str(stored))}", "zstd -q -d"]
    else:
        stages = [f"zstd -q -d -c {q(str(stored))}"]
    stages.append(f"tee {q(str(restored))}")
    stages.append(f"{hash_command} > {q(str(restored) + '.sha256')}")
    return "set -o pipefail; " + " | ".join(stages)


def drop_cache(path: Path) -> None:
    """Drop ``path`` from the page cache, so that the next read comes from the disk (our
    folder tier drops what it wrote in the same way)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
