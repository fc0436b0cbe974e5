"""The container both range-coded learned codecs write: a fixed header, then 32-bit words.

Layout (little endian):
    magic    4 bytes  one per codec (b"LCIM" importance_map, b"LCAE" autoencoder)
    version  1 byte   the codec's format version
    model    1 byte   model id (the codec's rate point: which weights file decodes it)
    weights  4 bytes  first bytes of that weights file's sha256 (other weights fail loudly)
    height   4 bytes  image height in pixels (before padding)
    width    4 bytes  image width in pixels
    crc32    4 bytes  CRC-32 of the 18 header bytes before it AND the payload: a truncated or
                      damaged stream is an error, not a silently wrong picture (a range decoder
                      reads garbage happily, and a flipped size bit would crop or re-grid it)
    payload           the range coder's uint32 words (at least one)

Before any field but magic and version is trusted, the CRC must match; then the size must be
at most MAX_SIDE on each side and MAX_PIXELS in all (pack refuses larger images too), so a
stream can never make the decoder allocate more than a picture this format can carry. The
codecs also check that their range decoder used up the payload (to within the range coder's
one-word look-ahead: constriction's maybe_exhausted; tables.py, entropy.py).

Formats before the CRC covered the header (importance_map 2, autoencoder 1) are refused with
"bitstream format N, this lcbench writes M": re-encode them.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

_HEADER = struct.Struct("<4sBB4sIII")
HEADER_BYTES = _HEADER.size  # 22
_CRC_AT = HEADER_BYTES - 4  # the CRC covers data[:_CRC_AT] and the payload
MAX_SIDE = 1 << 16  # pixels per side
MAX_PIXELS = 1 << 28  # height x width (268 megapixels)


class BitstreamError(ValueError):
    """The bytes are not a valid bitstream of this codec; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Header:
    model_id: int
    weights_tag: bytes  # 4 bytes of the weights' sha256
    height: int
    width: int


def _size_problem(height: int, width: int) -> str | None:
    if height < 1 or width < 1:
        return f"an empty image size {width}x{height}"
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        return (f"image size {width}x{height} beyond the format's limit ({MAX_SIDE} pixels a side, "
                f"{MAX_PIXELS} in all)")
    return None


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
        problem = _size_problem(header.height, header.width)
        if problem:
            raise BitstreamError(f"{self.codec}: cannot write {problem}")
        payload = np.asarray(words, dtype="<u4").tobytes()
        head = _HEADER.pack(self.magic, self.version, header.model_id, header.weights_tag, header.height,
                            header.width, 0)[:_CRC_AT]
        return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload

    def unpack(self, data: bytes) -> tuple[Header, np.ndarray]:
        name = self.codec
        if len(data) < HEADER_BYTES:
            raise BitstreamError(f"{name} bitstream too short: {len(data)} bytes, the header needs {HEADER_BYTES}")
        magic, version, model_id, tag, height, width, crc = _HEADER.unpack_from(data)
        if magic != self.magic:
            raise BitstreamError(f"not {name}'s bitstream (magic {magic!r}, expected {self.magic!r})")
        if version != self.version:
            raise BitstreamError(f"{name} bitstream format v{version}, this lcbench writes v{self.version} "
                                 "(and reads only that): encode the image again")
        payload = bytes(data[HEADER_BYTES:])
        if len(payload) % 4:
            raise BitstreamError(f"{name} bitstream is truncated or damaged: its {len(payload)}-byte payload "
                                 "is not whole 32-bit words")
        if zlib.crc32(payload, zlib.crc32(bytes(data[:_CRC_AT]))) != crc:
            raise BitstreamError(f"{name} bitstream is truncated or damaged: its header and {len(payload)}-byte "
                                 "payload do not match their CRC-32")
        problem = _size_problem(height, width)
        if problem:
            raise BitstreamError(f"{name} bitstream has {problem}")
        if not payload:
            raise BitstreamError(f"{name} bitstream is truncated or damaged: it has no payload")
        return Header(model_id, tag, height, width), np.frombuffer(payload, dtype="<u4").astype(np.uint32)
