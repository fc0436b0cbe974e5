"""Damaged bitstreams of the range-coded learned codecs (importance_map, autoencoder).

A damaged stream must be a CodecError naming the codec: never another picture (a flipped
size bit used to crop or re-grid the image silently), a MemoryError or a hang. The shipped
weights on a 64x77 crop (odd width: 77 and 76 pad to the same size, so a flipped low width
bit decodes the same latents).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("constriction")

from lcbench import word_bitstream  # noqa: E402
from lcbench.codec import CodecError  # noqa: E402
from lcbench.registry import create_codec  # noqa: E402
from support import photo  # noqa: E402

HEADER = word_bitstream.HEADER_BYTES
OLD_FORMAT = {"importance_map": 2, "autoencoder": 1}  # payload-only CRC, header unprotected
NEW_FORMAT = {"importance_map": 3, "autoencoder": 2}


def _reseal(data: bytes) -> bytes:
    """Recompute the header+payload CRC-32 after an edit: a stream written with that content."""
    head, payload = data[:HEADER - 4], data[HEADER:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _with_size(data: bytes, height: int, width: int) -> bytes:
    return _reseal(data[:10] + struct.pack("<II", height, width) + data[18:])


@pytest.fixture(scope="module", params=["importance_map", "autoencoder"])
def coded(request):
    codec = create_codec(request.param)
    image = photo("astronaut", (64, 77))
    data = codec.encode(image, 3)
    decoded = codec.decode(data)
    assert decoded.shape == image.shape
    return codec, data, decoded


def _decode_or_error(codec, data: bytes):
    """The decoded picture, or None after a CodecError that names the codec (anything else fails)."""
    try:
        return codec.decode(data)
    except CodecError as exc:
        assert codec.name in str(exc), str(exc)
        return None


def test_every_header_bit_flip_is_an_error_never_another_picture(coded) -> None:
    codec, data, decoded = coded
    for i in range(HEADER):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            out = _decode_or_error(codec, bytes(bad))
            assert out is None or (out.shape == decoded.shape and np.array_equal(out, decoded)), \
                f"header byte {i} bit {bit}: decoded {out.shape}, not an error"


def test_every_truncation_and_appended_bytes_are_errors(coded) -> None:
    codec, data, _ = coded
    for length in range(len(data)):
        assert _decode_or_error(codec, data[:length]) is None, f"truncated to {length} bytes"
    for tail in (b"\x00", b"\x00\x00\x00\x00", b"\x01\x02\x03\x04\x05\x06\x07\x08"):
        assert _decode_or_error(codec, data + tail) is None, f"{len(tail)} bytes appended"


def test_random_payload_bit_flips_are_errors(coded) -> None:
    codec, data, _ = coded
    rng = np.random.default_rng(0)
    for _ in range(200):
        pos = int(rng.integers(HEADER, len(data)))
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        assert _decode_or_error(codec, bytes(bad)) is None, f"payload byte {pos} flipped"


@pytest.mark.parametrize("height,width", [(2 ** 31 + 64, 77), (64, 2 ** 17), (2 ** 15, 2 ** 14), (0, 77)])
def test_sizes_beyond_the_format_are_refused_before_anything_is_allocated(coded, height: int, width: int) -> None:
    """Even with a matching CRC (a stream written that way): no MemoryError, no endless decode."""
    codec, data, _ = coded
    with pytest.raises(CodecError, match=r"beyond the format's limit|empty image size"):
        codec.decode(_with_size(data, height, width))


def test_another_size_with_a_matching_crc_does_not_decode_the_payload(coded) -> None:
    """A size the payload was not written for (other latent grid) leaves the range decoder short
    of words or with words left over: an error, not a picture of that size."""
    codec, data, decoded = coded
    for height, width in ((64, 81), (64, 336), (96, 77)):
        out = _decode_or_error(codec, _with_size(data, height, width))
        assert out is None, f"{width}x{height} decoded"


def test_words_left_over_after_the_last_symbol_are_an_error(coded) -> None:
    codec, data, _ = coded
    with pytest.raises(CodecError, match="does not end where the last"):
        codec.decode(_reseal(data + bytes(8)))


def test_an_older_format_is_refused_with_a_clear_message(coded) -> None:
    codec, data, _ = coded
    old, new = OLD_FORMAT[codec.name], NEW_FORMAT[codec.name]
    payload = data[HEADER:]
    head = data[:4] + bytes([old]) + data[5:HEADER - 4]
    old_stream = head + struct.pack("<I", zlib.crc32(payload)) + payload  # the old layout: payload-only CRC
    with pytest.raises(CodecError, match=f"{codec.name} bitstream format v{old}, this lcbench writes v{new}"):
        codec.decode(old_stream)
    assert f"bitstream-v{new}" in codec.version()


def test_pack_refuses_sizes_the_format_cannot_carry() -> None:
    fmt = word_bitstream.WordBitstream(b"TEST", "test", 1)
    words = np.array([1, 2], dtype=np.uint32)
    for h, w in ((word_bitstream.MAX_SIDE + 1, 1), (1 << 15, 1 << 14), (0, 5)):
        with pytest.raises(word_bitstream.BitstreamError, match="cannot write"):
            fmt.pack(word_bitstream.Header(1, b"abcd", h, w), words)
    data = fmt.pack(word_bitstream.Header(1, b"abcd", 17, 33), words)
    header, got = fmt.unpack(data)
    assert (header.height, header.width) == (17, 33) and got.tolist() == [1, 2]
    with pytest.raises(word_bitstream.BitstreamError, match="no payload"):
        fmt.unpack(_reseal(data[:HEADER]))
