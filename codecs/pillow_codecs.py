"""Codecs that Pillow links: JPEG (libjpeg-turbo), JPEG 2000 (OpenJPEG), WebP, AVIF, PNG.

One base class driven by a format attribute, so each codec is a few lines.
"""
from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
from PIL import Image, features

from lcbench.codec import Availability, Codec, CodecError, bool_option, check_image, int_option
from lcbench.registry import register_codec

QUALITY_5_TO_95 = tuple(float(q) for q in range(5, 100, 5))


class PillowCodec(Codec):
    pil_format: ClassVar[str]
    feature: ClassVar[str]  # PIL.features key of the linked library

    @classmethod
    def availability(cls) -> Availability:
        try:
            ok = features.check(cls.feature)
        except Exception as exc:  # unknown feature on an old Pillow
            return Availability.no(f"Pillow cannot tell whether {cls.feature} is linked: {exc}", "pip install -U pillow")
        if not ok:
            return Availability.no(f"this Pillow build lacks {cls.feature}", "pip install -U pillow (wheels from 11.3 link it)")
        return Availability.yes()

    def version(self) -> str:
        return f"{self.feature} {features.version(self.feature)} (Pillow {Image.__version__})"

    def save_params(self, rate: float) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, image: np.ndarray, rate: float) -> bytes:
        check_image(image, self.name)
        buf = io.BytesIO()
        try:
            Image.fromarray(image, "RGB").save(buf, format=self.pil_format, **self.save_params(rate))
        except Exception as exc:
            raise CodecError(f"{self.name}: encoding at {self.rate_param}={rate:g} failed: {exc}") from exc
        return buf.getvalue()

    def decode(self, bitstream: bytes) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(bitstream)) as im:
                im.load()
                return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        except Exception as exc:
            raise CodecError(f"{self.name}: decoding failed: {exc}") from exc


@register_codec
class JPEG(PillowCodec):
    """Baseline JPEG with libjpeg-turbo; 4:2:0 by default (``jpeg:subsampling=444`` for 4:4:4)."""

    name = "jpeg"
    pil_format = "JPEG"
    feature = "jpg"
    default_rates = QUALITY_5_TO_95
    rate_range = (1.0, 100.0)
    rate_is_integer = True  # save_params rounds
    description = "JPEG (libjpeg-turbo via Pillow)"
    _SUBSAMPLING = {420: 2, 422: 1, 444: 0}

    def __init__(self, subsampling: int | str = 420, optimize: bool = False) -> None:
        super().__init__()
        sub = int_option("jpeg", "subsampling", str(subsampling).replace(":", ""))
        if sub not in self._SUBSAMPLING:
            raise ValueError(f"jpeg: subsampling must be one of 420, 422, 444, got {subsampling!r}")
        self.subsampling, self.optimize = sub, bool_option("jpeg", "optimize", optimize)
        if sub != 420:
            self.options["subsampling"] = sub
        if self.optimize:
            self.options["optimize"] = True

    def version(self) -> str:
        turbo = features.version("libjpeg_turbo")
        return f"libjpeg-turbo {turbo} (Pillow {Image.__version__})" if turbo else super().version()

    def save_params(self, rate: float) -> dict[str, Any]:
        return {"quality": int(round(rate)), "subsampling": self._SUBSAMPLING[self.subsampling],
                "optimize": self.optimize}


@register_codec
class WebP(PillowCodec):
    """Lossy WebP (libwebp), slowest and best method 6."""

    name = "webp"
    pil_format = "WEBP"
    feature = "webp"
    default_rates = QUALITY_5_TO_95
    rate_range = (0.0, 100.0)
    rate_is_integer = True  # save_params rounds
    description = "WebP lossy (libwebp via Pillow, method 6)"

    def __init__(self, method: int = 6) -> None:
        super().__init__()
        self.method = int_option("webp", "method", method, 0, 6)
        if self.method != 6:
            self.options["method"] = self.method

    def save_params(self, rate: float) -> dict[str, Any]:
        return {"quality": int(round(rate)), "method": self.method, "lossless": False}


