"""Checks of command-line option values, made before any flow starts.

Each check either returns the value the flows should receive or raises one sentence:
:class:`ParameterError` (exit 2) for an option, :class:`ConfigError` (exit 3) for a
setting, :class:`RestoreTargetError` (exit 1) for a damaged undo record.  Nothing here
writes to disk.
"""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from backupflow.config import Settings
from backupflow.errors import ConfigError, ParameterError, RestoreTargetError
from backupflow.names import is_database_name
from backupflow.parameters import check_target_time
from backupflow.targets import check_restore_target

__all__ = [
    "check_config_file",
    "check_database_option",
    "check_places",
    "check_undo_folder",
    "one_line",
    "parse_target_time",
    "restore_path",
]

#: No backup is older than this; an earlier ``--at`` is a typo (``20216-…``, ``0026-…``).
#: Longest ``--at`` value read (the longest ISO-8601 form is about 32 characters).
_MAX_TIME_TEXT = 64
#: Largest ``undo.json`` read; one in-place restore of a very large set stays far below.
_MAX_UNDO_RECORD = 64 << 20
#: Longest message line printed; longer ones are cut.
_MAX_LINE = 2000
_EXAMPLE = "2026-11-26T10:30:00+09:00"


def one_line(text: str) -> str:
    """``text`` as one printable line: whitespace runs become one space, other control,
    format and surrogate characters (terminal escapes, bidi overrides, undecodable bytes)
    are shown escaped, and very long text is cut."""
    out: list[str] = []
    for char in " ".join(text.split()):
        if char.isprintable() and unicodedata.category(char) != "Cf":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    line = "".join(out)
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"


def _shown(value: str, limit: int = 80) -> str:
    """A user's value quoted for a message, escaped and cut short."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def parse_target_time(
    value: str, timezone: str, *, now: datetime | None = None, option: str = "--at"
) -> datetime:
    """The restore target an operator typed: ISO-8601, aware (a naive time is read in
    ``timezone``), not before 2000 and not later than now.  An empty value is refused: an
    unset shell variable must never mean "the latest state"."""
    if not value.strip():
        raise ParameterError(
            f"{option} is empty (an unset shell variable?); give a time such as {_EXAMPLE}, "
            "or --latest for the latest state."
        )
    moment: datetime | None = None
    if len(value) <= _MAX_TIME_TEXT:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None:
        raise ParameterError(
            f"{option} {_shown(value)} is not an ISO-8601 time such as {_EXAMPLE}."
        )
    checked = check_target_time(
        moment,
        timezone,
        now if now is not None else datetime.now(UTC),
        option,
        latest="use --latest",
        shown=_shown(value),
    )
    assert checked is not None
    return checked


def _absolute(value: str, option: str) -> Path:
    """``value`` as an absolute path, a relative one read against the current folder."""
    if not value.strip():
        raise ParameterError(f"{option} is empty (an unset shell variable?); give a path.")
    path = Path(value)
    if path.is_absolute():
        return path
    try:
        return Path.cwd() / path
    except OSError:
        raise ParameterError(
            f"the current folder is gone, so {option} {_shown(value)} cannot be resolved; "
            "give an absolute path."
        ) from None


def restore_path(value: str, settings: Settings, option: str = "--into") -> Path:
    """A restore target path: absolute (a relative one is read against the current folder,
    which is what an operator at a shell means) and under the allowed restore folders."""
    return check_restore_target(_absolute(value, option), settings, option)


def check_database_option(value: str, option: str) -> str:
    """A database name given on the command line (the one name rule)."""
    if not is_database_name(value):
        shown = _shown(value) + " " if value.strip() else ""
        raise ParameterError(
            f"{option} {shown}is not a database name: use 1 to 128 letters, digits, '_', '.' "
            "or '-', starting with a letter, digit or '_'."
        )
    return value


def check_config_file(value: str | None, variable: str) -> None:
    """Refuse an env-file that exists but is not a regular file (a FIFO or a terminal would
    block the read forever, a device is endless) before the settings read it; a missing one
    is reported by the settings themselves."""
    if not value:
        return
    try:
        info = os.stat(value)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{variable} names {value}, which is not a regular file; it must be a text file "
            "of KEY=value lines."
        )


def check_places(settings: Settings) -> None:
    """Refuse a staging folder or backup log that cannot be what the settings say, before a
    flow starts (a file or a link where the staging folder should be, a folder where the
    log should be)."""
    staging = settings.staging_dir
    try:
        info = os.lstat(staging)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(
            f"the staging folder {staging} cannot be checked ({exc.strerror}); fix "
            "BACKUPFLOW_STAGING_DIR."
        ) from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"the staging folder {staging} is a link; remove it or point "
            "BACKUPFLOW_STAGING_DIR at a real folder."
        )
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"the staging folder {staging} is not a folder; remove it or point "
            "BACKUPFLOW_STAGING_DIR elsewhere."
        )
    log = settings.backup_log
    if log.is_dir():
        raise ConfigError(
            f"the backup log {log} is a folder; point BACKUPFLOW_BACKUP_LOG at a file."
        )
    parent = next((p for p in log.parents if os.path.lexists(p)), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(
            f"the backup log {log} cannot be created because {parent} is not a folder; fix "
            "BACKUPFLOW_BACKUP_LOG."
        )


def check_undo_folder(value: str, root: Path, undo_file: str) -> Path:
    """The folder an in-place restore of ``root`` kept aside: a real folder (not a link)
    named ``.backupflow-aside-*`` directly under ``root``, holding a regular ``undo_file``
    whose JSON has a ``created`` and a ``replaced`` list of strings.  The paths in the
    record are checked by the undo itself."""
    folder = _absolute(value, "--undo")
    where = f"--undo {_shown(value)}"
    try:
        info = os.lstat(folder)
    except OSError as exc:
        raise ParameterError(
            f"{where} cannot be used ({exc.strerror}); give the folder an in-place restore "
            "kept aside (its path was printed by the restore)."
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        kind = "a link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise ParameterError(f"{where} is {kind}; give the folder an in-place restore kept aside.")
    if not folder.name.startswith(".backupflow-aside-") or os.path.realpath(
        folder.parent
    ) != os.path.realpath(root):
        raise ParameterError(
            f"{where} is not a folder kept aside by an in-place restore of {root} "
            f"(those are {root}/.backupflow-aside-*); check --set and the path."
        )
    record = _read_undo_record(folder / undo_file)
    if not (
        isinstance(record, dict)
        and all(
            isinstance(record.get(key), list) and all(isinstance(item, str) for item in record[key])
            for key in ("created", "replaced")
        )
    ):
        raise RestoreTargetError(
            f"the undo record in {folder} is damaged (it must list what was created and "
            "replaced); nothing was changed, put the files back by hand from that folder."
        )
    return folder


def _read_undo_record(path: Path) -> object:
    damaged = RestoreTargetError(
        f"the undo record {path} is missing, not a regular file, too large or not JSON; "
        "nothing was changed, put the files back by hand from its folder."
    )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise damaged from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise damaged
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(_MAX_UNDO_RECORD + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_UNDO_RECORD:
        raise damaged
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise damaged from None
