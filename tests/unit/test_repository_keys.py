"""Repository keys, signed envelopes and streamed age encryption, as a user would notice them."""

from __future__ import annotations

import io
import os

import pytest

from backupflow.config import KeySettings
from backupflow.crypto import decrypting, encrypting
from backupflow.envelope import open_envelope, seal
from backupflow.errors import ConfigError, ForeignManifestError, IntegrityError, MissingKeyError
from backupflow.keys import Keyring, generate_keys, load_keyring, parse_identities

DATA = os.urandom(1 << 16) * 40  # 2.5 MiB, several age chunks


def _chunks(data: bytes, size: int = 1 << 20) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_encrypted_bytes_round_trip_and_hide_the_plaintext() -> None:
    ring = generate_keys().keyring()
    stored = b"".join(encrypting(_chunks(DATA), ring.age_recipients()))
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert DATA[:4096] not in stored
    with decrypting(io.BytesIO(stored), ring.age_identities(ring.recipient_ids)) as plain:
        assert plain.read() == DATA


@pytest.mark.parametrize("where", [200, 70_000, -20])
def test_a_tampered_byte_is_an_integrity_error_not_wrong_data(where: int) -> None:
    ring = generate_keys().keyring()
    stored = bytearray(b"".join(encrypting(_chunks(DATA), ring.age_recipients())))
    stored[where] ^= 0x01
    with pytest.raises(IntegrityError, match="cannot be decrypted"):  # noqa: SIM117
        with decrypting(io.BytesIO(bytes(stored)), ring.age_identities(ring.recipient_ids)) as p:
            p.read()


def test_the_wrong_identity_names_the_key_id_that_is_needed() -> None:
    writer = generate_keys().keyring()
    reader = generate_keys().keyring()
    with pytest.raises(MissingKeyError) as caught:
        reader.age_identities(writer.recipient_ids)
    assert writer.recipient_ids[0] in str(caught.value)
    assert "AGE-SECRET" not in str(caught.value)


def test_a_consumer_that_stops_early_leaves_no_thread_behind() -> None:
    import threading

    ring = generate_keys().keyring()
    before = threading.active_count()
    stream = encrypting(_chunks(DATA), ring.age_recipients())
    next(stream)
    stream.close()
    stored = b"".join(encrypting(_chunks(DATA), ring.age_recipients()))
    with decrypting(io.BytesIO(stored), ring.age_identities(ring.recipient_ids)) as plain:
        plain.read(10)
    assert threading.active_count() == before


def test_a_signed_envelope_opens_only_with_a_trusted_key() -> None:
    keys = generate_keys()
    ring = keys.keyring()
    sealed = seal(b'{"id": "x"}', ring)
    assert open_envelope(sealed, ring, source="primary/m.json") == b'{"id": "x"}'
    stranger = generate_keys().keyring()
    with pytest.raises(ForeignManifestError, match="signed by no trusted key"):
        open_envelope(sealed, stranger, source="secondary/m.json")
    forged = sealed.replace(b'"payload": "', b'"payload": "eyJpZCI6ICJ5In0=', 1)
    with pytest.raises(ForeignManifestError, match=r"foreign manifest secondary/m\.json"):
        open_envelope(forged, ring, source="secondary/m.json")


@pytest.mark.parametrize(
    "raw",
    [b"", b"{}", b"[]", b'{"payloadType": 1}', b"\xff\xfe", b'{"a":' * 10 + b"1"],
)
def test_malformed_envelopes_are_foreign(raw: bytes) -> None:
    with pytest.raises(ForeignManifestError):
        open_envelope(raw, generate_keys().keyring(), source="dr/x")


def test_settings_make_a_keyring_and_bad_keys_are_one_sentence() -> None:
    keys = generate_keys()
    ring = load_keyring(
        KeySettings(
            recipients=[keys.recipient],
            identities=keys.identity,  # type: ignore[arg-type]
            signing_key=keys.signing_key,  # type: ignore[arg-type]
            verify_keys=[keys.verify_key],
        )
    )
    assert ring.signer is not None and ring.verifier(ring.signer.key_id) is not None
    assert ring.identity_ids() == ring.recipient_ids
    for bad in (
        KeySettings(recipients=["age1nope"]),
        KeySettings(identities="AGE-SECRET-KEY-1NOTAKEY"),  # type: ignore[arg-type]
        KeySettings(signing_key="BACKUPFLOW-SIGNING-KEY-1abc"),  # type: ignore[arg-type]
        KeySettings(verify_keys=["bfverify1zz"]),
    ):
        with pytest.raises(ConfigError) as caught:
            load_keyring(bad)
        assert "NOTAKEY" not in str(caught.value) and "abc" not in str(caught.value)


def test_no_signer_means_no_backup_can_be_recorded() -> None:
    with pytest.raises(MissingKeyError, match="no signing key"):
        Keyring().require_signer()


def test_identities_accept_an_age_identity_file() -> None:
    one, two = generate_keys(), generate_keys()
    text = f"# created: today\n# public key: {one.recipient}\n{one.identity}\n\n{two.identity}\n"
    assert len(parse_identities(text)) == 2
