"""The importance_map bitstream: a fixed header, then the range coder's 32-bit words.

Layout (little endian):
    magic   4 bytes  b"LCIM"
    version 1 byte   FORMAT_VERSION
    model   1 byte   model id (the codec's rate point)
    weights 4 bytes  first bytes of the weights file's sha256 (decoding with other weights fails loudly)
    height  4 bytes  original image height in pixels
    width   4 bytes  original image width in pixels
    payload          range-coded importance map, then the kept code bits (uint32 words)
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np

MAGIC = b"LCIM"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBB4sII")
HEADER_BYTES = _HEADER.size


class BitstreamError(ValueError):
    """The bytes are not a valid importance_map bitstream; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Header:
    model_id: int
    weights_tag: bytes  # 4 bytes of the weights' sha256
    height: int
    width: int


def pack(header: Header, words: np.ndarray) -> bytes:
    if not 0 <= header.model_id < 256:
        raise BitstreamError(f"model id {header.model_id} does not fit in one byte")
    if len(header.weights_tag) != 4:
        raise BitstreamError("weights tag must be 4 bytes")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, header.model_id, header.weights_tag, header.height, header.width)
    return head + np.asarray(words, dtype="<u4").tobytes()


def unpack(data: bytes) -> tuple[Header, np.ndarray]:
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"importance_map bitstream too short: {len(data)} bytes, header needs {HEADER_BYTES}")
    magic, version, model_id, tag, height, width = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"not an importance_map bitstream (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"importance_map bitstream format {version}, this lcbench reads {FORMAT_VERSION}")
    if height == 0 or width == 0:
        raise BitstreamError(f"importance_map bitstream has an empty image size {width}x{height}")
    payload = data[HEADER_BYTES:]
    if len(payload) % 4:
        raise BitstreamError(f"importance_map payload of {len(payload)} bytes is not whole 32-bit words (truncated?)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    return Header(model_id, tag, height, width), words