@register_codec
class JPEG2000(PillowCodec):
    """JPEG 2000 (OpenJPEG, 9/7 irreversible wavelet); the rate grid is the bpp asked of its rate control.

    OpenJPEG's rate control gets close to the target; the reported bpp is always the real
    size of the codestream.
    """

    name = "jpeg2000"
    pil_format = "JPEG2000"
    feature = "jpg_2000"
    # The bpp OpenJPEG's rate control is asked for; "target_bpp" is --target-bpp's (measured) rows.
    rate_param = "nominal_bpp"
    rate_is_bpp = True
    default_rates = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
    rate_range = (0.01, 24.0)  # searched by rate matching (up to 8 only, targets above were "not reached")
    accepted_rates = (1e-3, 24.0)  # a compression ratio of at least 1 against 24-bit RGB
    description = "JPEG 2000 (OpenJPEG via Pillow)"

    def save_params(self, rate: float) -> dict[str, Any]:
        if rate <= 0:
            raise CodecError(f"jpeg2000: nominal_bpp must be > 0, got {rate}")
        # quality_layers in "rates" mode are compression ratios against 24-bit RGB.
        # mct=1: code in YCbCr like every JPEG 2000 benchmark (Pillow's default 0 codes raw RGB).
        return {"quality_mode": "rates", "quality_layers": [24.0 / rate], "irreversible": True,
                "mct": 1, "no_jp2": True}

    def version(self) -> str:
        return f"OpenJPEG {features.version('jpg_2000')} (Pillow {Image.__version__}); 9/7 irreversible, MCT on"


@register_codec
class AVIF(PillowCodec):
    """AVIF (libavif, AV1 intra) through Pillow's own plugin, or pillow-avif-plugin."""

    name = "avif"
    pil_format = "AVIF"
    feature = "avif"
    default_rates = QUALITY_5_TO_95
    rate_range = (0.0, 100.0)
    rate_is_integer = True  # save_params rounds
    description = "AVIF (libavif via Pillow)"

    @classmethod
    def availability(cls) -> Availability:
        try:
            if features.check("avif"):
                return Availability.yes()
        except Exception:
            pass
        try:
            import pillow_avif  # noqa: F401  registers the AVIF format with older Pillows
            return Availability.yes()
        except ImportError:
            return Availability.no("this Pillow has no AVIF support", "pip install -U 'pillow>=11.3' or pillow-avif-plugin")

    def version(self) -> str:
        try:
            v = features.version("avif")
        except Exception:
            v = None
        # The thread count is in the version: libavif's output depends on it, so results
        # from the old default (one thread per core) must not be reused from the cache.
        threads = f"; {self.threads} encoder thread{'s' if self.threads != 1 else ''}"
        if v:
            return f"libavif {v} (Pillow {Image.__version__}){threads}"
        import pillow_avif

        return f"pillow-avif-plugin {getattr(pillow_avif, '__version__', '?')}{threads}"

    _SUBSAMPLING = {"420": "4:2:0", "422": "4:2:2", "444": "4:4:4", "400": "4:0:0"}

    def __init__(self, speed: int = 6, subsampling: int | str = "4:2:0", threads: int = 1) -> None:
        super().__init__()
        # 420/422/444/400 as in jpeg's option: a codec spec cannot hold "4:4:4" (':' separates options)
        self.speed = int_option("avif", "speed", speed, 0, 10)
        self.subsampling = self._SUBSAMPLING.get(str(subsampling).replace(":", ""), "")
        self.threads = int_option("avif", "threads", threads)
        if not self.subsampling:
            raise ValueError(f"avif: subsampling must be 420, 422, 444 or 400 (4:2:0 ... from Python), "
                             f"got {subsampling!r}")
        if self.speed != 6:
            self.options["speed"] = self.speed
        if self.subsampling != "4:2:0":
            self.options["subsampling"] = int(self.subsampling.replace(":", ""))  # a label that parses back
        if self.threads < 1:
            raise ValueError(f"avif: threads={threads} must be at least 1")
        if self.threads != 1:
            self.options["threads"] = self.threads
        if not features.check("avif"):
            import pillow_avif  # noqa: F401

    def save_params(self, rate: float) -> dict[str, Any]:
        # max_threads pinned (Pillow's default is one per core): libavif's bitstream changes
        # with the thread count, so the same command must give the same bytes on any machine.
        # lcbench parallelises over jobs, so one thread per encode loses nothing.
        return {"quality": int(round(rate)), "speed": self.speed, "subsampling": self.subsampling,
                "max_threads": self.threads}


@register_codec
class PNG(PillowCodec):
    """Lossless PNG (zlib), the lossless reference point; the rate parameter is the zlib level."""

    name = "png"
    pil_format = "PNG"
    feature = "zlib"
    rate_param = "level"
    default_rates = (6.0,)
    rate_range = (0.0, 9.0)
    rate_is_integer = True  # save_params rounds
    rate_increases_bits = False  # a higher zlib level compresses harder (rate matching searches that way)
    lossless = True
    description = "PNG lossless (zlib via Pillow)"

    def save_params(self, rate: float) -> dict[str, Any]:
        return {"compress_level": int(round(rate))}
