"""BPG (Fabrice Bellard's HEVC-based format) through bpgenc/bpgdec, when installed.

The tools are found through the options ``bpg:bpgenc=PATH:bpgdec=PATH``, the
environment variables LCBENCH_BPGENC / LCBENCH_BPGDEC, or PATH.
"""
from __future__ import annotations

from pathlib import Path

from lcbench.codec import int_option
from lcbench.registry import register_codec
from lcbench.tools import CommandLineCodec, tool_version


@register_codec
class BPG(CommandLineCodec):
    name = "bpg"
    rate_param = "qp"
    default_rates = tuple(float(q) for q in range(47, 11, -5))  # CompressAI's grid: 47 down to 12
    rate_range = (0.0, 51.0)
    rate_is_integer = True  # passed to the tool as a whole number
    rate_increases_bits = False
    tools = {"bpgenc": ("bpgenc", "LCBENCH_BPGENC"), "bpgdec": ("bpgdec", "LCBENCH_BPGDEC")}
    install_hint = ("Build libbpg (bellard.org/bpg) and put bpgenc/bpgdec on PATH, or set "
                    "LCBENCH_BPGENC/LCBENCH_BPGDEC, or pass bpg:bpgenc=PATH:bpgdec=PATH.")
    bitstream_suffix = ".bpg"
    description = "BPG (HEVC intra, libbpg tools)"

    def __init__(self, chroma: int = 420, **tool_paths: str) -> None:
        super().__init__(**tool_paths)
        self.chroma = int_option("bpg", "chroma", chroma)
        if self.chroma not in (420, 444):
            raise ValueError(f"bpg: chroma must be 420 or 444, got {chroma!r}")
        if self.chroma != 420:
            self.options["chroma"] = self.chroma

    def version(self) -> str:
        return tool_version([self.paths["bpgenc"], "-h"]).replace("usage:", "").strip()

    def encode_args(self, src: Path, dst: Path, rate: float) -> list[str]:
        return [self.paths["bpgenc"], "-q", str(int(round(rate))), "-f", str(self.chroma), "-o", str(dst), str(src)]

    def decode_args(self, src: Path, dst: Path) -> list[str]:
        return [self.paths["bpgdec"], "-o", str(dst), str(src)]
