"""Putting a checked copy in place: a data folder is replaced by renames, never deleted.

With ``--replace`` over a running cluster, in this order:

1. the live postmaster is stopped (fast shutdown, by the pid in its own ``postmaster.pid``);
2. its folder is renamed to ``<target>.before-restore-<stamp>`` (kept; never deleted);
3. the checked copy (``<scratch>/data``, on the same filesystem) is renamed to ``<target>``;
4. if the cluster was running, it is started again from the new folder, as the cluster's
   OS user: ``pg_ctl start -D <target> -l <target>/backupflow-restart.log``, with the
   options the old postmaster ran with (its ``postmaster.opts``, e.g. Debian's
   ``-c config_file=/etc/postgresql/15/main/postgresql.conf``), so the same configuration,
   port, sockets and archive_command.  A cluster a service manager (systemd) ran is now
   running outside it: restart it through the service when convenient.

Disk space: the copy is a second full cluster beside the live one until the old folder
is removed by hand.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from backupflow.engines.base import Installed
from backupflow.engines.postgres.server import Programs, postmaster_pid, stop_postmaster
from backupflow.errors import EngineError, RestoreTargetError
from backupflow.vocabulary import flag

__all__ = ["check_target", "install", "old_options"]

#: What a restored copy must not carry into place: the options it was started with
#: (``pg_ctl restart`` would reuse them) and the manifest pg_verifybackup read.
_LEFTOVERS = ("postmaster.opts", "backup_manifest")


def check_target(target: Path, replace: bool) -> None:
    """A data folder path: never a link or a file; an existing folder only with
    ``replace``, and only if it is a PostgreSQL data folder."""
    if target.is_symlink():
        raise RestoreTargetError(
            f"{target} is a link; restore to the folder it points to, or elsewhere with "
            f"{flag('into')}."
        )
    if target.exists() and not target.is_dir():
        raise RestoreTargetError(f"{target} is a file; give the path of a data folder.")
    if target.exists() and not replace:
        raise RestoreTargetError(
            f"{target} already exists; pass {flag('replace')} to replace it (the current "
            f"cluster is stopped and kept aside) or choose another path with {flag('into')}."
        )
    if target.exists() and not (target / "PG_VERSION").exists():
        raise RestoreTargetError(
            f"{target} is not a PostgreSQL data folder (no PG_VERSION); refusing to replace it."
        )


def old_options(folder: Path) -> str:
    """The options (but ``-D``) the postmaster of ``folder`` was started with, shell-quoted
    for ``pg_ctl -o``, from its ``postmaster.opts``; empty when there is none."""
    try:
        text = (folder / "postmaster.opts").read_text(errors="replace")[:8192]
        argv = shlex.split(text)
    except (OSError, ValueError):
        return ""
    kept: list[str] = []
    skip = False
    for part in argv[1:]:  # argv[0] is the postgres program
        if skip:
            skip = False
        elif part == "-D":
            skip = True
        elif not part.startswith("-D"):
            kept.append(part)
    return " ".join(shlex.quote(part) for part in kept)


_NO_ARCHIVE = (
    "\n# backupflow: restored beside the live cluster, not in its place, so it does not\n"
    "# archive into the live cluster's repository (its own timeline would mix with the live\n"
    "# one's); remove these lines to let it archive.\narchive_mode = 'off'\n"
)


def install(
    programs: Programs, copy: Path, target: Path, *, stamp: str, archive: bool = True
) -> Installed:
    """Rename the checked, stopped ``copy`` in as ``target`` (checked by the caller).
    Without ``archive`` (a copy that is not the live cluster: a drill's, one restored
    elsewhere with --into), the copy's ``postgresql.auto.conf`` turns archiving off."""
    if postmaster_pid(copy) is not None:
        raise EngineError("the restored copy is still running; restore again.")
    for leftover in _LEFTOVERS:
        (copy / leftover).unlink(missing_ok=True)
    if not archive:
        auto = copy / "postgresql.auto.conf"
        fd = os.open(auto, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(_NO_ARCHIVE)
    aside: Path | None = None
    was_running = False
    if target.exists():
        aside = target.with_name(f"{target.name}.before-restore-{stamp}")
        if aside.exists() or aside.is_symlink():
            raise RestoreTargetError(f"{aside} already exists; restore again a second later.")
        was_running = stop_postmaster(target)
        os.rename(target, aside)
    os.rename(copy, target)
    if was_running and aside is not None:
        options = old_options(aside)
        programs.run(
            "pg_ctl",
            ["-D", str(target), "-l", str(target / "backupflow-restart.log"), "-w", "-t", "300",
             *(["-o", options] if options else []), "start"],
            as_owner=True,
            what=f"starting the restored cluster in {target} (the old one is kept in {aside})",
        )  # fmt: skip
    return Installed(target=target, kept_aside=(aside,) if aside else ())
