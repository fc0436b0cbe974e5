"""The importance_map bitstream: lcbench's 22-byte learned-codec header (magic b"LCIM"),
then the range coder's 32-bit words (the importance map, then the kept code bits).

The header (``lcbench/word_bitstream.py``) carries the model id, 4 bytes of the weights'
sha256, the image size before padding and a CRC-32 of the header and payload. Format 2 added
a CRC of the payload only (format 1 had none, and a flipped payload byte could decode to a wrong
picture silently); format 3 extends it over the header, where a flipped size bit cropped the
picture silently. Older formats are refused with a clear error.
"""
from __future__ import annotations

from lcbench.word_bitstream import HEADER_BYTES, BitstreamError, Header, WordBitstream

MAGIC = b"LCIM"
FORMAT_VERSION = 3
_FORMAT = WordBitstream(MAGIC, "importance_map", FORMAT_VERSION)
pack = _FORMAT.pack
unpack = _FORMAT.unpack

__all__ = ["HEADER_BYTES", "BitstreamError", "Header", "MAGIC", "FORMAT_VERSION", "pack", "unpack"]
