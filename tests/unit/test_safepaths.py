"""The one path validator, table-driven: canonical spellings and where links lead."""

from __future__ import annotations

import pytest

from backupflow.errors import IntegrityError
from backupflow.safepaths import check_tree, path_problem

CANONICAL = ["a", "a/b", ".env", "..a", "a..", "a/.b/c", "with space", "ünïcode", "a" * 255]
NOT_CANONICAL = {
    "": "empty",
    "/abs": "absolute",
    "./a": "canonical",
    "a/.": "canonical",
    "a//b": "canonical",
    "a/": "canonical",
    "..": "canonical",
    "a/../b": "canonical",
    "a\\b": "backslash",
    "a\0b": "NUL",
    "a" * 256: "255",
    "/".join(["d"] * 65): "deeper",
    "x" * 4097: "4096",
    "\ud800": "not valid text",
}


@pytest.mark.parametrize("path", CANONICAL)
def test_canonical_paths_are_accepted(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize("path", list(NOT_CANONICAL))
def test_every_other_spelling_is_refused(path: str) -> None:
    problem = path_problem(path)
    assert problem is not None and NOT_CANONICAL[path] in problem


def test_a_path_that_is_not_text_is_refused() -> None:
    assert path_problem(7) == "it is not a string"


INSIDE = {
    "sibling": [("a", "file", None), ("l", "symlink", "a")],
    "the root": [("d", "dir", None), ("d/l", "symlink", "..")],
    "chain inside": [
        ("d", "dir", None),
        ("d/e", "dir", None),
        ("d/t", "symlink", "e"),
        ("d/s", "symlink", "t/.."),
    ],
    "dot segments in a target": [("d", "dir", None), ("d/l", "symlink", "./../d/./x")],
}
OUTSIDE = {
    "parent": [("l", "symlink", "..")],
    "absolute": [("l", "symlink", "/etc")],
    "empty": [("l", "symlink", "")],
    "deep dot-dot": [("d", "dir", None), ("d/l", "symlink", "../../x")],
    "chain escaping": [("d", "dir", None), ("d/t", "symlink", ".."), ("d/s", "symlink", "t/..")],
    "loop": [("a", "symlink", "b"), ("b", "symlink", "a")],
    "long chain": [(f"l{i}", "symlink", f"l{i + 1}") for i in range(45)] + [("l45", "file", None)],
}


@pytest.mark.parametrize("case", list(INSIDE))
def test_links_that_stay_inside_pass(case: str) -> None:
    check_tree(INSIDE[case], "the test list")


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_links_that_leave_are_refused(case: str) -> None:
    with pytest.raises(IntegrityError, match="points outside"):
        check_tree(OUTSIDE[case], "the test list")


def test_a_link_on_disk_counts_like_a_listed_one() -> None:
    on_disk = {"ext"}
    with pytest.raises(IntegrityError, match="points outside"):
        check_tree([("l", "symlink", "ext/x")], "the test list", on_disk_link=on_disk.__contains__)
    with pytest.raises(IntegrityError, match="below the link"):
        check_tree([("ext/x", "file", None)], "the test list", on_disk_link=on_disk.__contains__)
    # a listed folder replaces what is on disk at its path
    check_tree(
        [("ext", "dir", None), ("ext/x", "file", None)], "t", on_disk_link=on_disk.__contains__
    )
