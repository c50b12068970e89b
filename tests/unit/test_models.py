"""Manifests: JSON round trip, refusal of unknown or damaged ones, timestamps and ids."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from backupflow.errors import CatalogError, UnsupportedManifestError
from backupflow.models import (
    MANIFEST_VERSION,
    BackupKind,
    Category,
    Manifest,
    StoredObject,
    new_backup_id,
    utc,
)

ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-(full|diff|log)-[0-9a-f]{6}$")
SEOUL = timezone(timedelta(hours=9))
SOURCE = "primary:/var/backups/database/gantt/2026-11-26/x.manifest.json"


def stored(role: str, digit: str) -> StoredObject:
    return StoredObject(
        role=role,
        key=f"database/gantt/2026-11-26/20261126T053301Z-diff-3f9a1c.{role}.zst",
        codec="zstd",
        size=1234,
        sha256=digit * 64,
        raw_size=5678,
        raw_sha256="f" * 64,
    )


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "id": "20261126T053301Z-diff-3f9a1c",
        "category": Category.DATABASE,
        "kind": BackupKind.DIFF,
        "engine": "sqlite",
        "database": "gantt",
        "started_at": datetime(2026, 11, 26, 14, 33, 1, 250_000, tzinfo=SEOUL),
        "finished_at": datetime(2026, 11, 26, 5, 34, 2, tzinfo=UTC),
        "restore_point": datetime(2026, 11, 26, 5, 33, 2, 123_456, tzinfo=UTC),
        "position": {"pages": [1, 5, 9], "lsn": "0/16B3748"},
        "base_id": "20261126T020000Z-full-0a0b0c",
        "parent_id": "20261126T020000Z-full-0a0b0c",
        "objects": (stored("data", "a"), stored("pages", "b")),
        "notes": ("promoted", "second note"),
    }
    fields.update(changes)
    return Manifest(**fields)


def mutated_json(**changes: Any) -> bytes:
    data = json.loads(manifest().to_json())
    data.update(changes)
    return json.dumps(data).encode()


def test_json_round_trip_gives_an_equal_manifest() -> None:
    original = manifest()

    again = Manifest.from_json(original.to_json(), source=SOURCE)

    assert again == original
    assert again.object("pages").sha256 == "b" * 64
    assert again.position == {"pages": [1, 5, 9], "lsn": "0/16B3748"}
    assert again.to_json() == original.to_json()


def test_json_holds_timestamps_in_utc() -> None:
    data = json.loads(manifest().to_json())

    # 14:33:01.25 in Seoul is 05:33:01.25 UTC
    assert datetime.fromisoformat(data["started_at"]) == datetime(
        2026, 11, 26, 5, 33, 1, 250_000, tzinfo=UTC
    )
    assert datetime.fromisoformat(data["started_at"]).utcoffset() == timedelta(0)
    # restore points are kept to the millisecond, rounded down
    assert datetime.fromisoformat(data["restore_point"]).microsecond == 123_000


def test_manifest_stores_timestamps_as_utc() -> None:
    m = manifest()

    assert m.started_at.utcoffset() == timedelta(0)
    assert m.started_at == datetime(2026, 11, 26, 5, 33, 1, 250_000, tzinfo=UTC)


def test_stored_bytes_sums_the_objects() -> None:
    assert manifest().stored_bytes == 2 * 1234


@pytest.mark.parametrize("version", [MANIFEST_VERSION + 1, 0, 99])
def test_unknown_format_version_is_refused_naming_the_version(version: int) -> None:
    with pytest.raises(UnsupportedManifestError) as caught:
        Manifest.from_json(mutated_json(format_version=version), source=SOURCE)

    message = str(caught.value)
    assert f"format version {version}" in message
    assert SOURCE in message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe\x00\x00garbage", id="binary"),
        pytest.param(b"", id="empty"),
        pytest.param(manifest().to_json()[:-20], id="truncated"),
    ],
)
def test_damaged_manifest_is_a_catalog_error(raw: bytes) -> None:
    with pytest.raises(CatalogError) as caught:
        Manifest.from_json(raw, source=SOURCE)

    assert not isinstance(caught.value, UnsupportedManifestError)
    assert SOURCE in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[1, 2, 3]", id="a-list"),
        pytest.param(b'{"hello": "world"}', id="no-format"),
        pytest.param(mutated_json(format="someone.else.manifest"), id="other-format"),
    ],
)
def test_json_that_is_not_a_manifest_is_a_catalog_error(raw: bytes) -> None:
    with pytest.raises(CatalogError, match="not a backupflow manifest") as caught:
        Manifest.from_json(raw, source=SOURCE)

    assert not isinstance(caught.value, UnsupportedManifestError)
    assert SOURCE in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"id": "not-an-id"}, "id", id="bad-id"),
        pytest.param({"kind": "incremental"}, "kind", id="bad-kind"),
        pytest.param({"unexpected": 1}, "unexpected", id="extra-field"),
        pytest.param({"restore_point": "2026-11-26T05:33:02"}, "restore_point", id="naive"),
    ],
)
def test_invalid_manifest_content_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogError) as caught:
        Manifest.from_json(mutated_json(**changes), source=SOURCE)

    assert field in str(caught.value)
    assert SOURCE in str(caught.value)


@pytest.mark.parametrize("field", ["started_at", "finished_at", "restore_point"])
def test_naive_timestamps_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        manifest(**{field: datetime(2026, 11, 26, 5, 33, 2)})


def test_utc_refuses_naive_and_converts_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        utc(datetime(2026, 11, 26, 5, 0))
    assert utc(datetime(2026, 11, 26, 14, 0, tzinfo=SEOUL)) == datetime(
        2026, 11, 26, 5, 0, tzinfo=UTC
    )


def test_object_by_role() -> None:
    m = manifest()

    assert m.object("data").sha256 == "a" * 64
    assert m.object("pages").sha256 == "b" * 64


def test_missing_object_role_is_a_catalog_error_naming_backup_and_role() -> None:
    m = manifest()

    with pytest.raises(CatalogError) as caught:
        m.object("wal")

    assert m.id in str(caught.value)
    assert "wal" in str(caught.value)


@pytest.mark.parametrize("kind", list(BackupKind))
def test_new_backup_id_has_the_manifest_format_and_utc_time(kind: BackupKind) -> None:
    started = datetime(2026, 11, 26, 14, 33, 1, tzinfo=SEOUL)

    backup_id = new_backup_id(kind, started)

    assert ID_PATTERN.match(backup_id)
    assert backup_id.startswith(f"20261126T053301Z-{kind.value}-")
    assert manifest(id=backup_id, kind=kind).id == backup_id


def test_new_backup_ids_are_unique_and_sort_by_time() -> None:
    started = datetime(2026, 11, 26, 5, 33, 1, tzinfo=UTC)

    same_second = {new_backup_id(BackupKind.LOG, started) for _ in range(20)}
    later = new_backup_id(BackupKind.LOG, started + timedelta(seconds=1))

    assert len(same_second) == 20
    assert all(earlier < later for earlier in same_second)


def test_new_backup_id_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        new_backup_id(BackupKind.FULL, datetime(2026, 11, 26, 5, 33, 1))
