"""Content ids in member lists and manifest records, and condemned marks read back: what
is read from a tier is checked (issue 23)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backupflow.codecs import ZstdCodec
from backupflow.errors import IntegrityError
from backupflow.filesets import Member, decode_members, encode_members
from backupflow.filesets.contents import MARK_FORMAT, MAX_MARK_BYTES, _condemned_at
from backupflow.models import StoredObject
from backupflow.pipeline import CONTENT_ID_DIGEST, open_verified, store_stream
from backupflow.storage import MemoryStorage
from tests.support.keys import KEYRING

SHA = "ab" * 32
ID = "cd" * 32


def test_a_member_list_keeps_each_files_content_id() -> None:
    members = [Member("a", "file", 0o644, 1.0, 3, SHA, content=ID), Member("d", "dir", 0o755, 1.0)]
    assert decode_members(encode_members(members)) == members
    old = b'{"path": "a", "type": "file", "mode": 420, "mtime": 1.0, "size": 3, "sha256": "%s"}'
    assert decode_members([old % SHA.encode()])[0].content is None  # written before ids


@pytest.mark.parametrize(
    "line",
    [
        {"path": "a", "type": "file", "mode": 420, "mtime": 1, "sha256": SHA, "content": "x"},
        {"path": "a", "type": "file", "mode": 420, "mtime": 1, "sha256": SHA, "content": 7},
        {"path": "d", "type": "dir", "mode": 493, "mtime": 1, "content": ID},
    ],
)
def test_a_content_id_that_is_not_one_damages_the_member_list(line: dict[str, object]) -> None:
    with pytest.raises(IntegrityError, match="invalid content id"):
        decode_members([json.dumps(line).encode()])


def test_a_record_without_a_keyed_digest_is_written_as_before() -> None:
    record = StoredObject(
        role="data", key="k", codec="zstd", size=1, sha256=SHA, raw_size=1, raw_sha256=SHA
    )
    assert "raw_digest" not in record.model_dump(mode="json")
    keyed = record.model_copy(update={"raw_digest": CONTENT_ID_DIGEST})
    assert keyed.model_dump(mode="json")["raw_digest"] == CONTENT_ID_DIGEST
    assert StoredObject.model_validate(keyed.model_dump(mode="json")) == keyed


def _keyed(storage: MemoryStorage, data: bytes, raw_sha256: str) -> StoredObject:
    record = store_stream(
        storage, "c", io.BytesIO(data), ZstdCodec(threads=0), role="content:x", keyring=KEYRING
    )
    return record.model_copy(update={"raw_sha256": raw_sha256, "raw_digest": CONTENT_ID_DIGEST})


def test_a_keyed_record_is_read_without_the_signing_key_and_checked_with_it() -> None:
    storage = MemoryStorage()
    data = b"a file anyone may know"
    record = _keyed(storage, data, KEYRING.content_id(hashlib.sha256(data).hexdigest()))
    assert record.key.endswith(".age")
    for keyring in (KEYRING, replace(KEYRING, signer=None)):
        with open_verified(storage, record, keyring=keyring) as stream:
            assert stream.read() == data
    wrong = record.model_copy(update={"raw_sha256": ID})
    with (
        pytest.raises(IntegrityError, match="does not match"),
        open_verified(storage, wrong, keyring=KEYRING) as stream,
    ):
        stream.read()


KEY = f"uploads/uploads/content/{ID[:2]}/{ID}.zst.age"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _mark(body: bytes) -> tuple[MemoryStorage, datetime | None]:
    storage = MemoryStorage()
    info = storage.put("mark", [body])
    return storage, _condemned_at(storage, info, KEY, max(NOW, info.modified))


def _body(**fields: object) -> bytes:
    base: dict[str, object] = {"format": MARK_FORMAT, "key": KEY}
    return json.dumps({**base, **fields}).encode()


def test_a_mark_a_prune_wrote_gives_its_time() -> None:
    storage = MemoryStorage()
    info = storage.put("mark", [b"{}"])
    when = info.modified
    good = storage.put("mark", [_body(condemned_at=when.isoformat())])
    assert _condemned_at(storage, good, KEY, when) == when


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        _body(condemned_at="yesterday"),
        _body(condemned_at="2026-11-26T12:00:00"),  # no timezone
        _body(condemned_at="2001-01-01T00:00:00Z"),  # long before it was written
        _body(condemned_at="2999-01-01T00:00:00Z"),  # in the future
        _body(condemned_at=NOW.isoformat(), key="uploads/uploads/content/00/other"),
        _body(condemned_at=NOW.isoformat(), format="something else"),
        _body(condemned_at=NOW.isoformat(), pad="x" * MAX_MARK_BYTES),
    ],
)
def test_a_mark_nobody_can_rely_on_is_not_taken(body: bytes) -> None:
    _storage, when = _mark(body)
    assert when is None


def test_a_mark_s_time_may_not_run_ahead_of_now() -> None:
    storage = MemoryStorage()
    info = storage.put("mark", [_body(condemned_at=(NOW + timedelta(hours=1)).isoformat())])
    assert _condemned_at(storage, info, KEY, NOW) is None
