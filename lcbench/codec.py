"""The one interface every codec implements: classical, learned and pipelines alike.

A codec turns an 8-bit RGB image (H x W x 3, uint8) into a self-contained
bitstream and back. The harness measures the rate on those bytes only:
bpp = 8 * len(bitstream) / (H * W) of the original image.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np


class CodecError(RuntimeError):
    """A codec failed to encode or decode; the message names the codec."""


class CodecUnavailable(CodecError):
    """The codec cannot run on this machine; the message says why and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a codec can run here, and if not, why and how to fix it."""

    ok: bool
    reason: str = ""
    fix: str = ""

    @classmethod
    def yes(cls) -> "Availability":
        return cls(True)

    @classmethod
    def no(cls, reason: str, fix: str = "") -> "Availability":
        return cls(False, reason, fix)

    def __bool__(self) -> bool:
        return self.ok


def int_option(codec: str, option: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """A whole-number codec option from the command line or a config, checked: ``webp:method=abc``
    or ``avif:threads=1.5`` is an error naming the codec and option, never truncated."""
    what = f"codec {codec!r}: option {option}={value!r}"
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number") from None
    if not number.is_integer():
        raise ValueError(f"{what} must be a whole number")
    n = int(number)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise ValueError(f"{what} must be in {lo}..{hi}")
    return n


def bool_option(codec: str, option: str, value: Any) -> bool:
    """A yes/no codec option, checked: ``jpeg:optimize=flase`` is an error, not True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"codec {codec!r}: option {option}={value!r} must be true or false")


# The rate_param of rate-matched jobs (--target-bpp); no codec may call its own parameter
# this, or its grid rows could not be told from rate-matched ones.
MATCHED_RATE_PARAM = "target_bpp"


