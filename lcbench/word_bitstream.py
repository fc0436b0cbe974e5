"""The container both range-coded learned codecs write: a fixed header, then 32-bit words.

Layout (little endian):
    magic    4 bytes  one per codec (b"LCIM" importance_map, b"LCAE" autoencoder)
    version  1 byte   the codec's format version
    model    1 byte   model id (the codec's rate point: which weights file decodes it)
    weights  4 bytes  first bytes of that weights file's sha256 (other weights fail loudly)
    height   4 bytes  image height in pixels (before padding)
    width    4 bytes  image width in pixels
    crc32    4 bytes  CRC-32 of the payload: a truncated or damaged stream is an error,
                      not a silently wrong picture (a range decoder reads garbage happily)
    payload           the range coder's uint32 words
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

_HEADER = struct.Struct("<4sBB4sIII")
HEADER_BYTES = _HEADER.size  # 22


class BitstreamError(ValueError):
    """The bytes are not a valid bitstream of this codec; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Header:
    model_id: int
    weights_tag: bytes  # 4 bytes of the weights' sha256
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class WordBitstream:
    """One codec's framing: its magic, its name for messages, its format version."""

    magic: bytes
    codec: str
    version: int

    def pack(self, header: Header, words: np.ndarray) -> bytes:
        if not 0 <= header.model_id < 256:
            raise BitstreamError(f"{self.codec}: model id {header.model_id} does not fit in one byte")
        if len(header.weights_tag) != 4:
            raise BitstreamError(f"{self.codec}: weights tag must be 4 bytes")
        payload = np.asarray(words, dtype="<u4").tobytes()
        return _HEADER.pack(self.magic, self.version, header.model_id, header.weights_tag, header.height,
                            header.width, zlib.crc32(payload)) + payload

    def unpack(self, data: bytes) -> tuple[Header, np.ndarray]:
        name = self.codec
        if len(data) < HEADER_BYTES:
            raise BitstreamError(f"{name} bitstream too short: {len(data)} bytes, the header needs {HEADER_BYTES}")
        magic, version, model_id, tag, height, width, crc = _HEADER.unpack_from(data)
        if magic != self.magic:
            raise BitstreamError(f"not {name}'s bitstream (magic {magic!r}, expected {self.magic!r})")
        if version != self.version:
            raise BitstreamError(f"{name} bitstream format {version}, this lcbench reads {self.version}")
        if height == 0 or width == 0:
            raise BitstreamError(f"{name} bitstream has an empty image size {width}x{height}")
        payload = bytes(data[HEADER_BYTES:])
        if len(payload) % 4:
            raise BitstreamError(f"{name} bitstream is truncated or damaged: its {len(payload)}-byte payload "
                                 "is not whole 32-bit words")
        if zlib.crc32(payload) != crc:
            raise BitstreamError(f"{name} bitstream is truncated or damaged: the {len(payload)}-byte payload "
                                 "does not match its CRC-32")
        return Header(model_id, tag, height, width), np.frombuffer(payload, dtype="<u4").astype(np.uint32)
