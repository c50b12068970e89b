"""Issue 12, classes 2 and 3: ``--dry-run`` validates first and never looks outside the
target; ``--undo`` trusts only an aside folder of ours, directly under the root, and replays
only canonical paths from a well-formed record.  Every refusal is one sentence and changes
nothing (a snapshot of the whole test folder is compared before and after).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import backupflow.filesets.undo as files_undo
from backupflow.errors import BackupflowError, IntegrityError, RestoreTargetError
from backupflow.filesets.engine import plan_changes
from backupflow.filesets.undo import undo_in_place
from backupflow.storage import MemoryStorage
from tests.support.filesets import file, folder, link, restore, snapshot, store

ASIDE = ".backupflow-aside-20261126T101500Z"


def _one_sentence(error: BaseException) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith("."), message


@pytest.fixture
def world(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "victim-folder").mkdir(parents=True)
    (outside / "victim-folder" / "keep").write_text("keep me")
    (outside / "dropped-outside").write_text("outside file")
    (outside / "victim").write_text("secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "app.json").write_text('{"restored": true}')
    (root / "new.txt").write_text("made by the restore")
    return tmp_path


def _aside(root: Path, record: object, *, kept: dict[str, str] | None = None) -> Path:
    """An aside folder as an in-place restore leaves it (version 2 layout)."""
    aside = root / ASIDE
    (aside / "entries").mkdir(parents=True, mode=0o700)
    os.chmod(aside, 0o700)
    for rel, text in (kept or {}).items():
        (aside / "entries" / rel).parent.mkdir(parents=True, exist_ok=True)
        (aside / "entries" / rel).write_text(text)
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    (aside / "undo.json").write_bytes(raw)
    os.chmod(aside / "undo.json", 0o600)
    return aside


# -- class 3: hostile or damaged undo records ---------------------------------------------------

RECORDS: dict[str, object] = {
    "the issue's record": {"created": ["../outside/victim-folder"], "replaced": ["../dropped"]},
    "an absolute path": {"created": [], "replaced": ["/etc/passwd"]},
    "a dot segment": {"created": ["./app.json"], "replaced": []},
    "a double slash": {"created": ["a//b"], "replaced": []},
    "a trailing slash": {"created": ["app.json/"], "replaced": []},
    "dot-dot in the middle": {"created": ["a/../../outside/victim"], "replaced": []},
    "a backslash": {"created": ["..\\outside"], "replaced": []},
    "an empty path": {"created": [""], "replaced": []},
    "a number as a path": {"created": [1], "replaced": []},
    "a path listed twice": {"created": ["new.txt"], "replaced": ["new.txt"]},
    "corrupt JSON": b'{"created": ["new.txt"',
    "not UTF-8": b"\xff\xfe\x00",
    "an empty object": {},
    "a list": [],
    "created as text": {"created": "new.txt", "replaced": []},
    "replaced missing": {"created": ["new.txt"]},
    "an unknown key": {"created": [], "replaced": [], "then": "rm -rf /"},
    "an unknown version": {"version": 7, "created": [], "replaced": []},
    "a kept copy that is missing": {"created": [], "replaced": ["app.json"]},
}


@pytest.mark.parametrize("case", list(RECORDS))
def test_class3_a_hostile_or_damaged_undo_record_changes_nothing(world: Path, case: str) -> None:
    root = world / "root"
    _aside(root, RECORDS[case])
    before = snapshot(world)
    with pytest.raises((IntegrityError, RestoreTargetError)) as caught:
        undo_in_place(root / ASIDE, root)
    _one_sentence(caught.value)
    assert snapshot(world) == before


def test_class3_an_undo_record_larger_than_the_bound_is_refused(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_undo, "MAX_UNDO_BYTES", 100)
    root = world / "root"
    _aside(root, {"created": ["new.txt"] + [f"x{i}" for i in range(50)], "replaced": []})
    before = snapshot(world)
    with pytest.raises(RestoreTargetError, match="at most"):
        undo_in_place(root / ASIDE, root)
    assert snapshot(world) == before


def _valid(root: Path) -> Path:
    return _aside(
        root,
        {"version": 2, "created": ["new.txt"], "replaced": ["app.json"]},
        kept={"app.json": "old"},
    )


def test_class3_a_valid_record_is_replayed(world: Path) -> None:
    root = world / "root"
    _valid(root)
    outside = snapshot(world / "outside")
    assert undo_in_place(root / ASIDE, root) == 2
    assert sorted(p.name for p in root.iterdir()) == ["app.json"]
    assert (root / "app.json").read_text() == "old"
    assert snapshot(world / "outside") == outside


def test_class3_an_aside_folder_of_the_previous_layout_is_still_undone(world: Path) -> None:
    root = world / "root"
    aside = root / ASIDE
    aside.mkdir(mode=0o700)
    (aside / "app.json").write_text("old")
    (aside / "undo.json").write_text(json.dumps({"created": ["new.txt"], "replaced": ["app.json"]}))
    os.chmod(aside / "undo.json", 0o600)
    assert undo_in_place(aside, root) == 2
    assert (root / "app.json").read_text() == "old" and not (root / "new.txt").exists()


def _refused(world: Path, aside: Path, match: str) -> None:
    root = world / "root"
    before = snapshot(world)
    with pytest.raises(BackupflowError, match=match) as caught:
        undo_in_place(aside, root)
    _one_sentence(caught.value)
    assert snapshot(world) == before


def test_class3_an_aside_folder_that_is_a_link_is_refused(world: Path) -> None:
    root = world / "root"
    fake = world / "outside" / "fake-aside"
    (fake / "entries").mkdir(parents=True)
    (fake / "entries" / "app.json").write_text("attacker's")
    (fake / "undo.json").write_text(json.dumps({"created": [], "replaced": ["app.json"]}))
    os.chmod(fake, 0o700)
    os.chmod(fake / "undo.json", 0o600)
    os.symlink(fake, root / ASIDE)
    _refused(world, root / ASIDE, "is a link")


def test_class3_an_aside_folder_outside_the_root_is_refused(world: Path) -> None:
    aside = _valid(world / "root")
    elsewhere = world / "outside" / ASIDE
    os.rename(aside, elsewhere)
    _refused(world, elsewhere, "not directly under")


def test_class3_an_aside_folder_deeper_in_the_root_is_refused(world: Path) -> None:
    aside = _valid(world / "root")
    (world / "root" / "sub").mkdir()
    deeper = world / "root" / "sub" / ASIDE
    os.rename(aside, deeper)
    _refused(world, deeper, "not directly under")


def test_class3_a_folder_not_named_like_an_aside_folder_is_refused(world: Path) -> None:
    aside = _valid(world / "root")
    renamed = world / "root" / "uploads"
    os.rename(aside, renamed)
    _refused(world, renamed, "not named like")


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_class3_an_aside_folder_others_can_write_is_refused(world: Path, mode: int) -> None:
    aside = _valid(world / "root")
    os.chmod(aside, mode)
    _refused(world, aside, "written by other users")


def test_class3_an_undo_record_others_can_write_is_refused(world: Path) -> None:
    aside = _valid(world / "root")
    os.chmod(aside / "undo.json", 0o666)
    _refused(world, aside, "written by other users")


def test_class3_an_undo_record_that_is_a_link_is_refused(world: Path) -> None:
    aside = _valid(world / "root")
    planted = world / "outside" / "record.json"
    planted.write_text(json.dumps({"created": ["app.json"], "replaced": []}))
    (aside / "undo.json").unlink()
    os.symlink(planted, aside / "undo.json")
    _refused(world, aside, "no readable")


def test_class3_an_aside_folder_of_another_user_is_refused(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aside = _valid(world / "root")
    owner = aside.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # we are someone else
    _refused(world, aside, "another user")


def test_class3_a_folder_of_the_root_that_became_a_link_is_not_followed(world: Path) -> None:
    root = world / "root"
    os.symlink("../outside/victim-folder", root / "sub")
    aside = _aside(root, {"created": ["sub/keep"], "replaced": []})
    _refused(world, aside, "now a link")
    assert (world / "outside" / "victim-folder" / "keep").read_text() == "keep me"


def test_class3_a_round_trip_in_place_then_undo_leaves_the_root_as_it_was(world: Path) -> None:
    root = world / "root"
    storage = MemoryStorage()
    store(
        storage,
        "content",
        [folder("conf"), file("conf/a", b"A"), file("app.json", b"B")],
        data={"conf/a": b"A", "app.json": b"B"},
    )
    before = snapshot(root)
    outcome = restore(world, storage, "content", root, in_place=True)
    assert (root / "app.json").read_bytes() == b"B"
    [aside] = outcome.kept_aside
    undo_in_place(aside, root)
    assert snapshot(root) == before


# -- class 2: the dry run ------------------------------------------------------------------------


def test_class2_the_dry_run_refuses_a_path_outside_instead_of_listing_it(world: Path) -> None:
    members = [file("/etc/passwd", b"root:x:0:0")]
    with pytest.raises(IntegrityError, match="unsafe path") as caught:
        plan_changes(members, world / "root")
    _one_sentence(caught.value)


@pytest.mark.parametrize(
    "members",
    [
        [link("up", ".."), file("up/outside/victim", b"secret")],
        [file("../outside/victim", b"secret")],
        [link("./x", "."), file("x/victim", b"secret")],
    ],
    ids=["below a listed link", "dot-dot", "dot-slash"],
)
def test_class2_the_dry_run_never_says_whether_an_outside_file_matches(
    world: Path, members: list[object]
) -> None:
    with pytest.raises(IntegrityError):
        plan_changes(members, world / "root")  # type: ignore[arg-type]


def test_class2_the_dry_run_does_not_look_through_a_link_already_in_the_target(
    world: Path,
) -> None:
    root = world / "root"
    os.symlink("../outside", root / "up")
    with pytest.raises(IntegrityError, match="below the link"):
        plan_changes([file("up/victim", b"secret")], root)


def test_class2_the_dry_run_lists_real_changes_inside(world: Path) -> None:
    root = world / "root"
    (root / "same").write_bytes(b"same")
    os.symlink("app.json", root / "current")
    changes = plan_changes(
        [
            file("same", b"same"),
            file("app.json", b"other"),
            link("current", "app.json"),
            folder("new"),
            file("new/file", b"x"),
        ],
        root,
    )
    assert dict(changes) == {
        "same": "unchanged",
        "app.json": "replace",
        "current": "unchanged",
        "new": "create",
        "new/file": "create",
    }
