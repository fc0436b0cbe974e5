"""HEVC intra coding with x265 (the core of BPG) through libheif's heif-enc / heif-convert.

Debian ships both in libheif-examples, so an HEVC-class codec runs on a plain Debian
machine. The bitstream is the HEIF file: the HEVC intra frame plus a small container
(a few hundred bytes), all of it counted in the rate.
"""
from __future__ import annotations

from pathlib import Path

from lcbench.codec import int_option
from lcbench.registry import register_codec
from lcbench.tools import CommandLineCodec, tool_lines, tool_version


X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")


@register_codec
class HEVC(CommandLineCodec):
    name = "hevc"
    default_rates = tuple(float(q) for q in range(5, 100, 5))
    rate_range = (0.0, 100.0)
    rate_is_integer = True  # passed to the tool as a whole number
    tools = {"heif_enc": ("heif-enc", "LCBENCH_HEIF_ENC"), "heif_convert": ("heif-convert", "LCBENCH_HEIF_CONVERT")}
    install_hint = "apt-get install libheif-examples (heif-enc/heif-convert with the x265 encoder)"
    bitstream_suffix = ".heic"
    description = "HEVC intra (x265 via libheif heif-enc)"

    def __init__(self, chroma: int = 420, preset: str = "slow", **tool_paths: str) -> None:
        super().__init__(**tool_paths)
        self.chroma, self.preset = int_option("hevc", "chroma", chroma), str(preset)
        if self.chroma not in (420, 422, 444):
            raise ValueError(f"hevc: chroma must be 420, 422 or 444, got {chroma!r}")
        if self.chroma != 420:
            self.options["chroma"] = self.chroma
        if self.preset not in X265_PRESETS:
            raise ValueError(f"hevc: preset must be one of {', '.join(X265_PRESETS)}, got {preset!r}")
        if self.preset != "slow":
            self.options["preset"] = self.preset

    def version(self) -> str:
        libheif = tool_version([self.paths["heif_enc"], "--help"]).strip("- ")
        encoders = tool_lines([self.paths["heif_enc"], "--list-encoders"])
        x265 = next((line.strip("- ") for line in encoders if "x265" in line), "x265 ?")
        return f"{libheif}; {x265}"

    def encode_args(self, src: Path, dst: Path, rate: float) -> list[str]:
        return [self.paths["heif_enc"], "-e", "x265", "-q", str(int(round(rate))),
                "-p", f"chroma={self.chroma}", "-p", f"preset={self.preset}", "-o", str(dst), str(src)]

    def decode_args(self, src: Path, dst: Path) -> list[str]:
        return [self.paths["heif_convert"], str(src), str(dst)]
