"""PostgreSQL's WAL archive in our tiers: what ``backupflow wal-push`` stores and
``backupflow wal-fetch`` serves.

``archive_command = 'backupflow wal-push %p'`` runs in the cluster's data folder for each
finished WAL file.  :func:`push_wal` reads the cluster's system identifier from
``global/pg_control`` (and, for a segment, checks the one in its first page header), streams
the file through the pipeline (zstd, age, SHA-256) into the first enabled tier, verifies it,
and only then writes its signed :class:`WalRecord`::

    database/<db>/wal/<sysid>/<name>.zst.age   the file
    database/<db>/wal/<sysid>/<name>.rec       its record (a signed envelope), written last

A name with a record is archived; the same name pushed again with the same content is a
success (PostgreSQL retries after a crash), with other content a refusal.  Any failure is an
error, so PostgreSQL keeps the file and retries.

``restore_command = 'backupflow wal-fetch --plan <file> %f %p'`` serves one file to a
restoring copy: :func:`fetch_wal` tries the plan's tiers in order (the next one when one
fails), verifies while it streams into a private temporary file beside the destination, and
renames it into place only once every byte matched.  Outcomes: ``fetched``; ``missing`` (not
archived: PostgreSQL probes names, this is normal); ``damaged`` or ``unavailable`` (held
but unreadable, or a tier did not answer), which must abort recovery rather than end it early.

Size: about 550 lines: the record, the push, the fetch and the plan are one protocol between
the server's two commands and the engine, kept in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backupflow.catalog import (
    new_push_id,
    wal_key,
    wal_prefix,
    wal_push_id,
    wal_record_key,
)
from backupflow.codecs import Codec, get_codec
from backupflow.crypto import AGE_FORMAT
from backupflow.envelope import open_envelope, seal
from backupflow.errors import (
    BackupflowError,
    ConfigError,
    ForeignManifestError,
    IntegrityError,
    ObjectNotFoundError,
    ParameterError,
    StorageError,
)
from backupflow.fsutil import create_private_file, fsync_dir
from backupflow.keys import Keyring
from backupflow.models import Category, StoredObject, TierName
from backupflow.names import DATABASE_NAME_PATTERN, check_database_name
from backupflow.pipeline import HashingReader, open_verified, store_stream
from backupflow.storage import Tier, put_bytes

from .walnames import (
    DEFAULT_SEGMENT_BYTES,
    WAL_RECORD_ROLE,
    WAL_ROLE,
    WalName,
    parse_wal_name,
    wal_path,
)

__all__ = [
    "FetchOutcome",
    "FetchPlan",
    "PushResult",
    "WalConflictError",
    "WalRecord",
    "append_report",
    "archived",
    "archived_objects",
    "check_wal_name",
    "fetch_wal",
    "planned_object",
    "push_wal",
    "read_plan",
    "read_record",
    "read_record_as_stored",
    "system_identifier_of",
    "write_plan",
]

#: The smallest segment size initdb allows: the most names are valid segment names there.
_MIN_SEGMENT_BYTES = 1 << 20
_MAX_RECORD = 64 << 10
_MAX_PLAN = 256 << 20
_MAX_PLAN_FILES = 1_000_000
#: History and backup-history files are small text files.
_MAX_TEXT_FILE = 16 << 20
_CHUNK = 1 << 20
_XLOG_PAGE_MAGIC_MIN = 0xD000  # every XLOG_PAGE_MAGIC since 8.x is 0xD0nn
_XLP_LONG_HEADER = 0x0002


class WalConflictError(IntegrityError):
    """The name is already archived with other content: never overwritten."""


class WalRecord(BaseModel):
    """The signed record of one archived WAL file (written after the file is durable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["backupflow-wal-record"] = "backupflow-wal-record"
    version: Literal[1] = 1
    database: str = Field(min_length=1, max_length=128)
    system_identifier: str = Field(pattern=r"^[1-9][0-9]{0,19}$")
    name: str = Field(max_length=40)
    object: StoredObject
    pushed_at: datetime


class FetchPlan(BaseModel):
    """What a restore's ``wal-fetch`` may serve: written by the engine into its private
    scratch, from authenticated manifests only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["backupflow-wal-fetch-plan"] = "backupflow-wal-fetch-plan"
    database: str = Field(pattern=DATABASE_NAME_PATTERN)
    system_identifier: str = Field(pattern=r"^[1-9][0-9]{0,19}$")
    tiers: tuple[TierName, ...] = Field(min_length=1, max_length=3)
    files: dict[str, StoredObject] = Field(default_factory=dict, max_length=_MAX_PLAN_FILES)
    loose: bool = Field(
        default=False, description="Also serve names recorded in the tiers but not in files."
    )
    report: Path | None = Field(default=None, description="One JSON line per request.")

    @field_validator("files")
    @classmethod
    def _names(cls, files: dict[str, StoredObject]) -> dict[str, StoredObject]:
        for name in files:
            check_wal_name(name)
        return files


@dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    #: False when the same content was already archived (an idempotent re-push).
    stored: bool
    raw_size: int


@dataclass(frozen=True)
class FetchOutcome:
    name: str
    outcome: Literal["fetched", "missing", "damaged", "unavailable"]
    tier: str | None = None
    error: str | None = None
    #: Whether an authenticated manifest lists the file (a planned file that is missing
    #: everywhere is a gap, even where PostgreSQL would just end recovery there).
    planned: bool = False


def check_wal_name(name: str) -> WalName:
    """``name`` parsed as a WAL archive file name (any segment size initdb allows);
    :class:`ParameterError` for anything else."""
    try:
        return parse_wal_name(name, _MIN_SEGMENT_BYTES)
    except ValueError as exc:
        raise ParameterError(
            f"{exc}; PostgreSQL passes names like 000000010000000000000001."
        ) from None


def system_identifier_of(data_dir: Path) -> int:
    """The cluster's system identifier: the first 8 bytes of ``global/pg_control``."""
    control = data_dir / "global" / "pg_control"
    try:
        with control.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ConfigError(
            f"{control} cannot be read ({exc.strerror or type(exc).__name__}); run in the "
            "cluster's data folder (PostgreSQL does) or give --data-dir."
        ) from None
    value = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if value == 0:
        raise ConfigError(f"{control} holds no system identifier; is this a data folder?")
    return int(value)


def _keys(database: str, sysid: int, name: str, obj_ext: str) -> tuple[str, str]:
    path = wal_path(sysid, name)
    return (
        wal_key(Category.DATABASE, database, path, obj_ext),
        wal_record_key(Category.DATABASE, database, path),
    )


def _extension(obj: StoredObject) -> str:
    return get_codec(obj.codec).extension + (".age" if obj.encryption else "")


def _check_wal_signer(keyring: Keyring, database: str) -> None:
    """The key this process signs WAL records with must be one it trusts for this cluster's
    WAL records; otherwise every record it wrote would be refused at restore time."""
    signer = keyring.require_signer("wal")
    trusted = keyring.verifier(signer.key_id)
    if trusted is None or not trusted.scope.allows("wal", f"{Category.DATABASE.value}/{database}"):
        raise ConfigError(
            f"the key {signer.key_id} that would sign this WAL file is not trusted for WAL "
            f"records of database/{database} (BACKUPFLOW_CRYPTO__VERIFY_KEYS); give "
            "PostgreSQL's OS user its WAL key with `backupflow key rotate --wal-env-file PATH`."
        )


def _authentic(
    raw: bytes, keyring: Keyring, *, database: str, sysid: int, name: str, where: str
) -> WalRecord:
    payload = open_envelope(
        raw, keyring, source=where, kind="wal", series=f"{Category.DATABASE.value}/{database}"
    )
    try:
        record = WalRecord.model_validate_json(payload)
    except ValidationError:
        raise ForeignManifestError(
            f"foreign WAL record {where} ignored: it is no WAL record."
        ) from None
    data_key = wal_key(
        Category.DATABASE, database, wal_path(sysid, name), _extension(record.object),
        wal_push_id(record.object.key),
    )  # fmt: skip
    if (
        record.database != database
        or record.system_identifier != str(sysid)
        or record.name != name
        or record.object.role != f"{WAL_ROLE}{wal_path(sysid, name)}"
        or record.object.key != data_key
    ):
        raise ForeignManifestError(
            f"foreign WAL record {where} ignored: it describes another file than its key."
        )
    return record


def _read_raw(tier: Tier, key: str) -> bytes | None:
    try:
        with tier.storage.open(key) as handle:
            raw = handle.read(_MAX_RECORD + 1)
    except ObjectNotFoundError:
        return None
    if len(raw) > _MAX_RECORD:
        raise ForeignManifestError(
            f"foreign WAL record {key} in {tier.storage.name} ignored: it is too large."
        )
    return raw


def read_record(tier: Tier, database: str, sysid: int, name: str) -> WalRecord | None:
    """The authenticated record of ``name`` in ``tier``, None when there is none;
    :class:`ForeignManifestError` for one no trusted key signed or that describes another
    file (ignored by callers, and reported)."""
    found = read_record_as_stored(tier, database, sysid, name)
    return found[0] if found is not None else None


def read_record_as_stored(
    tier: Tier, database: str, sysid: int, name: str
) -> tuple[WalRecord, bytes] | None:
    """:func:`read_record`, with the record's stored bytes (the signed envelope), read once."""
    key = _keys(database, sysid, name, "")[1]
    raw = _read_raw(tier, key)
    if raw is None:
        return None
    where = f"{key} in {tier.storage.name}"
    record = _authentic(raw, tier.keyring, database=database, sysid=sysid, name=name, where=where)
    return record, raw


# -- push -------------------------------------------------------------------------------


def _open_source(path: Path) -> tuple[BinaryIO, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(
            f"{path} cannot be read ({exc.strerror or type(exc).__name__}); PostgreSQL keeps "
            "the file and retries."
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ParameterError(f"{path} is not a regular file; wal-push archives WAL files only.")
    return os.fdopen(fd, "rb"), info.st_size


def _check_segment(handle: BinaryIO, size: int, name: WalName, sysid: int, path: Path) -> int:
    """The segment's size from its long page header, after checking the header belongs to
    this cluster and this segment number; the file must be exactly that size."""
    head = handle.read(40)
    handle.seek(0)
    if len(head) < 40:
        raise IntegrityError(f"{path} is too short to be a WAL segment; it was not archived.")
    magic, info, _tli, pageaddr, _rem, page_sysid, seg_size = struct.unpack("<HHIQI4xQI", head[:36])
    if magic < _XLOG_PAGE_MAGIC_MIN or not info & _XLP_LONG_HEADER:
        raise IntegrityError(f"{path} does not start with a WAL page header; it was not archived.")
    if page_sysid != sysid:
        raise IntegrityError(
            f"{path} belongs to the cluster {page_sysid}, not to this one ({sysid}); it was not "
            "archived (check --data-dir)."
        )
    try:
        segno = parse_wal_name(name.name, seg_size).segno
    except ValueError:
        raise IntegrityError(
            f"{path} has a page header that names no WAL segment size ({seg_size}); it was "
            "not archived."
        ) from None
    if size != seg_size or pageaddr != segno * seg_size:
        raise IntegrityError(
            f"{path} is not a whole segment {name.name} ({size} bytes, header says {seg_size}); "
            "it was not archived."
        )
    return int(seg_size)


def _raw_sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := handle.read(_CHUNK):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()


def _intact(tier: Tier, obj: StoredObject) -> bool:
    """Whether ``obj`` is in ``tier`` and every byte of it matches its hashes."""
    try:
        with open_verified(tier.storage, obj, chunk_bytes=_CHUNK, keyring=tier.keyring) as plain:
            while plain.read(_CHUNK):
                pass
    except (ObjectNotFoundError, IntegrityError):
        return False
    return True


def _existing(tier: Tier, database: str, sysid: int, name: WalName) -> WalRecord | None:
    try:
        return read_record(tier, database, sysid, name.name)
    except ForeignManifestError as exc:
        # Never overwrite what a kept log backup may pin (a record signed by a key that
        # was rotated out is still one); an operator looks first.
        raise WalConflictError(
            f"wal-push refuses {name.name}: {tier.storage.name} holds a record for it that "
            f"cannot be authenticated ({exc}); nothing was overwritten: check the verify "
            "keys (BACKUPFLOW_CRYPTO__VERIFY_KEYS) or remove that record by hand."
        ) from None


def _agree(tier: Tier, name: WalName, existing: WalRecord, raw_sha256: str, warn: Any) -> bool:
    """Whether the archived ``existing`` holds the same content as the file being pushed;
    raises :class:`WalConflictError` when it holds other content (a partial file excepted:
    the first one archived is kept)."""
    if raw_sha256 == existing.object.raw_sha256:
        return True
    if name.kind == "partial":
        # Recovery never reads a .partial file (the next timeline's first segment holds the
        # same WAL), and two restores that fork in the same segment both push one.
        if warn is not None:
            warn(
                f"{name.name} is already archived with other content (an earlier restore "
                "forked in the same segment); kept the first one."
            )
        return False
    raise WalConflictError(
        f"wal-push refuses {name.name}: {tier.storage.name} already holds it with other "
        "content (two clusters sharing one series, or a damaged WAL file); nothing was "
        "overwritten."
    )


def push_wal(
    tier: Tier,
    database: str,
    path: Path,
    *,
    data_dir: Path,
    codec: Codec,
    now: datetime | None = None,
    warn: Any = None,
) -> PushResult:
    """Archive the WAL file at ``path`` (relative to ``data_dir``, as ``%p`` is) into
    ``tier``.  Raises on anything short of a durable, verified copy and its record.

    Each push stores its own object (a fresh push id in its key) and then *creates* the
    record, which never replaces one: of two pushes of one file, the second finds the
    first's record (or loses the race to create it) and succeeds only when the archived
    plaintext has the same SHA-256, removing its own object.  A record whose object is gone
    or damaged is repaired by a push of the same content (the only time a record is
    replaced: both name verified copies of the same bytes)."""
    name = check_wal_name(path.name)
    check_database_name(database, "--database or BACKUPFLOW_DATABASE__NAME")
    _check_wal_signer(tier.keyring, database)  # before 16 MiB travel: a record others trust
    sysid = system_identifier_of(data_dir)
    source = path if path.is_absolute() else data_dir / path
    record_key = _keys(database, sysid, name.name, "")[1]
    handle, size = _open_source(source)
    with handle:
        limit = _MAX_TEXT_FILE
        if name.kind in ("segment", "partial"):
            limit = _check_segment(handle, size, name, sysid, source)
        elif size > _MAX_TEXT_FILE:
            raise ParameterError(f"{source} is too large for a {name.kind} file.")
        existing = _existing(tier, database, sysid, name)
        repair = False
        if existing is not None:
            if not _agree(tier, name, existing, _raw_sha256(handle), warn):
                return PushResult(name.name, existing.object.key, False, size)
            if _intact(tier, existing.object):
                return PushResult(name.name, existing.object.key, False, size)
            repair = True
            if warn is not None:
                warn(
                    f"the archived copy of {name.name} in {tier.storage.name} is missing or "
                    "damaged; it is stored again from PostgreSQL's file."
                )
        data_key = wal_key(
            Category.DATABASE, database, wal_path(sysid, name.name), codec.extension,
            new_push_id(),
        )  # fmt: skip
        reader = HashingReader(
            handle, limit=limit, overflow=f"{source} grew while it was archived; retry."
        )
        obj = store_stream(
            tier.storage,
            data_key,
            reader,  # type: ignore[arg-type]
            codec,
            role=f"{WAL_ROLE}{wal_path(sysid, name.name)}",
            chunk_bytes=_CHUNK,
            keyring=tier.keyring,
        )
    record = WalRecord(
        database=database,
        system_identifier=str(sysid),
        name=name.name,
        object=obj,
        pushed_at=now or datetime.now(UTC),
    )
    envelope = seal(record.model_dump_json().encode(), tier.keyring, kind="wal")
    if repair:
        put_bytes(tier.storage, record_key, envelope)
        return PushResult(name.name, obj.key, True, obj.raw_size)
    if tier.storage.create(record_key, envelope):
        return PushResult(name.name, obj.key, True, obj.raw_size)
    # Another push of this file created the record first: ours is not referenced.
    winner = _existing(tier, database, sysid, name)
    with contextlib.suppress(BackupflowError):
        tier.storage.delete(obj.key)
    if winner is None:
        raise StorageError(
            f"the record of {name.name} in {tier.storage.name} existed and then vanished "
            "while it was archived; PostgreSQL keeps the file and retries."
        )
    _agree(tier, name, winner, obj.raw_sha256, warn)
    return PushResult(name.name, winner.object.key, False, size)


# -- listing ----------------------------------------------------------------------------


def archived(
    tier: Tier, database: str, sysid: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> list[WalName]:
    """The names that have a record in ``tier`` (a listing: not authenticated), sorted in
    replay order; keys that are no WAL name are left out."""
    prefix = f"{wal_prefix(Category.DATABASE, database)}{sysid}/"
    names: list[WalName] = []
    for info in tier.storage.list(prefix):
        rest = info.key[len(prefix) :]
        if not rest.endswith(".rec") or "/" in rest:
            continue
        try:
            names.append(parse_wal_name(rest[: -len(".rec")], segment_bytes))
        except ValueError:
            continue
    return sorted(names)


def archived_objects(
    tier: Tier, database: str, sysid: int, names: Sequence[str]
) -> tuple[StoredObject, ...]:
    """For each name, in order: the ``wal:`` object its authenticated record names and the
    ``walrec:`` object of the record itself (stored as is).  A missing or foreign record is
    a :class:`~backupflow.errors.CatalogError` naming it."""

    def one(name: str) -> tuple[StoredObject, StoredObject]:
        check_wal_name(name)
        key = _keys(database, sysid, name, "")[1]
        raw = _read_raw(tier, key)
        where = f"{key} in {tier.storage.name}"
        if raw is None:
            raise ForeignManifestError(f"the WAL record {where} is missing.")
        record = _authentic(
            raw, tier.keyring, database=database, sysid=sysid, name=name, where=where
        )
        digest = hashlib.sha256(raw).hexdigest()
        rec = StoredObject(
            role=f"{WAL_RECORD_ROLE}{wal_path(sysid, name)}",
            key=key,
            codec="none",
            size=len(raw),
            sha256=digest,
            raw_size=len(raw),
            raw_sha256=digest,
        )
        return record.object, rec

    with ThreadPoolExecutor(max_workers=8) as pool:
        pairs = list(pool.map(one, names))
    return tuple(obj for pair in pairs for obj in pair)


# -- fetch ------------------------------------------------------------------------------


def _write_verified(tier: Tier, obj: StoredObject, dest: Path) -> None:
    """Stream ``obj`` from ``tier`` into a private temporary file beside ``dest``; rename
    it over ``dest`` (never through a link there) only once it is verified."""
    folder = dest.parent
    temp = folder / f".{dest.name}.bf-{os.urandom(6).hex()}.tmp"
    fd = create_private_file(temp)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            open_verified(tier.storage, obj, chunk_bytes=_CHUNK, keyring=tier.keyring) as plain,
        ):
            while block := plain.read(_CHUNK):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(folder)


def fetch_wal(
    tiers: Sequence[Tier],
    database: str,
    sysid: int,
    name: str,
    dest: Path,
    *,
    planned: StoredObject | None = None,
    lookup: bool = True,
) -> FetchOutcome:
    """Serve ``name`` into ``dest`` from the first tier that holds an intact copy.

    ``planned``: the object an authenticated manifest names (no record is read); else, with
    ``lookup``, each tier's own record.  Missing everywhere is ``missing``; held somewhere but
    damaged everywhere is ``damaged``; a tier that failed and none that had it is
    ``unavailable`` (nobody can say the file is not archived)."""
    check_wal_name(name)
    check_database_name(database, "--database or BACKUPFLOW_DATABASE__NAME")
    # A history file is always looked up: to choose its new timeline a restored copy asks
    # for the history files above its own, and one that came back "not archived" would
    # make it reuse a timeline the archive already holds (and its wal-push then refused).
    history = name.endswith(".history")
    if planned is None and not lookup and not history:
        return FetchOutcome(name, "missing", error="not in the restore's plan")
    listed = planned is not None
    damaged: list[str] = []
    failed: list[str] = []
    for tier in tiers:
        try:
            obj = planned
            if obj is None:
                record = read_record(tier, database, sysid, name)
                if record is None:
                    continue
                obj = record.object
            _write_verified(tier, obj, dest)
            skipped = "; ".join(damaged + failed)
            # Served, but not from the first tier that holds it: said, never silent.
            return FetchOutcome(name, "fetched", tier.name, error=skipped or None, planned=listed)
        except ObjectNotFoundError:
            continue
        except (IntegrityError, ForeignManifestError) as exc:
            damaged.append(f"{tier.name}: {exc}")
        except BackupflowError as exc:
            failed.append(f"{tier.name}: {exc}")
    if damaged:
        return FetchOutcome(name, "damaged", error=damaged[0], planned=listed)
    if failed:
        return FetchOutcome(name, "unavailable", error=failed[0], planned=listed)
    return FetchOutcome(name, "missing", planned=listed)


# -- plan -------------------------------------------------------------------------------


def write_plan(path: Path, plan: FetchPlan) -> None:
    """Write ``plan`` as a new private (0600) file."""
    fd = create_private_file(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(plan.model_dump_json().encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_plan(path: Path) -> FetchPlan:
    """The plan at ``path`` (a regular file, never through a link, bounded)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError(f"the fetch plan {path} is not a regular file.")
            raw = handle.read(_MAX_PLAN + 1)
    except OSError as exc:
        raise ConfigError(
            f"the fetch plan {path} cannot be read ({exc.strerror or type(exc).__name__})."
        ) from None
    if len(raw) > _MAX_PLAN:
        raise ConfigError(f"the fetch plan {path} is larger than {_MAX_PLAN} bytes.")
    try:
        return FetchPlan.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"the fetch plan {path} is invalid at {where}: {first['msg']}.") from None


def append_report(path: Path, outcome: FetchOutcome) -> None:
    """One JSON line per request in the plan's report (created private, never via a link)."""
    line = json.dumps(
        {
            "name": outcome.name,
            "outcome": outcome.outcome,
            "tier": outcome.tier,
            "error": outcome.error,
            "planned": outcome.planned,
            "at": datetime.now(UTC).isoformat(),
        }
    )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def planned_object(plan: FetchPlan, name: str) -> StoredObject | None:
    """The plan's object for ``name``, checked to be that file's (role and key)."""
    obj = plan.files.get(name)
    if obj is None:
        return None
    sysid = int(plan.system_identifier)
    data_key = wal_key(
        Category.DATABASE, plan.database, wal_path(sysid, name), _extension(obj),
        wal_push_id(obj.key),
    )  # fmt: skip
    if obj.role != f"{WAL_ROLE}{wal_path(sysid, name)}" or obj.key != data_key:
        raise ConfigError(f"the fetch plan names {obj.key!r} for {name}, which is not its key.")
    if obj.encryption not in (None, AGE_FORMAT):
        raise ConfigError(f"the fetch plan names an unknown encryption for {name}.")
    return obj
