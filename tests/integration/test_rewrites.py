"""Issue 22, item 6: a file backupflow rewrites keeps its owner, group and mode.

:func:`backupflow.fsutil.replace_file` is how every file is rewritten (the env-file of
``key rotate``); these tests run as root in CI, so a file of the ``postgres`` OS user's
group is really given to that group again, and that user really reads the new version.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflow.errors import ConfigError
from backupflow.fsutil import replace_file
from tests.conftest import need


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def postgres() -> pwd.struct_passwd:
    need(os.geteuid() == 0, "giving a file to another user needs root (CI runs as root)")
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        need(False, "there is no postgres OS user (make bootstrap creates it)")
        raise


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder of ours any user may enter, as /etc/backupflow is."""
    folder = Path(tempfile.mkdtemp(prefix="bf-etc-", dir="/tmp"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


def _owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_new_file_is_ours_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "new.env"
    assert replace_file(path, b"A=1\n") is False
    assert path.read_bytes() == b"A=1\n"
    assert _owner_and_mode(path) == (os.geteuid(), os.getegid(), 0o600)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o750])
def test_a_rewritten_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "app.env"
    path.write_bytes(b"old\n")
    path.chmod(mode)
    assert replace_file(path, b"new\n") is True
    assert path.read_bytes() == b"new\n"
    assert _owner_and_mode(path) == (os.geteuid(), os.getegid(), mode)
    assert _leftovers(tmp_path) == []


def test_a_file_of_the_postgres_group_is_still_theirs_and_readable_by_postgres(
    shared: Path, postgres: pwd.struct_passwd
) -> None:
    path = shared / "backupflow.env"
    path.write_bytes(b"BACKUPFLOW_DATABASE__NAME=old\n")
    os.chown(path, 0, postgres.pw_gid)
    path.chmod(0o640)

    replace_file(path, b"BACKUPFLOW_DATABASE__NAME=new\n")

    assert _owner_and_mode(path) == (0, postgres.pw_gid, 0o640)
    read = subprocess.run(
        ["runuser", "-u", "postgres", "--", "cat", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout == "BACKUPFLOW_DATABASE__NAME=new\n"


def test_a_file_of_another_user_keeps_that_owner_when_root_rewrites_it(
    tmp_path: Path, postgres: pwd.struct_passwd
) -> None:
    path = tmp_path / "theirs.conf"
    path.write_bytes(b"old\n")
    os.chown(path, postgres.pw_uid, postgres.pw_gid)
    path.chmod(0o600)
    replace_file(path, b"new\n")
    assert _owner_and_mode(path) == (postgres.pw_uid, postgres.pw_gid, 0o600)
    assert path.read_bytes() == b"new\n"


def test_another_users_file_is_refused_when_its_owner_cannot_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: pwd.struct_passwd
) -> None:
    path = tmp_path / "theirs.conf"
    path.write_bytes(b"old\n")
    os.chown(path, postgres.pw_uid, postgres.pw_gid)
    someone_else = os.geteuid() + 4242
    monkeypatch.setattr(os, "geteuid", lambda: someone_else)  # we are not root, not its owner
    with pytest.raises(ConfigError, match=r"belongs to user id \d+; rewrite it as that user"):
        replace_file(path, b"new\n")
    assert path.read_bytes() == b"old\n"
    assert _leftovers(tmp_path) == []


def test_a_link_at_the_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0\n")
    link = tmp_path / "app.env"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as refused:
        replace_file(link, b"pwned\n")
    assert str(refused.value) == (
        f"{link} is a link; give the real file, backupflow never writes through a link."
    )
    assert link.is_symlink() and target.read_bytes() == b"root:x:0:0\n"
    assert _leftovers(tmp_path) == []


def test_a_folder_at_the_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "app.env"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"is not a regular file; it was left as it is\.$"):
        replace_file(folder, b"x")
    assert folder.is_dir() and _leftovers(tmp_path) == []
