"""Storage keys: what validate_key lets through and what it refuses."""

from __future__ import annotations

import pytest

from backupflow.errors import InvalidKeyError, StorageError
from backupflow.storage.base import validate_key


@pytest.mark.parametrize(
    "key",
    [
        "manifest.json",
        "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data.zst",
        "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.manifest.json",
        "config/app/etc=prod/user@host+1.tar.gz",
        "a/b/c/d/e/f",
        "UPPER_lower-09",
        "archive.tmp-not-a-prefix",
    ],
)
def test_normal_keys_are_accepted_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/var/backups/x", id="absolute"),
        pytest.param("/", id="root"),
        pytest.param("..", id="dotdot"),
        pytest.param("../etc/passwd", id="dotdot-first"),
        pytest.param("database/../../etc/passwd", id="dotdot-inside"),
        pytest.param("database/..", id="dotdot-last"),
        pytest.param(".", id="dot"),
        pytest.param("...", id="dots"),
        pytest.param("config/.env", id="hidden-name"),
        pytest.param("database/./x", id="dot-inside"),
        pytest.param("database//x", id="empty-component"),
        pytest.param("database/gantt/", id="trailing-slash"),
        pytest.param("database\\gantt\\x", id="backslash"),
        pytest.param("..\\..\\x", id="backslash-dotdot"),
        pytest.param("database/my backup", id="space"),
        pytest.param("database/x\ty", id="tab"),
        pytest.param("database/x:y", id="colon"),
        pytest.param("database/x*", id="star"),
        pytest.param("database/x?y", id="question"),
        pytest.param("database/$HOME", id="dollar"),
        pytest.param("database/x\x00y", id="nul"),
        pytest.param("database/räksmörgås", id="non-ascii"),
        pytest.param(".tmp-x", id="tmp-prefix"),
        pytest.param("database/gantt/.tmp-20261126.data.zst.1a2b3c4d", id="tmp-prefix-inside"),
        pytest.param(".tmp-dir/x", id="tmp-prefix-folder"),
        pytest.param(
            "database/x\n",
            id="trailing-newline",
        ),
        pytest.param(
            "database\n/x",
            id="newline-in-folder",
        ),
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        validate_key(key)

    assert isinstance(caught.value, StorageError)
    assert repr(key) in str(caught.value)
