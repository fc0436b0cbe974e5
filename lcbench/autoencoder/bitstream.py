"""The autoencoder bitstream: a 22-byte header, then the range coder's 32-bit words.

Layout (little endian):
    magic    4 bytes  b"LCAE"
    version  1 byte   FORMAT_VERSION
    model    1 byte   model id (the codec's rate point: which weights file decodes it)
    weights  4 bytes  first bytes of that weights file's sha256 (other weights fail loudly)
    height   4 bytes  image height in pixels (before padding)
    width    4 bytes  image width in pixels
    crc32    4 bytes  CRC-32 of the payload: a truncated or damaged stream is an error,
                      not a silently wrong picture (a range decoder reads garbage happily)
    payload           latents, channel by channel, then escaped values (tables.py)
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

MAGIC = b"LCAE"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBB4sIII")
HEADER_BYTES = _HEADER.size


class BitstreamError(ValueError):
    """The bytes are not a valid autoencoder bitstream; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Header:
    model_id: int
    weights_tag: bytes  # 4 bytes of the weights' sha256
    height: int
    width: int


def pack(header: Header, words: np.ndarray) -> bytes:
    if not 0 <= header.model_id < 256:
        raise BitstreamError(f"model id {header.model_id} does not fit in one byte")
    payload = np.asarray(words, dtype="<u4").tobytes()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, header.model_id, header.weights_tag, header.height, header.width,
                        zlib.crc32(payload)) + payload


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"autoencoder bitstream too short: {len(data)} bytes, the header needs {HEADER_BYTES}")
    magic, version, model_id, tag, height, width, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"not an autoencoder bitstream (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"autoencoder bitstream format {version}, this lcbench reads {FORMAT_VERSION}")
    if height == 0 or width == 0:
        raise BitstreamError(f"autoencoder bitstream has an empty image size {width}x{height}")
    payload = bytes(data[HEADER_BYTES:])
    if len(payload) % 4 or zlib.crc32(payload) != crc:
        raise BitstreamError(f"autoencoder bitstream is truncated or damaged: the {len(payload)}-byte payload "
                             f"does not match its CRC-32")
    return Header(model_id, tag, height, width), np.frombuffer(payload, dtype="<u4").astype(np.uint32)
