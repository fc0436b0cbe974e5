"""The autoencoder bitstream: lcbench's 22-byte learned-codec header (magic b"LCAE"), then
the range coder's 32-bit words (latents channel by channel, then escaped values; tables.py).

The header (``lcbench/word_bitstream.py``) carries the model id, 4 bytes of the weights'
sha256 (other weights fail loudly), the image size before padding and a CRC-32 of the
header and payload (a truncated or damaged stream is an error, not a silently wrong picture).
Format 2 extends the CRC over the header: in format 1 a flipped size bit decoded another latent
grid or a cropped picture silently. Format 1 streams are refused with a clear error.
"""
from __future__ import annotations

from lcbench.word_bitstream import HEADER_BYTES, BitstreamError, Header, WordBitstream

MAGIC = b"LCAE"
FORMAT_VERSION = 2
_FORMAT = WordBitstream(MAGIC, "autoencoder", FORMAT_VERSION)
pack = _FORMAT.pack
unpack = _FORMAT.unpack

__all__ = ["HEADER_BYTES", "BitstreamError", "Header", "MAGIC", "FORMAT_VERSION", "pack", "unpack"]
