"""Repository keys: who can encrypt, decrypt, sign and check backups.

Two kinds of key, each a standard, audited primitive:

* **Encryption: age (X25519).**  A *recipient* (``age1...``, public) encrypts; the matching
  *identity* (``AGE-SECRET-KEY-1...``, secret) decrypts.  Backup workers need only the
  recipients; restores need an identity.  Every object is encrypted to every configured
  recipient (the current key, plus an escrow key if one is configured), so any one identity
  decrypts it.
* **Authentication: Ed25519 signatures** over each manifest (a DSSE envelope, see
  :mod:`backupflow.envelope`).  The *signing key* (secret) lives where backups are written;
  the *verify keys* (public) of every signing key ever used live everywhere.  age alone does
  not prove who wrote a file (anyone holding a recipient can encrypt); the signature does.

A key id is the first 16 hex digits of the SHA-256 of the public key's text, so it can be
printed, logged and stored in manifests without revealing anything.

Text forms (what ``backupflow key init`` prints and what the settings hold):

* signing key: ``BACKUPFLOW-SIGNING-KEY-1<64 hex digits>`` (the Ed25519 seed, secret);
* verify key:  ``bfverify1<64 hex digits>`` (the Ed25519 public key), optionally followed by
  its *scope*: ``kinds=manifest`` or ``kinds=wal`` (which signed records it may vouch for)
  and ``series=database/main,config/*`` (which series).  Without a scope a verify key is
  trusted for everything, as before scopes existed.

Two signing keys, two holders: the *manifest key* (backup workers) signs backup manifests;
the *WAL key* (PostgreSQL's OS user, through ``archive_command``) signs only WAL records, and
its verify key is scoped ``kinds=wal series=database/<name>``, so whoever reads it (a database
superuser can) forges nothing but that cluster's WAL records.

Size: every key type, its text form and the keyring that holds them are one vocabulary;
split, each half would import the other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr
from pyrage import x25519

from backupflow.config import KeySettings
from backupflow.errors import ConfigError, MissingKeyError
from backupflow.prefect_adapter import load_secret

__all__ = [
    "KINDS",
    "GeneratedKeys",
    "Keyring",
    "Scope",
    "Signer",
    "Verifier",
    "generate_keys",
    "key_id",
    "load_keyring",
    "parse_identities",
    "parse_recipients",
    "parse_signing_key",
    "parse_verify_keys",
]

_SIGNING_PREFIX = "BACKUPFLOW-SIGNING-KEY-1"
_VERIFY_PREFIX = "bfverify1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_KEYS = 100
#: The kinds of signed record a verify key may vouch for.
KINDS = ("manifest", "wal")
_SERIES = re.compile(r"[a-z]{1,32}/(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_MAX_SCOPE_SERIES = 1000


def key_id(public_text: str) -> str:
    """A short, public name for a key: 16 hex digits of the SHA-256 of its public text."""
    return hashlib.sha256(public_text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """Signs manifests (the secret half; kept where backups are written)."""

    private: Ed25519PrivateKey
    public_text: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_text)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte secret for ``purpose``, derived from this key (HKDF-SHA256): only the
        holders of the signing key can compute it."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return HKDF(hashes.SHA256(), 32, salt=None, info=purpose).derive(seed)


@dataclass(frozen=True)
class Scope:
    """What a verify key is trusted for: kinds of signed record (None: every kind) and
    series (``category/name`` or ``category/*``; None: every series)."""

    kinds: frozenset[str] | None = None
    series: tuple[str, ...] | None = None

    def allows(self, kind: str, series: str | None) -> bool:
        """Whether a record of ``kind`` for ``series`` (None: a repository-wide record,
        which only a key unrestricted in series may sign) may be trusted on this key."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.series is None:
            return True
        if series is None:
            return False
        category = series.split("/", 1)[0]
        return series in self.series or f"{category}/*" in self.series

    @property
    def text(self) -> str:
        """The scope as written after a verify key ("" for everything)."""
        parts = []
        if self.kinds is not None:
            parts.append("kinds=" + ",".join(sorted(self.kinds)))
        if self.series is not None:
            parts.append("series=" + ",".join(self.series))
        return " ".join(parts)

    def describe(self) -> str:
        kinds = "every kind" if self.kinds is None else "/".join(sorted(self.kinds)) + " records"
        series = "every series" if self.series is None else ", ".join(self.series)
        return f"{kinds} of {series}"


def parse_scope(words: Sequence[str], where: str) -> Scope:
    """``kinds=...`` and ``series=...`` words after a verify key."""
    kinds: frozenset[str] | None = None
    series: tuple[str, ...] | None = None
    for word in words:
        name, _, value = word.partition("=")
        items = [v for v in value.split(",") if v]
        if name == "kinds" and kinds is None and items and set(items) <= set(KINDS):
            kinds = frozenset(items)
        elif (
            name == "series"
            and series is None
            and 0 < len(items) <= _MAX_SCOPE_SERIES
            and all(_SERIES.fullmatch(v) for v in items)
        ):
            series = tuple(dict.fromkeys(items))
        else:
            raise ConfigError(
                f"{where}: a verify key's scope is kinds=manifest|wal and series=category/name "
                "(or category/*), each once, comma-separated."
            )
    return Scope(kinds, series)


@dataclass(frozen=True)
class Verifier:
    """Checks signatures (public; kept everywhere), for the records its scope allows."""

    public: Ed25519PublicKey
    public_text: str
    scope: Scope = Scope()

    @property
    def key_id(self) -> str:
        return key_id(self.public_text)

    @property
    def text(self) -> str:
        """The verify key as configured: its public text and its scope."""
        return f"{self.public_text} {self.scope.text}".strip()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.public.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _verify_text(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return _VERIFY_PREFIX + public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def parse_signing_key(text: str, where: str = "the signing key") -> Signer:
    """A signing key from its text form; one sentence (never the key) when it is malformed."""
    value = text.strip()
    if not value.startswith(_SIGNING_PREFIX) or not _HEX64.fullmatch(value[len(_SIGNING_PREFIX) :]):
        raise ConfigError(
            f"{where} is not a backupflow signing key (BACKUPFLOW-SIGNING-KEY-1 followed by 64 "
            "hex digits); create one with `backupflow key init`."
        )
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(value[len(_SIGNING_PREFIX) :]))
    return Signer(private, _verify_text(private.public_key()))


def parse_verify_keys(texts: Iterable[str], where: str = "the verify keys") -> list[Verifier]:
    """Verify keys from their text forms (``bfverify1...`` and an optional scope)."""
    verifiers = []
    for raw in texts:
        if len(raw) > 200_000:
            raise ConfigError(f"{where}: a verify key's entry is too long.")
        words = raw.split()
        if not words:
            continue
        value, scope = words[0], parse_scope(words[1:], where)
        hexpart = value[len(_VERIFY_PREFIX) :]
        if not value.startswith(_VERIFY_PREFIX) or not _HEX64.fullmatch(hexpart):
            raise ConfigError(
                f"{where} must be bfverify1 followed by 64 hex digits (as `backupflow key show` "
                "prints them)."
            )
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(hexpart))
        verifiers.append(Verifier(public, value, scope))
    if len(verifiers) > _MAX_KEYS:
        raise ConfigError(f"{where} list more than {_MAX_KEYS} keys.")
    return verifiers


def parse_recipients(texts: Iterable[str], where: str = "the age recipients") -> list[str]:
    """age recipients (``age1...``), checked; returned as text (key ids derive from it)."""
    found = []
    for raw in texts:
        value = raw.strip()
        if not value:
            continue
        try:
            x25519.Recipient.from_str(value)
        except pyrage.RecipientError:
            raise ConfigError(
                f"{where} must be age public keys (age1...), as `backupflow key show` prints them."
            ) from None
        found.append(value)
    if len(found) > _MAX_KEYS:
        raise ConfigError(f"{where} list more than {_MAX_KEYS} keys.")
    return found


def parse_identities(text: str, where: str = "the age identities") -> list[x25519.Identity]:
    """age identities (``AGE-SECRET-KEY-1...``), one a line as in an age identity file
    (``#`` comments and blank lines allowed) or separated by spaces or commas.  The key itself
    is never echoed."""
    identities = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for value in line.replace(",", " ").split():
            try:
                identities.append(x25519.Identity.from_str(value))
            except pyrage.IdentityError:
                raise ConfigError(
                    f"line {number} of {where} is not an age identity (AGE-SECRET-KEY-1...)."
                ) from None
    if len(identities) > _MAX_KEYS:
        raise ConfigError(f"{where} list more than {_MAX_KEYS} keys.")
    return identities


@dataclass(frozen=True)
class Keyring:
    """The keys one process holds.  Backup workers hold the manifest signer and the
    recipients; PostgreSQL's OS user holds the WAL signer; restore hosts hold identities;
    everyone holds the verify keys.  Missing parts are None/empty, and the operation that
    needs them fails with one sentence naming the key it needs.

    A signer held here is trusted for what it signs (``kinds``) unless the verify keys
    configure its scope."""

    recipients: tuple[str, ...] = field(default=(), repr=False)
    identities: tuple[x25519.Identity, ...] = field(default=(), repr=False)
    signer: Signer | None = field(default=None, repr=False)
    verifiers: tuple[Verifier, ...] = ()
    encrypt: bool = True
    wal_signer: Signer | None = field(default=None, repr=False)
    _by_id: dict[str, Verifier] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        by_id = {v.key_id: v for v in self.verifiers}
        if self.signer is not None:
            kinds = {"manifest"} if self.wal_signer is not None else set(KINDS)
            by_id.setdefault(
                self.signer.key_id,
                Verifier(
                    self.signer.private.public_key(),
                    self.signer.public_text,
                    Scope(frozenset(kinds)),
                ),
            )
        if self.wal_signer is not None:
            by_id.setdefault(
                self.wal_signer.key_id,
                Verifier(
                    self.wal_signer.private.public_key(),
                    self.wal_signer.public_text,
                    Scope(frozenset({"wal"})),
                ),
            )
        object.__setattr__(self, "_by_id", by_id)

    # -- authentication ---------------------------------------------------------------

    def require_signer(self, kind: str = "manifest") -> Signer:
        """The key that signs records of ``kind``: the manifest key, or for WAL records the
        WAL key (the manifest key where no WAL key is configured, as before there were two)."""
        if kind == "wal":
            signer = self.wal_signer or self.signer
            if signer is None:
                raise MissingKeyError(
                    "no WAL signing key is configured, so no WAL file can be archived; set "
                    "BACKUPFLOW_CRYPTO__WAL_SIGNING_KEY in the env-file PostgreSQL's "
                    "archive_command reads; see `backupflow key init`."
                )
            return signer
        if self.signer is None:
            raise MissingKeyError(
                "no signing key is configured, so no backup can be recorded; set "
                "BACKUPFLOW_CRYPTO__SIGNING_KEY (or __SIGNING_KEY_BLOCK); see "
                "`backupflow key init`."
            )
        return self.signer

    def verifier(self, key_id_: str) -> Verifier | None:
        """The verify key with this id, if this process trusts it."""
        return self._by_id.get(key_id_)

    @property
    def trusted(self) -> tuple[Verifier, ...]:
        """Every verify key trusted here (configured, and the signers' own)."""
        return tuple(self._by_id.values())

    @property
    def verify_key_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def content_id(self, sha256_hex: str) -> str:
        """The keyed id of a file content whose plaintext SHA-256 is ``sha256_hex``:
        HMAC-SHA256 under a key derived from the signing key, so a bucket reader who knows a
        file cannot tell whether (or where) it is stored."""
        import hmac

        key = self.require_signer("manifest").derive(b"backupflow content ids v1")
        return hmac.new(key, bytes.fromhex(sha256_hex), "sha256").hexdigest()

    # -- encryption -------------------------------------------------------------------

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(key_id(r) for r in self.recipients)

    def age_recipients(self) -> list[x25519.Recipient]:
        if not self.recipients:
            raise MissingKeyError(
                "encryption is on but no age recipient is configured; set "
                "BACKUPFLOW_CRYPTO__RECIPIENTS (see `backupflow key init`), or turn encryption off "
                "with BACKUPFLOW_CRYPTO__ENCRYPT=false."
            )
        return [x25519.Recipient.from_str(r) for r in self.recipients]

    def identity_ids(self) -> tuple[str, ...]:
        return tuple(key_id(str(i.to_public())) for i in self.identities)

    def age_identities(self, needed: Sequence[str]) -> list[x25519.Identity]:
        """The identities to decrypt an object encrypted to the recipients ``needed`` (key
        ids); one sentence naming them when none of ours matches."""
        held = {key_id(str(i.to_public())): i for i in self.identities}
        usable = [held[k] for k in needed if k in held]
        if not usable:
            raise MissingKeyError(
                "this backup is encrypted to the age key(s) "
                f"{', '.join(needed) or '(none recorded)'}, and none of them is configured "
                "here; set BACKUPFLOW_CRYPTO__IDENTITIES (or __IDENTITIES_BLOCK) to the identity "
                "kept in escrow for that key id."
            )
        return usable


@dataclass(frozen=True)
class GeneratedKeys:
    """A fresh set of keys (``backupflow key init`` / ``rotate``, the demo, tests)."""

    # The secrets never show in a repr (a log line, a traceback, a debugger).
    identity: str = field(repr=False)  # AGE-SECRET-KEY-1... (secret)
    recipient: str  # age1... (public)
    signing_key: str = field(repr=False)  # BACKUPFLOW-SIGNING-KEY-1... (secret)
    verify_key: str  # bfverify1... (public)
    #: When they were made: the escrow copy's "# created:" line, the same wherever it is
    #: written (a file, the terminal).
    created: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)
    #: The WAL key (PostgreSQL's OS user signs WAL records with it), if one was made.
    wal_signing_key: str = field(default="", repr=False)
    wal_verify_key: str = ""

    def keyring(self) -> Keyring:
        return Keyring(
            recipients=(self.recipient,),
            identities=tuple(parse_identities(self.identity)),
            signer=parse_signing_key(self.signing_key),
            verifiers=tuple(parse_verify_keys(self.verify_entries())),
            wal_signer=(parse_signing_key(self.wal_signing_key) if self.wal_signing_key else None),
        )

    def verify_entries(
        self, wal_series: Sequence[str] = (), *, manifest_only: bool = False
    ) -> list[str]:
        """The verify keys as configured: the manifest key trusted for manifests, the WAL
        key for WAL records (of ``wal_series`` when given); without a WAL key, the one key
        for manifests only (``manifest_only``: an engine without WAL records) or for
        everything (as before keys had scopes)."""
        if not self.wal_verify_key:
            return [f"{self.verify_key} kinds=manifest" if manifest_only else self.verify_key]
        series = f" series={','.join(wal_series)}" if wal_series else ""
        return [f"{self.verify_key} kinds=manifest", f"{self.wal_verify_key} kinds=wal{series}"]


def _new_signing_key() -> tuple[str, str]:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    return _SIGNING_PREFIX + seed, _verify_text(private.public_key())


def generate_keys(*, wal: bool = False) -> GeneratedKeys:
    """New age and Ed25519 keys (and a separate WAL key with ``wal``)."""
    identity = x25519.Identity.generate()
    signing, verify = _new_signing_key()
    wal_signing, wal_verify = _new_signing_key() if wal else ("", "")
    return GeneratedKeys(
        identity=str(identity),
        recipient=str(identity.to_public()),
        signing_key=signing,
        verify_key=verify,
        wal_signing_key=wal_signing,
        wal_verify_key=wal_verify,
    )


def load_keyring(settings: KeySettings) -> Keyring:
    """The keyring these settings describe; secrets come from the settings (environment or
    env-file) or from the named Prefect Secret blocks, never from a flow parameter."""
    signing_text = _secret(settings.signing_key, settings.signing_key_block, "SIGNING_KEY_BLOCK")
    identities_text = _secret(settings.identities, settings.identities_block, "IDENTITIES_BLOCK")
    wal_text = settings.wal_signing_key.get_secret_value()
    return Keyring(
        recipients=tuple(parse_recipients(settings.recipients, "BACKUPFLOW_CRYPTO__RECIPIENTS")),
        identities=tuple(parse_identities(identities_text, "BACKUPFLOW_CRYPTO__IDENTITIES")),
        signer=(
            parse_signing_key(signing_text, "BACKUPFLOW_CRYPTO__SIGNING_KEY")
            if signing_text.strip()
            else None
        ),
        verifiers=tuple(parse_verify_keys(settings.verify_keys, "BACKUPFLOW_CRYPTO__VERIFY_KEYS")),
        encrypt=settings.encrypt,
        wal_signer=(
            parse_signing_key(wal_text, "BACKUPFLOW_CRYPTO__WAL_SIGNING_KEY")
            if wal_text.strip()
            else None
        ),
    )


def _secret(secret: SecretStr, block: str | None, setting: str) -> str:
    """The key in the settings, else the one in the Secret block the setting names."""
    value = secret.get_secret_value()
    if value.strip() or not block:
        return value
    return load_secret(
        block,
        "BACKUPFLOW_CRYPTO__" + setting,
        create="create it (`make bootstrap` or `backupflow key init --blocks`)",
        error=MissingKeyError,
    )
