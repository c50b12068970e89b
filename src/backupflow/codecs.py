"""Compression codecs: zstd (default), gzip (the seed's ``.gz``) and none (already compressed).

A codec gives an incremental compressor and a bounded-memory decompressing reader; neither
ever holds a whole backup in memory.
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from typing import BinaryIO, Protocol, cast

import zstandard

from backupflow.config import PipelineSettings
from backupflow.errors import CatalogError

__all__ = [
    "CODEC_ERRORS",
    "Codec",
    "Compressor",
    "GzipCodec",
    "NoneCodec",
    "ZstdCodec",
    "get_codec",
]

#: Exceptions a decompressor raises on damaged input.
CODEC_ERRORS: tuple[type[BaseException], ...] = (
    zstandard.ZstdError,
    zlib.error,
    gzip.BadGzipFile,
    EOFError,
)


class Compressor(Protocol):
    """Incremental compressor: feed chunks, then flush once."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Codec(ABC):
    """A named compression format with its file extension."""

    name: str
    extension: str

    @abstractmethod
    def compressor(self) -> Compressor:
        """A fresh incremental compressor."""

    @abstractmethod
    def reader(self, raw: BinaryIO) -> BinaryIO:
        """A reader that yields the decompressed bytes of ``raw``."""


class ZstdCodec(Codec):
    """Zstandard, multi-threaded when ``threads`` is not 0."""

    name = "zstd"
    extension = ".zst"

    def __init__(self, level: int = 3, threads: int = -1) -> None:
        self.level = level
        self.threads = threads

    def compressor(self) -> Compressor:
        cctx = zstandard.ZstdCompressor(level=self.level, threads=self.threads)
        return cast(Compressor, cctx.compressobj())

    def reader(self, raw: BinaryIO) -> BinaryIO:
        dctx = zstandard.ZstdDecompressor()
        return cast(BinaryIO, dctx.stream_reader(raw, read_across_frames=True, closefd=False))


class _GzipCompressor:
    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31 = gzip header and trailer

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush()


class GzipCodec(Codec):
    """gzip, readable with ``gunzip`` like the seed's backups."""

    name = "gzip"
    extension = ".gz"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def compressor(self) -> Compressor:
        return _GzipCompressor(self.level)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class NoneCodec(Codec):
    """Stores bytes as they are (for data that is already compressed)."""

    name = "none"
    extension = ""

    def compressor(self) -> Compressor:
        return _Identity()

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return raw


def get_codec(name: str, *, level: int | None = None, threads: int = -1) -> Codec:
    """The codec called ``name`` (as recorded in manifests)."""
    if name == "zstd":
        return ZstdCodec(level or 3, threads)
    if name == "gzip":
        return GzipCodec(level or 6)
    if name == "none":
        return NoneCodec()
    raise CatalogError(
        f"unknown codec {name!r} (this backupflow knows zstd, gzip and none); "
        "use the backupflow release that wrote the backup."
    )


def codec_for(settings: PipelineSettings) -> Codec:
    """The codec the pipeline settings choose for new backups."""
    if settings.codec == "gzip":
        return GzipCodec(settings.gzip_level)
    return ZstdCodec(settings.zstd_level, settings.zstd_threads)
