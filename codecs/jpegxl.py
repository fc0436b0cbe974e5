"""JPEG XL (libjxl) through cjxl/djxl, as Debian's libjxl-tools ships them."""
from __future__ import annotations

from pathlib import Path

from lcbench.codec import int_option
from lcbench.registry import register_codec
from lcbench.tools import CommandLineCodec, tool_version


@register_codec
class JPEGXL(CommandLineCodec):
    name = "jpegxl"
    default_rates = tuple(float(q) for q in range(10, 100, 5))
    # cjxl maps quality to a distance, which it accepts only up to 25 (quality about 4.05);
    # lower qualities fail in every job, so they are refused up front and never searched.
    rate_range = (5.0, 99.0)  # rate matching stays lossy
    accepted_rates = (5.0, 100.0)  # 100 is lossless; cjxl takes fractional qualities
    tools = {"cjxl": ("cjxl", "LCBENCH_CJXL"), "djxl": ("djxl", "LCBENCH_DJXL")}
    install_hint = "apt-get install libjxl-tools (cjxl/djxl), or set LCBENCH_CJXL/LCBENCH_DJXL"
    bitstream_suffix = ".jxl"
    description = "JPEG XL (libjxl cjxl/djxl)"

    def __init__(self, effort: int = 7, **tool_paths: str) -> None:
        super().__init__(**tool_paths)
        # 10 needs cjxl's --allow_expert_options (and is very slow): 1..9 like cjxl's own check
        self.effort = int_option("jpegxl", "effort", effort, 1, 9)
        if self.effort != 7:
            self.options["effort"] = self.effort

    def version(self) -> str:
        return tool_version([self.paths["cjxl"], "--version"])

    def encode_args(self, src: Path, dst: Path, rate: float) -> list[str]:
        # every digit: `:g` sent -q 99.99999 as -q 100, which is lossless
        return [self.paths["cjxl"], str(src), str(dst), "-q", repr(float(rate)), "-e", str(self.effort), "--quiet"]

    def decode_args(self, src: Path, dst: Path) -> list[str]:
        return [self.paths["djxl"], str(src), str(dst), "--quiet"]
