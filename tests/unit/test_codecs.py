"""Codecs: lookup by the names recorded in manifests, and the choice made by the settings."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from backupflow.codecs import Codec, GzipCodec, NoneCodec, ZstdCodec, codec_for, get_codec
from backupflow.config import Settings, load_settings
from backupflow.errors import CatalogError

TEXT = b"".join(b"2026-11-26 02:00:%02d INFO job %d finished\n" % (i % 60, i) for i in range(4000))
DATA = TEXT + os.urandom(50_000) + TEXT


def compress(codec: Codec, data: bytes, piece: int = 7_000) -> bytes:
    compressor = codec.compressor()
    out = [compressor.compress(data[i : i + piece]) for i in range(0, len(data), piece)]
    out.append(compressor.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    ("name", "cls", "extension"),
    [("zstd", ZstdCodec, ".zst"), ("gzip", GzipCodec, ".gz"), ("none", NoneCodec, "")],
)
def test_get_codec_by_recorded_name(name: str, cls: type[Codec], extension: str) -> None:
    codec = get_codec(name)

    assert isinstance(codec, cls)
    assert codec.name == name
    assert codec.extension == extension


@pytest.mark.parametrize("name", ["zstd", "gzip", "none"])
def test_incremental_compression_decompresses_to_the_input(name: str) -> None:
    codec = get_codec(name)
    stored = compress(codec, DATA)

    assert codec.reader(io.BytesIO(stored)).read() == DATA


def test_compressing_codecs_shrink_text() -> None:
    assert len(compress(get_codec("zstd"), TEXT)) < len(TEXT) // 4
    assert len(compress(get_codec("gzip"), TEXT)) < len(TEXT) // 4
    assert compress(get_codec("none"), TEXT) == TEXT


def test_gzip_output_is_a_gzip_file_and_zstd_output_a_zstd_frame() -> None:
    assert gzip.decompress(compress(get_codec("gzip"), DATA)) == DATA
    zstd_bytes = compress(get_codec("zstd"), DATA)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zstd_bytes) == DATA


@pytest.mark.parametrize("name", ["lz4", "ZSTD", "", "gz"])
def test_unknown_codec_name_is_refused_naming_it(name: str) -> None:
    with pytest.raises(CatalogError, match="unknown codec") as caught:
        get_codec(name)

    assert repr(name) in str(caught.value)


def test_levels_are_passed_on() -> None:
    zstd_codec = get_codec("zstd", level=19, threads=0)
    gzip_codec = get_codec("gzip", level=1)

    assert isinstance(zstd_codec, ZstdCodec)
    assert (zstd_codec.level, zstd_codec.threads) == (19, 0)
    assert isinstance(gzip_codec, GzipCodec)
    assert gzip_codec.level == 1


def test_default_settings_choose_zstd(settings: Settings) -> None:
    codec = codec_for(settings.pipeline)

    assert isinstance(codec, ZstdCodec)
    assert codec.extension == ".zst"
    assert (codec.level, codec.threads) == (3, -1)


def test_settings_can_choose_gzip_like_the_seed() -> None:
    settings = load_settings(pipeline={"codec": "gzip", "gzip_level": 9})

    codec = codec_for(settings.pipeline)

    assert isinstance(codec, GzipCodec)
    assert codec.extension == ".gz"
    assert codec.level == 9
    assert gzip.decompress(compress(codec, DATA)) == DATA


def test_settings_levels_change_the_output() -> None:
    fast = codec_for(load_settings(pipeline={"zstd_level": 1, "zstd_threads": 0}).pipeline)
    small = codec_for(load_settings(pipeline={"zstd_level": 19, "zstd_threads": 0}).pipeline)

    assert len(compress(small, TEXT)) < len(compress(fast, TEXT))
