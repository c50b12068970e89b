"""Issue 12, classes 1, 4, 5 and 6 for file sets: hostile member lists, links, modes, private
targets and size bounds, for tar and content-addressed sets, into a folder and in place.

Each hostile restore must fail with one sentence and leave everything unchanged: the test
takes a snapshot of the whole test folder (the target's siblings, a victim folder outside,
the live root) before the restore and compares it after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import backupflow.filesets.members as filesets
from backupflow.errors import BackupflowError, ConfigError, IntegrityError, RestoreTargetError
from backupflow.filesets import Member
from backupflow.filesets.engine import plan_changes, read_members
from backupflow.storage import MemoryStorage
from tests.support.filesets import (
    LAYOUTS,
    file,
    files_engine,
    folder,
    link,
    restore,
    snapshot,
    store,
    tar_of,
)
from tests.support.keys import KEYRING


def _one_sentence(error: BaseException) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith("."), message


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """An outside folder with things worth attacking, an empty work folder, a live root."""
    outside = tmp_path / "outside"
    (outside / "target").mkdir(parents=True)
    (outside / "target" / "payload").write_text("original payload")
    (outside / "victim").write_text("secret")
    os.chmod(outside / "victim", 0o600)
    (outside / "victim-folder").mkdir()
    (outside / "victim-folder" / "keep").write_text("keep me")
    (tmp_path / "work").mkdir()
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "existing.txt").write_text("live data")
    return tmp_path


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _target(world: Path, mode: str) -> Path:
    return world / "live" if mode == "in-place" else world / "work" / "restored"


def _store_any(storage: MemoryStorage, layout: str, members: list[Member]) -> None:
    try:
        tar = tar_of(members, {}) if layout == "tar" else None
    except (ValueError, UnicodeError):
        tar = tar_of([], {})  # a name tarfile cannot even write: the list alone is hostile
    store(storage, layout, members, tar_bytes=tar)


# -- class 1: links and path spellings in member lists --------------------------------------

ESCAPES: dict[str, list[Member]] = {
    "the issue's four links": [
        link("./x", "."),
        link("x/up", ".."),
        link("up/./v", "../victim"),
        link("up/v/planted", "../out/target/payload"),
    ],
    "a dot-slash spelling of a link": [link("./x", ".")],
    "a link below a link to the root": [link("x", "."), link("x/up", "..")],
    "a dot segment in a link's path": [folder("up"), link("up/./v", "../victim")],
    "links below links made earlier": [
        link("up", "."),
        link("up/v", "x"),
        link("up/v/planted", "../outside/target/payload"),
    ],
    "an absolute path": [file("/tmp/evil")],
    "a double slash": [folder("a"), file("a//b")],
    "a dot segment": [folder("a"), file("a/./b")],
    "a trailing slash": [folder("a/")],
    "dot-dot in the middle": [folder("a"), file("a/../../evil")],
    "a leading dot-dot": [file("../evil")],
    "a backslash": [file("a\\..\\..\\evil")],
    "a NUL": [file("a\0b")],
    "an empty path": [file("")],
    "a path deeper than 64 folders": [file("/".join(["d"] * 65))],
    "a name longer than 255 bytes": [file("n" * 256)],
    "a link to the root's parent": [link("x", "..")],
    "an absolute link": [link("passwd", "/etc/passwd")],
    "an empty link target": [link("nothing", "")],
    "a link chain that escapes only when followed": [
        folder("d"),
        link("d/t", ".."),
        link("d/s", "t/.."),
    ],
    "a three-link chain that escapes only when followed": [
        folder("d"),
        link("d/t", ".."),
        link("d/u", "t"),
        link("d/s", "u/.."),
    ],
    "a link loop": [link("l1", "l2"), link("l2", "l1")],
    "a file below a link to a parent inside": [
        folder("a"),
        link("a/up", ".."),
        file("a/up/evil"),
    ],
    "a duplicate path with two types": [file("dup"), folder("dup")],
    "the same file twice": [file("twice", b"1"), file("twice", b"2")],
    "a file below a file": [file("f"), file("f/g")],
}


@pytest.mark.parametrize("case", list(ESCAPES))
@pytest.mark.parametrize("mode", ["into", "in-place"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_class1_hostile_paths_and_links_are_refused_and_nothing_changes(
    world: Path, layout: str, mode: str, case: str
) -> None:
    storage = MemoryStorage()
    _store_any(storage, layout, ESCAPES[case])
    before = snapshot(world)
    with pytest.raises(IntegrityError) as caught:
        restore(world, storage, layout, _target(world, mode), in_place=mode == "in-place")
    _one_sentence(caught.value)
    assert snapshot(world) == before


ALLOWED: dict[str, list[Member]] = {
    "a link to a sibling": [folder("c"), file("c/app.json"), link("c/current", "app.json")],
    "a link to a parent inside": [folder("a"), folder("a/b"), link("a/b/up", "..")],
    "a link to the root itself": [link("here", ".")],
    "a link across folders": [folder("a"), file("a/f"), folder("b"), link("b/l", "../a/f")],
    "a dangling link inside": [link("later", "not-yet")],
    "a link chain that stays inside": [
        folder("d"),
        folder("d/e"),
        link("d/t", "e"),
        link("d/s", "t/.."),
    ],
}


@pytest.mark.parametrize("case", list(ALLOWED))
@pytest.mark.parametrize("mode", ["into", "in-place"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_class1_links_that_stay_inside_still_restore(
    world: Path, layout: str, mode: str, case: str
) -> None:
    storage = MemoryStorage()
    store(storage, layout, ALLOWED[case])
    outside = snapshot(world / "outside")
    target = _target(world, mode)
    restore(world, storage, layout, target, in_place=mode == "in-place")
    for member in ALLOWED[case]:
        path = target / member.path
        if member.type == "symlink":
            assert os.readlink(path) == member.target
        elif member.type == "dir":
            assert path.is_dir() and not path.is_symlink()
        else:
            assert path.read_bytes() == b"x" and not path.is_symlink()
    assert snapshot(world / "outside") == outside


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class1_a_member_below_a_link_already_in_the_target_is_refused(
    world: Path, layout: str
) -> None:
    os.symlink("../outside/target", world / "live" / "uploads")
    storage = MemoryStorage()
    store(
        storage, layout, [file("uploads/payload", b"planted")], data={"uploads/payload": b"planted"}
    )
    before = snapshot(world)
    with pytest.raises(IntegrityError, match="below the link") as caught:
        restore(world, storage, layout, world / "live", in_place=True)
    _one_sentence(caught.value)
    assert snapshot(world) == before
    members = read_members_of(storage, layout)
    with pytest.raises(IntegrityError, match="below the link"):
        plan_changes(members, world / "live")  # the dry run refuses it too


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class1_a_link_target_through_a_link_already_in_the_target_is_refused(
    world: Path, layout: str
) -> None:
    os.symlink("../outside", world / "live" / "ext")
    storage = MemoryStorage()
    store(storage, layout, [link("innocent", "ext/victim")])
    before = snapshot(world)
    with pytest.raises(IntegrityError, match="points outside"):
        restore(world, storage, layout, world / "live", in_place=True)
    assert snapshot(world) == before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class1_a_listed_folder_that_is_a_link_on_disk_is_replaced_not_written_through(
    world: Path, layout: str
) -> None:
    os.symlink("../outside/target", world / "live" / "config")
    storage = MemoryStorage()
    members = [folder("config"), file("config/payload", b"restored")]
    store(storage, layout, members, data={"config/payload": b"restored"})
    outside = snapshot(world / "outside")
    changes = dict(plan_changes(read_members_of(storage, layout), world / "live"))
    assert changes == {"config": "replace", "config/payload": "create"}  # not read through
    outcome = restore(world, storage, layout, world / "live", in_place=True)
    assert snapshot(world / "outside") == outside
    assert not (world / "live" / "config").is_symlink()
    assert (world / "live" / "config" / "payload").read_bytes() == b"restored"
    [aside] = outcome.kept_aside
    assert os.readlink(aside / "entries" / "config") == "../outside/target"


def test_class1_an_into_target_that_is_a_link_is_refused(world: Path) -> None:
    os.symlink(world / "outside" / "victim-folder", world / "work" / "restored")
    storage = MemoryStorage()
    store(storage, "tar", [file("planted")])
    from backupflow.config import FileSetSettings
    from backupflow.filesets.engine import FileSetEngine

    engine = FileSetEngine(
        "config", FileSetSettings(root=world / "live", include=["**"]), staging_dir=world / "s"
    )
    (world / "outside" / "victim-folder" / "keep").unlink()  # an empty folder behind the link
    with pytest.raises(RestoreTargetError, match="is a link") as caught:
        engine.check_target(world / "work" / "restored", replace=False)
    _one_sentence(caught.value)


def read_members_of(storage: MemoryStorage, layout: str) -> list[Member]:
    from datetime import UTC, datetime

    from backupflow.restore import _source, load_plan
    from backupflow.storage import Tier
    from tests.support.filesets import SETS

    name, category = SETS[layout]
    tier = Tier("primary", storage, KEYRING)
    loaded = load_plan([tier], files_engine(name), name, None, datetime.now(UTC), category)
    return read_members(_source(loaded.plan.last, tier, 1 << 16, None))


# -- class 4: modes ---------------------------------------------------------------------------

MODES = [
    folder("private", 0o700),
    file("private/secret", mode=0o600),
    file("shared", mode=0o666),
    file("run.sh", mode=0o750),
    file("setuid", mode=0o4755),
    folder("open", 0o777),
    folder("readonly", 0o555),
    file("readonly/inside", mode=0o444),
]
EXPECTED_MODES = {
    "private": 0o700,
    "private/secret": 0o600,
    "shared": 0o666,
    "run.sh": 0o750,
    "setuid": 0o755,
    "open": 0o777,
    "readonly": 0o555,
    "readonly/inside": 0o444,
}


@pytest.mark.parametrize("mode", ["into", "in-place"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_class4_restored_modes_are_exactly_the_recorded_ones_under_umask_022(
    world: Path, layout: str, mode: str, umask_022: None
) -> None:
    storage = MemoryStorage()
    store(storage, layout, MODES)
    target = _target(world, mode)
    restore(world, storage, layout, target, in_place=mode == "in-place")
    found = {p: stat.S_IMODE((target / p).lstat().st_mode) for p in EXPECTED_MODES}
    assert found == EXPECTED_MODES
    assert (target / "private" / "secret").stat().st_mtime == 1_700_000_000
    if mode == "into":
        assert stat.S_IMODE(target.stat().st_mode) == 0o700  # the new folder is private


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class4_modes_are_never_set_by_name(
    world: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a mode was set by name: {args}")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "lchmod", refuse, raising=False)
    storage = MemoryStorage()
    store(storage, layout, MODES)
    target = _target(world, "into")
    restore(world, storage, layout, target)
    assert stat.S_IMODE((target / "private" / "secret").stat().st_mode) == 0o600


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class4_a_file_swapped_for_a_link_after_it_was_written_is_not_widened(
    world: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone swaps the freshly written file for a link to a 0600 victim just before its
    mode is set: the mode goes to the file that was written, never to the victim."""
    victim = world / "outside" / "victim"
    real_fchmod, real_chmod = os.fchmod, os.chmod

    def swap(path: str) -> None:
        if os.path.basename(path) == "wide" and not os.path.islink(path):
            os.unlink(path)
            os.symlink(victim, path)

    def swap_then_fchmod(fd: int, mode: int) -> None:
        swap(os.readlink(f"/proc/self/fd/{fd}"))
        real_fchmod(fd, mode)

    def swap_then_chmod(path: str, mode: int, **kwargs: object) -> None:
        swap(os.fspath(path))
        real_chmod(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fchmod", swap_then_fchmod)
    monkeypatch.setattr(os, "chmod", swap_then_chmod)
    storage = MemoryStorage()
    store(storage, layout, [file("wide", b"x", 0o666)])
    with contextlib.suppress(BackupflowError):  # refusing is fine too: the victim matters
        restore(world, storage, layout, _target(world, "into"))
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert victim.read_text() == "secret"


# -- class 5: private staging and default targets ----------------------------------------------


def _default_restore(world: Path, storage: MemoryStorage, staging: Path) -> Path:
    from datetime import UTC, datetime

    from backupflow.config import FileSetSettings
    from backupflow.filesets.engine import FileSetEngine
    from backupflow.models import Category
    from backupflow.restore import execute_restore, load_plan, resolve_target
    from backupflow.storage import Tier

    engine = FileSetEngine(
        "config", FileSetSettings(root=world / "live", include=["**"]), staging_dir=staging
    )
    loaded = load_plan(
        [Tier("primary", storage, KEYRING)],
        engine,
        "config",
        None,
        datetime.now(UTC),
        Category.CONFIG,
    )
    target = resolve_target(engine, loaded.plan, None, False)
    return execute_restore(engine, loaded, target, replace=False, chunk_bytes=1 << 16).target


def test_class5_a_planted_link_at_the_staging_path_is_refused(world: Path) -> None:
    trap = world / "trap"
    trap.mkdir()
    os.chmod(trap, 0o777)
    os.symlink(trap, world / "staging")
    storage = MemoryStorage()
    store(storage, "tar", [file(".env", b"DB_PASSWORD=x", 0o600)], data={".env": b"DB_PASSWORD=x"})
    with pytest.raises(ConfigError, match="is a link") as caught:
        _default_restore(world, storage, world / "staging")
    _one_sentence(caught.value)
    assert list(trap.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_class5_a_staging_folder_others_can_write_is_refused(world: Path, mode: int) -> None:
    (world / "staging").mkdir()
    os.chmod(world / "staging", mode)
    storage = MemoryStorage()
    store(storage, "tar", [file(".env", b"x", 0o600)])
    with pytest.raises(ConfigError, match="writable by other users"):
        _default_restore(world, storage, world / "staging")
    assert list((world / "staging").iterdir()) == []


def test_class5_a_staging_folder_of_another_user_is_refused(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (world / "staging").mkdir(mode=0o700)
    owner = (world / "staging").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # we are someone else
    storage = MemoryStorage()
    store(storage, "tar", [file(".env", b"x", 0o600)])
    with pytest.raises(ConfigError, match="not to us"):
        _default_restore(world, storage, world / "staging")


def test_class5_the_default_target_is_new_private_and_not_predictable(world: Path) -> None:
    storage = MemoryStorage()
    manifest = store(
        storage, "tar", [file(".env", b"DB_PASSWORD=x", 0o600)], data={".env": b"DB_PASSWORD=x"}
    )
    staging = world / "staging"
    staging.mkdir(mode=0o700)
    trap = world / "trap"
    trap.mkdir()
    os.chmod(trap, 0o777)
    from datetime import UTC

    stamp = manifest.restore_point.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    os.symlink(trap, staging / f"restored-config-{stamp}")  # the old, predictable name
    target = _default_restore(world, storage, staging)
    assert target.parent == staging and not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert (target / ".env").read_bytes() == b"DB_PASSWORD=x"
    assert list(trap.iterdir()) == []


def test_class5_a_missing_staging_folder_is_made_private(world: Path, umask_022: None) -> None:
    storage = MemoryStorage()
    store(storage, "tar", [file("a", b"x")])
    target = _default_restore(world, storage, world / "new-staging")
    assert stat.S_IMODE((world / "new-staging").stat().st_mode) == 0o700
    assert (target / "a").read_bytes() == b"x"


def test_class5_an_into_folder_others_can_write_is_refused(world: Path) -> None:
    target = world / "work" / "restored"
    target.mkdir()
    os.chmod(target, 0o777)
    storage = MemoryStorage()
    store(storage, "tar", [file("a")])
    from backupflow.config import FileSetSettings
    from backupflow.filesets.engine import FileSetEngine

    engine = FileSetEngine(
        "config", FileSetSettings(root=world / "live", include=["**"]), staging_dir=world / "s"
    )
    with pytest.raises(RestoreTargetError, match="written by others"):
        engine.check_target(target, replace=False)


# -- class 6: size bounds -----------------------------------------------------------------------


@pytest.fixture
def largest_scratch_file(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of the largest file in every tree removed while the test runs (a failed
    restore removes its scratch folder: this is what it had written)."""
    sizes: list[int] = [0]
    real_rmtree = shutil.rmtree

    def measuring(path: object, *args: object, **kwargs: object) -> None:
        base = kwargs.get("dir_fd")
        top = os.path.join(f"/proc/self/fd/{base}", str(path)) if base is not None else str(path)
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                sizes.append(os.lstat(os.path.join(dirpath, name)).st_size)
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", measuring)
    return sizes


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class6_content_longer_than_its_recorded_size_stops_at_the_first_extra_byte(
    world: Path, layout: str, largest_scratch_file: list[int]
) -> None:
    member = file("small.txt", b"abcd")  # 4 bytes recorded
    big = b"a" * 32 * 1024
    storage = MemoryStorage()
    if layout == "tar":
        store(storage, layout, [member], tar_bytes=tar_of([member], {member.path: big}))
    else:
        store(storage, layout, [member], data={member.path: big})
    before = snapshot(world)
    with pytest.raises(IntegrityError) as caught:
        restore(world, storage, layout, _target(world, "into"))
    _one_sentence(caught.value)
    assert len(largest_scratch_file) > 1 or layout == "tar"  # the scratch tree was seen
    assert max(largest_scratch_file) <= 4
    assert snapshot(world) == before


def test_class6_an_archive_larger_than_its_member_list_allows_is_refused(world: Path) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        info.pax_headers = {"comment": "x" * 2_000_000}  # read into memory by tarfile
        tar.addfile(info, io.BytesIO(b"x"))
    storage = MemoryStorage()
    store(storage, "tar", [file("a")], tar_bytes=buffer.getvalue())
    with pytest.raises(IntegrityError, match="larger than its member list allows"):
        restore(world, storage, "tar", _target(world, "into"))
    assert not _target(world, "into").exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class6_a_restore_that_cannot_fit_is_refused_before_writing(
    world: Path, layout: str
) -> None:
    storage = MemoryStorage()
    store(storage, layout, [file("huge.bin", b"x", size=1 << 50)])
    before = snapshot(world)
    with pytest.raises(RestoreTargetError, match="free") as caught:
        restore(world, storage, layout, _target(world, "into"))
    _one_sentence(caught.value)
    assert snapshot(world) == before


LISTS: dict[str, bytes] = {
    "not JSON": b"{not json\n",
    "a JSON list": b'["a", "file"]\n',
    "an unknown field": b'{"path": "a", "type": "dir", "mode": 493, "mtime": 0, "run": "x"}\n',
    "an unknown type": b'{"path": "a", "type": "fifo", "mode": 420, "mtime": 0}\n',
    "a mode as text": b'{"path": "a", "type": "dir", "mode": "0755", "mtime": 0}\n',
    "a mode beyond 07777": b'{"path": "a", "type": "dir", "mode": 65535, "mtime": 0}\n',
    "a negative size": (
        b'{"path": "a", "type": "file", "mode": 420, "mtime": 0, "size": -1, "sha256": "'
        + b"0" * 64
        + b'"}\n'
    ),
    "a file without a SHA-256": b'{"path": "a", "type": "file", "mode": 420, "mtime": 0}\n',
    "a time out of range": b'{"path": "a", "type": "dir", "mode": 493, "mtime": 1e300}\n',
    "a link without a target": b'{"path": "a", "type": "symlink", "mode": 511, "mtime": 0}\n',
    "a line longer than 64 KiB": b'{"path": "' + b"a" * 70_000 + b'"}\n',
    "one endless line": b"a" * 300_000,
}


@pytest.mark.parametrize("case", list(LISTS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_class6_a_malformed_or_unbounded_member_list_is_refused(
    world: Path, layout: str, case: str
) -> None:
    storage = MemoryStorage()
    store(storage, layout, [file("a")], listing=LISTS[case])
    before = snapshot(world)
    with pytest.raises(IntegrityError) as caught:
        restore(world, storage, layout, _target(world, "into"))
    _one_sentence(caught.value)
    assert snapshot(world) == before


def test_class6_a_member_list_with_too_many_entries_is_refused(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filesets, "MAX_MEMBERS", 10)
    storage = MemoryStorage()
    store(storage, "content", [file(f"f{i}") for i in range(11)])
    with pytest.raises(IntegrityError, match="more than 10 lines"):
        restore(world, storage, "content", _target(world, "into"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_class5_an_existing_empty_private_folder_is_restored_into(world: Path, layout: str) -> None:
    target = world / "work" / "restored"
    target.mkdir(mode=0o700)
    storage = MemoryStorage()
    store(storage, layout, [folder("a"), file("a/b", b"x")])
    restore(world, storage, layout, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["a", "a/b"]


def test_class4_the_staged_archive_and_member_list_are_private_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    from backupflow.config import FileSetSettings
    from backupflow.filesets.engine import FileSetEngine
    from backupflow.models import BackupKind

    api = tmp_path / "api"
    api.mkdir()
    (api / ".env").write_text("DB_PASSWORD=x")
    os.chmod(api / ".env", 0o600)
    engine = FileSetEngine(
        "config", FileSetSettings(root=api, include=[".env"]), staging_dir=tmp_path / "s"
    )
    dump = engine.dump(BackupKind.FULL, None, tmp_path / "staged")
    assert {f.role: stat.S_IMODE(f.path.stat().st_mode) for f in dump.files} == {
        "data": 0o600,
        "members": 0o600,
    }
