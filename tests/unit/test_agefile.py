"""The streaming age reader: what pyrage and the age command write, it reads back exactly;
every kind of damage or tampering is an IntegrityError naming what did not hold."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable

import pyrage
import pytest
from pyrage import x25519

from backupflow.agefile import AgeDecryptor, identity_secret
from backupflow.errors import IntegrityError
from tests.conftest import need
from tests.support import agecraft

IDENTITY = x25519.Identity.generate()
SECRET = identity_secret(str(IDENTITY))
SEALED_CHUNK = 64 * 1024 + 16


def _decrypt(stored: bytes, piece: int = 100_003, secrets: list[bytes] | None = None) -> bytes:
    decryptor = AgeDecryptor(secrets or [SECRET])
    out = [decryptor.update(stored[i : i + piece]) for i in range(0, len(stored), piece)]
    return b"".join(out) + decryptor.finish()


@pytest.mark.parametrize(
    "size", [0, 1, 65_535, 65_536, 65_537, 2 * 65_536, 3 * 65_536 + 5, 1_000_000]
)
@pytest.mark.parametrize("piece", [1, 4_096, SEALED_CHUNK, 1 << 20])
def test_what_pyrage_encrypts_reads_back_exactly(size: int, piece: int) -> None:
    if piece == 1 and size > 70_000:
        piece = 997  # byte-at-a-time over a megabyte is slow, not more telling
    data = os.urandom(size)
    stored = pyrage.encrypt(data, [IDENTITY.to_public()])
    assert _decrypt(stored, piece) == data


def test_any_one_of_several_recipients_reads_it() -> None:
    other = x25519.Identity.generate()
    data = os.urandom(200_000)
    stored = pyrage.encrypt(data, [other.to_public(), IDENTITY.to_public()])
    assert _decrypt(stored) == data
    stranger = identity_secret(str(x25519.Identity.generate()))
    assert _decrypt(stored, secrets=[stranger, SECRET]) == data


def test_what_the_age_command_encrypts_reads_back_exactly() -> None:
    need(shutil.which("age") is not None, "Debian's age command (make bootstrap installs it)")
    data = os.urandom(300_000)
    stored = subprocess.run(
        ["age", "-r", str(IDENTITY.to_public())], input=data, capture_output=True, check=True
    ).stdout
    assert _decrypt(stored) == data


def _stored(size: int = 3 * 65_536 + 100) -> bytes:
    return pyrage.encrypt(os.urandom(size), [IDENTITY.to_public()])


def _payload_start(stored: bytes) -> int:
    return stored.index(b"\n", stored.index(b"\n---") + 1) + 1 + 16


def _flip(where: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def change(stored: bytes) -> bytes:
        damaged = bytearray(stored)
        damaged[where(stored)] ^= 0x01
        return bytes(damaged)

    return change


def _swap_chunks(stored: bytes) -> bytes:
    start = _payload_start(stored)
    first = stored[start : start + SEALED_CHUNK]
    second = stored[start + SEALED_CHUNK : start + 2 * SEALED_CHUNK]
    return stored[:start] + second + first + stored[start + 2 * SEALED_CHUNK :]


def _rewrap(stored: bytes) -> bytes:
    """One base64 character of the wrapped file key changed to another (still base64)."""
    at = stored.index(b"\n", stored.index(b"-> X25519")) + 3
    other = b"B" if stored[at : at + 1] == b"A" else b"A"
    return stored[:at] + other + stored[at + 1 :]


def _many_stanzas(stored: bytes) -> bytes:
    lines = stored.split(b"\n", 1)
    return lines[0] + b"\n" + b"-> grease\n\n" * 300 + lines[1]


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "cut inside the header": (lambda s: s[:40], "ends inside its header"),
    "cut after the header": (lambda s: s[: _payload_start(s)], "ends before its last chunk"),
    "cut at a chunk boundary": (
        lambda s: s[: _payload_start(s) + 2 * SEALED_CHUNK],
        "last chunk does not authenticate",
    ),
    "cut inside the last chunk": (lambda s: s[:-1], "last chunk does not authenticate"),
    "bytes appended": (lambda s: s + b"\0" * 20, "last chunk does not authenticate"),
    "a full chunk appended": (
        lambda s: s + s[_payload_start(s) : _payload_start(s) + SEALED_CHUNK],
        "does not authenticate",
    ),
    "chunks swapped": (_swap_chunks, "chunk 0 does not authenticate"),
    "a payload byte flipped": (_flip(lambda s: _payload_start(s) + 70_000), "chunk 1"),
    "the payload nonce changed": (_flip(lambda s: _payload_start(s) - 3), "chunk 0"),
    "the header MAC changed": (_flip(lambda s: s.index(b"\n---") + 10), "header MAC"),
    "the wrapped key changed": (_rewrap, "none of the identities"),
    "not an age file": (lambda s: b"age-encryption.org/v2" + s[21:], "not an age v1 file"),
    "a header without end": (lambda s: s[:22] + b"A" * 70_000, "header is too long"),
    "too many stanzas": (_many_stanzas, "too many stanzas"),
    "a stanza line without arrow": (
        lambda s: s.replace(b"-> X25519", b"X25519", 1),
        "malformed stanza",
    ),
    "non-canonical base64 in the MAC": (
        lambda s: s.replace(b"\n--- ", b"\n--- ====", 1),
        "base64",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_and_tampering_are_integrity_errors(case: str) -> None:
    change, reason = DAMAGE[case]
    with pytest.raises(IntegrityError, match="cannot be decrypted") as caught:
        _decrypt(change(_stored()))
    assert reason in str(caught.value)


def test_an_identity_only_opens_what_was_made_for_it() -> None:
    stranger = identity_secret(str(x25519.Identity.generate()))
    with pytest.raises(IntegrityError, match="none of the identities held opens it"):
        _decrypt(_stored(), secrets=[stranger])


def test_identity_text_is_checked() -> None:
    text = str(IDENTITY)
    assert len(identity_secret(text.lower())) == 32
    bad_checksum = text[:-1] + ("Q" if text[-1] != "Q" else "P")
    mixed_case = text[:20] + text[20:].lower()
    not_ascii = text.replace("K", "\u212a")  # the Kelvin sign, which lower() makes a k
    for bad in (
        bad_checksum,
        "AGE-SECRET-KEY-1",
        "age1" + text[16:],
        text + "Q",
        mixed_case,
        not_ascii,
    ):
        with pytest.raises(ValueError):
            identity_secret(bad)
    # the text never leaks into the error
    with pytest.raises(ValueError) as caught:
        identity_secret(bad_checksum)
    assert text[16:] not in str(caught.value)


def test_the_header_mac_covers_the_stanzas() -> None:
    stored = _stored()
    header_end = stored.index(b"\n---")
    share_line = stored.index(b"-> X25519 ") + len(b"-> X25519 ")
    share = stored[share_line : stored.index(b"\n", share_line)]
    other = base64.b64encode(os.urandom(32)).rstrip(b"=")
    assert len(other) == len(share)
    forged = stored[:share_line] + other + stored[share_line + len(share) :]
    assert forged.index(b"\n---") == header_end
    with pytest.raises(IntegrityError, match="none of the identities"):
        _decrypt(forged)


# -- hand-made files with valid MACs around hostile contents ---------------------------------

FILE_KEY = os.urandom(16)
GOOD = agecraft.x25519_stanza(agecraft.public_of(SECRET), FILE_KEY)
LOW_ORDER = base64.b64decode("X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEdc=")
FULL = os.urandom(65_536)

HANDMADE: dict[str, tuple[list[agecraft.Stanza], list[tuple[bytes, bool]], str | None]] = {
    "as an honest writer makes it": ([GOOD], [(FULL, False), (b"end", True)], None),
    "a low-order share before a good stanza": (
        [([b"X25519", agecraft.b64(LOW_ORDER)], os.urandom(32)), GOOD],
        [(b"x", True)],
        "low-order share",
    ),
    "an all-zero share before a good stanza": (
        [([b"X25519", agecraft.b64(bytes(32))], os.urandom(32)), GOOD],
        [(b"x", True)],
        "low-order share",
    ),
    "a passphrase stanza beside a key": (
        [GOOD, ([b"scrypt", agecraft.b64(os.urandom(16)), b"10"], os.urandom(32))],
        [(b"x", True)],
        "not alone",
    ),
    "an unknown stanza is skipped": (
        [([b"grease", b"x"], os.urandom(48)), GOOD],
        [(b"ok", True)],
        None,
    ),
    "an empty last chunk after a full one": (
        [GOOD],
        [(FULL, False), (b"", True)],
        "ends before its last chunk",
    ),
    "a chunk flagged last before another": (
        [GOOD],
        [(FULL, True), (b"more", True)],
        "chunk 0 does not authenticate",
    ),
    "a short chunk not flagged last": ([GOOD], [(b"short", False)], "last chunk"),
}


@pytest.mark.parametrize("case", list(HANDMADE))
def test_handmade_files(case: str) -> None:
    stanzas, chunks, refused = HANDMADE[case]
    stored = agecraft.header(stanzas, FILE_KEY) + agecraft.payload(FILE_KEY, chunks)
    if refused is None:
        assert _decrypt(stored, piece=4096) == b"".join(plain for plain, _ in chunks)
    else:
        with pytest.raises(IntegrityError, match=refused):
            _decrypt(stored, piece=4096)


def test_a_failed_stream_stays_failed() -> None:
    stored = bytearray(_stored(200_000))
    stored[-70_000] ^= 1
    decryptor = AgeDecryptor([SECRET])
    with pytest.raises(IntegrityError) as first:
        decryptor.update(bytes(stored))
    kept = first.value  # a caller that keeps the error (as the read-ahead queue does)
    with pytest.raises(IntegrityError) as again:
        decryptor.finish()
    assert again.value is kept


def test_finish_twice_is_a_usage_error() -> None:
    decryptor = AgeDecryptor([SECRET])
    stored = _stored(10)
    decryptor.update(stored)
    decryptor.finish()
    with pytest.raises(ValueError, match="already finished"):
        decryptor.finish()


def test_a_header_fed_byte_by_byte_reads_the_same() -> None:
    stored = _stored(1000)
    assert _decrypt(stored, piece=1) == _decrypt(stored)