class Codec(abc.ABC):
    """Base class of every codec.

    Subclasses set ``name`` (the registry key), ``rate_param`` (what the rate grid
    means, e.g. "quality" or "qp"), ``default_rates`` and, when the rate parameter
    has a finite range, ``rate_range`` (used by rate matching). Constructor keyword
    arguments are the codec's options (``jpeg:subsampling=444`` on the command line).
    """

    name: ClassVar[str]
    rate_param: ClassVar[str] = "quality"
    default_rates: ClassVar[tuple[float, ...]] = ()
    rate_range: ClassVar[tuple[float, float] | None] = None
    # The values the codec accepts, where wider than the range rate matching searches
    # (JPEG XL's lossless 100, JPEG 2000 targets up to 24 bpp). None: rate_range.
    accepted_rates: ClassVar[tuple[float, float] | None] = None
    # True when only the listed rate points exist (e.g. one trained model each): rate matching
    # then picks the nearest of them instead of searching rate_range.
    discrete_rates: ClassVar[bool] = False
    # True when the codec rounds its rate parameter to a whole number (JPEG quality, QP, zlib
    # level): a fractional grid value is then rejected instead of recorded under a rate the
    # codec did not use. None: not declared (rate matching then judges from rate_param).
    rate_is_integer: ClassVar[bool | None] = None
    # True when a higher rate parameter gives a larger bitstream (quality); False for QP-like.
    rate_increases_bits: ClassVar[bool] = True
    # True when the rate parameter is in bits per pixel of the image the codec is given (JPEG
    # 2000's rate control): a pipeline that downscales first scales it to its smaller image.
    rate_is_bpp: ClassVar[bool] = False
    lossless: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"codec {self.name!r} takes no options, got {sorted(options)}")
        self.options: dict[str, Any] = {}

    @classmethod
    def availability(cls) -> Availability:
        """Whether this codec can run here. Never raises."""
        return Availability.yes()

    def availability_here(self) -> Availability:
        """Whether this configured codec can run (its options may point at tools); default: the class's."""
        return type(self).availability()

    @abc.abstractmethod
    def version(self) -> str:
        """Library or tool version, or the weights' sha256: what makes results reproducible."""

    @abc.abstractmethod
    def encode(self, image: np.ndarray, rate: float) -> bytes:
        """HxWx3 uint8 RGB -> self-contained bitstream."""

    @abc.abstractmethod
    def decode(self, bitstream: bytes) -> np.ndarray:
        """Bitstream -> HxWx3 uint8 RGB of the original size."""

    # Learned codecs override these; the harness groups their jobs and calls them batched.
    uses_device: ClassVar[bool] = False

    def label(self) -> str:
        """Name plus non-default options, as it appears in results (``jpeg:subsampling=444``)."""
        if not self.options:
            return self.name
        opts = ":".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}:{opts}"

    def check_rate(self, rate: float) -> None:
        """Raise ValueError when ``rate`` is not a value this codec codes as given: outside
        ``accepted_rates`` (default ``rate_range``), or fractional where it rounds (``rate_is_integer``). Runs when a run is
        planned, so a grid like ``-q 500`` fails at once, naming the codec, instead of every job
        being recorded under a rate the codec clamped or rounded."""
        what = f"{self.label()}: {self.rate_param} {rate:g}"
        if not np.isfinite(rate):
            raise ValueError(f"{what} is not a finite number")
        limits = self.accepted_rates or self.rate_range
        if limits is not None:
            lo, hi = limits
            if not lo <= rate <= hi:
                raise ValueError(f"{what} is outside the codec's range {lo:g}..{hi:g}")
        if self.rate_is_integer and rate != round(rate):
            raise ValueError(f"{what}: the codec takes whole numbers only")

    def extra_columns(self) -> dict[str, Any]:
        """Extra per-job values recorded after each encode (e.g. a model's own rate estimate)."""
        return {}

    def extra_metrics(self, original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        """Extra metric columns computed on (original, decoded), e.g. a protocol's cropped-border PSNR.
        A ``"notes"`` entry (text or a list of texts), e.g. why a value is NaN, goes to the job's notes."""
        return {}

    def __repr__(self) -> str:
        return f"<codec {self.label()}>"


class TorchCodec(Codec):
    """Learned codecs: batched encode/decode on a torch device, one model load per worker."""

    uses_device: ClassVar[bool] = True

    def __init__(self, device: str = "cpu", **options: Any) -> None:
        super().__init__(**options)
        self.device = device

    def to(self, device: str) -> "TorchCodec":
        self.device = device
        return self

    def encode_batch(self, images: Sequence[np.ndarray], rate: float) -> list[bytes]:
        """Encode several images at one rate point; default loops over ``encode``.

        A codec that overrides this and has extra columns sets ``self.last_batch_extras`` to one
        dict per image (``extra_columns()`` only describes the last image encoded)."""
        out, extras = [], []
        for im in images:
            out.append(self.encode(im, rate))
            extras.append(dict(self.extra_columns()))
        self.last_batch_extras = extras
        return out

    def decode_batch(self, bitstreams: Sequence[bytes]) -> list[np.ndarray]:
        return [self.decode(b) for b in bitstreams]


def result_version(codec: Codec) -> str:
    """The version a result is filed under (job and cache keys, ``codec_version``, run.json):
    ``codec.version()``, plus the device kind for codecs that run on a torch device, whose pixels
    (float kernels) and times depend on it: a run on cuda must not reuse results, or report
    timings, measured on the cpu."""
    version = codec.version()
    if not isinstance(version, str):  # it keys jobs and the cache and is written to results: text only
        raise ValueError(f"codec {codec.label()!r}: version() returned {version!r}, not a string "
                         "(a library version or weights hash)")
    if not getattr(codec, "uses_device", False):
        return version
    return f"{version} on {str(getattr(codec, 'device', 'cpu')).split(':')[0]}"


def check_image(image: np.ndarray, codec: str = "") -> None:
    """Raise a clear error unless ``image`` is HxWx3 uint8."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        raise CodecError(f"{codec or 'codec'}: expected an HxWx3 uint8 RGB image, got {got}")
