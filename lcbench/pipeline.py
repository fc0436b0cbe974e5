"""Pipelines: pre/post steps around any registered codec, usable wherever a codec is.

Syntax: ``step+step+codec``, steps first, applied left to right before encoding and right to
left after decoding, e.g. ``bicubic-x2+jpeg``, ``comcnn+jpeg``, ``lanczos-x4+webp:method=4``.
Each part takes options like a codec spec (``comcnn:weights=my.pt+jpeg:subsampling=444``);
parts are split on ``+`` first, so a ``+`` cannot appear inside an option value.

A pipeline is a codec: its label is the full spec; its rate grid, rate parameter, rate
range and direction are the inner codec's; ``version()`` joins every step's version
(weights hash for learned steps) with the inner codec's and the pipeline bitstream format
(``pipeline-format N``: results coded in an older header format are stale). Its bitstream is a small header
followed by the inner codec's bitstream:

    byte 0        format tag 0xB8 (format 3; 0xB7 was formats 1 and 2, refused as older)
    bytes 1-2     first two bytes of sha256 of the step chain: the step labels and the inner codec's
                  label, less the options naming weights files (a learned step's ``weights``, a
                  model-per-rate codec's ``weights_dir``), so decoding with other steps or another
                  inner codec fails clearly, and the same weights at another path decode
    varint H, W   original size (LEB128)
    per step      a learned step (one whose weights have a sha256): 4 bytes, the first of that
                  sha256 (decoding with other weights fails clearly; a model-per-rate inner codec
                  tags its own bitstream); then varint length + the step's side information
                  (usually length 0)
    rest          the inner codec's bitstream

The harness counts bpp on all of it against the original image's pixels. Any size
round-trips: the image is padded (edge replicate) to a multiple of the product of the
steps' scales, processed, and the decoded result cropped back.

Steps live in their own registry (``steps``), filled like the codec registry: built-in
modules, the ``lcbench.steps`` entry-point group, and ``--plugin file.py`` files using
``@register_step``.
"""
from __future__ import annotations

import abc
import functools
import hashlib
import math
from typing import Any, Callable, ClassVar

import numpy as np

from .codec import Availability, Codec, CodecError, TorchCodec, check_image
from .registry import Registry, _origin_of, check_name, codecs, parse_codec_spec, settle_name
from .resample import pad_to_multiple

STEP_MODULES = ("lcbench_codecs.rescale", "lcbench_codecs.comcnn")
STEP_ENTRY_POINT_GROUP = "lcbench.steps"
FORMAT_TAG = 0xB8
OLD_FORMAT_TAG = 0xB7  # formats 1 and 2
# Header format, part of Pipeline.version(): 3 = a learned step's weights are tagged by content and
# the chain check leaves out weights paths (format 2 checked only sha256(label), label holding the
# weights *path*: other weights in the same file decoded silently to a wrong image, and the same
# weights at another path were refused); 2 = the 2-byte check covers the inner codec's label too
# (format 1 covered only the steps, so another inner codec's bitstream decoded without error).
PIPELINE_FORMAT = 3
WEIGHTS_TAG_BYTES = 4


class Step(abc.ABC):
    """A pre/post processing step: ``forward`` before the inner codec, ``inverse`` after it.

    ``scale``: the input's sides must be multiples of it (the pipeline pads for that); a
    downscaling step divides the size by it. Constructor keyword arguments are the step's
    options; steps with ``uses_device`` also receive ``device``.
    """

    name: ClassVar[str]
    scale: ClassVar[int] = 1
    uses_device: ClassVar[bool] = False
    description: ClassVar[str] = ""
    # Options that name a learned step's weights file: the bitstream's step-chain check leaves them
    # out (the header tags the weights by content instead), so only the weights' bytes count.
    weights_options: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"step {self.name!r} takes no options, got {sorted(options)}")
        self.options: dict[str, Any] = {}

    @classmethod
    def availability(cls) -> Availability:
        """Whether this step can run here. Never raises."""
        return Availability.yes()

    def availability_here(self) -> Availability:
        """Whether this configured step (options, and after ``bind`` the inner codec, e.g. the
        weights file it picked) can run here; default: the class's. Never raises."""
        return type(self).availability()

    @abc.abstractmethod
    def version(self) -> str:
        """Library version, or for a learned step ``weights-sha256:<64 hex digits>`` of its weights
        (then its bitstreams carry a tag of those weights, see ``weights_sha256``)."""

    def weights_sha256(self) -> str | None:
        """The sha256 (hex) of the weights this step computes with, or None for a step without
        weights. Default: read from ``version()`` when it is ``weights-sha256:<hex>``. A pipeline
        writes its first 4 bytes into the header and refuses to decode with other weights."""
        words = self.version().split()
        head = words[0] if words else ""
        if head.startswith("weights-sha256:"):
            digest = head[len("weights-sha256:"):].lower()
            if len(digest) == 64 and all(ch in "0123456789abcdef" for ch in digest):
                return digest
        return None

    def check_label(self) -> str:
        """What the bitstream's step-chain check covers: the label, less the options naming the
        weights file when the weights are tagged by content (their path does not matter)."""
        if self.weights_sha256() is None:
            return self.label()
        return _canonical(self.name, {k: v for k, v in self.options.items() if k not in self.weights_options})

    @abc.abstractmethod
    def forward(self, image: np.ndarray) -> tuple[np.ndarray, bytes]:
        """HxWx3 uint8 (sides multiples of ``scale``) -> (image for the next stage, side information)."""

    @abc.abstractmethod
    def inverse(self, image: np.ndarray, side: bytes, height: int, width: int) -> np.ndarray:
        """The next stage's decoded image -> height x width x 3 uint8 (this step's input size)."""

    def bind(self, inner: Codec) -> None:
        """Called once with the pipeline's inner codec (e.g. to pick weights trained with it)."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.scale, width // self.scale

    def to(self, device: str) -> "Step":
        return self

    def label(self) -> str:
        if not self.options:
            return self.name
        return self.name + "".join(f":{k}={v}" for k, v in sorted(self.options.items()))


def check_step_class(key: str, c: Any) -> None:
    """What a step class must be, checked when it is registered (``@register_step``) or loaded (entry point)."""
    if not (isinstance(c, type) and issubclass(c, Step)):
        raise TypeError(f"{getattr(c, '__name__', c)!r} ({type(c).__name__}) is not a subclass of "
                        "lcbench.pipeline.Step")
    settle_name("step", key, c)
    if not isinstance(c.scale, int) or isinstance(c.scale, bool) or c.scale < 1:
        raise ValueError(f"step {key!r} ({c.__name__}): scale {c.scale!r} must be a whole number >= 1")


steps: Registry[type] = Registry("step", STEP_MODULES, STEP_ENTRY_POINT_GROUP, check=check_step_class)


def register_step(cls: type | None = None, *, name: str | None = None) -> Callable[[type], type] | type:
    """Class decorator: ``@register_step`` registers a Step under ``cls.name`` (or ``name``, which the
    class then carries; it must not set another ``name`` of its own)."""

    def wrap(c: type) -> type:
        key = name or getattr(c, "name", None)
        try:
            check_name("step", key)
            check_step_class(key, c)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"@register_step: {exc}") from None
        steps.register(key, c, origin=_origin_of(c))
        return c

    return wrap(cls) if cls is not None else wrap


# ---------------------------------------------------------------- spec parsing
def split_pipeline_spec(spec: str) -> tuple[list[tuple[str, dict[str, Any]]], tuple[str, dict[str, Any]]]:
    """``"bicubic-x2+jpeg:subsampling=444"`` -> ([("bicubic-x2", {})], ("jpeg", {"subsampling": 444}))."""
    parts = [p.strip() for p in spec.split("+")]
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"bad pipeline spec {spec!r}: expected step+...+codec, e.g. bicubic-x2+jpeg")
    parsed = [parse_codec_spec(p) for p in parts]
    return parsed[:-1], parsed[-1]


def _canonical(name: str, options: dict[str, Any]) -> str:
    return name + "".join(f":{k}={v}" for k, v in sorted(options.items()))


def _max_bpp_rate(inner: Any, multiple: int) -> float | None:
    """For a bpp-rated inner codec behind steps that shrink by ``multiple``: the largest pipeline
    rate whose scaled rate (at most rate x multiple^2, see Pipeline.encode) the inner codec accepts."""
    if not getattr(inner, "rate_is_bpp", False) or multiple <= 1:
        return None
    limits = getattr(inner, "accepted_rates", None) or inner.rate_range
    return None if limits is None else float(limits[1]) / multiple ** 2


def _rate_attributes(inner: Any, multiple: int) -> dict[str, Any]:
    """A pipeline's rate grid, parameter, ranges and direction: its inner codec's (a class, or a
    configured instance whose grid may differ from its class's, e.g. weights_dir's model ids).
    A bpp-rated inner codec is asked for up to ``multiple``^2 times the pipeline's rate, so the
    pipeline's ranges and grid stop where that leaves the inner codec's accepted range."""
    rate_range = inner.rate_range
    accepted = getattr(inner, "accepted_rates", None)
    grid = tuple(inner.default_rates)
    top = _max_bpp_rate(inner, multiple)
    if top is not None:
        lo = float((accepted or rate_range)[0])
        accepted = (lo, top)
        if rate_range is not None:
            rate_range = (float(rate_range[0]), max(float(rate_range[0]), min(float(rate_range[1]), top)))
        grid = tuple(r for r in grid if r <= top)
    return {
        "rate_param": inner.rate_param,
        "default_rates": grid,
        "rate_range": rate_range,
        "accepted_rates": accepted,
        "discrete_rates": bool(getattr(inner, "discrete_rates", False)),  # --target-bpp: nearest model
        "rate_is_integer": getattr(inner, "rate_is_integer", None),
        "rate_increases_bits": inner.rate_increases_bits,
        "rate_is_bpp": bool(getattr(inner, "rate_is_bpp", False)),
    }


@functools.lru_cache(maxsize=None)
def pipeline_class(spec: str) -> type["Pipeline"]:
    """A Pipeline subclass for one spec; class attributes (rate grid, device use) come from its parts."""
    step_specs, (inner_name, inner_opts) = split_pipeline_spec(spec)
    step_classes = [steps.get(n) for n, _ in step_specs]  # unknown names fail here, with suggestions
    inner_cls = codecs.get(inner_name)
    if getattr(inner_cls, "rate_param", None) is None:
        raise ValueError(f"pipeline {spec!r}: {inner_name!r} is not a codec")
    canonical = "+".join([_canonical(n, o) for n, o in step_specs] + [_canonical(inner_name, inner_opts)])
    attrs = {
        "name": canonical,
        # the class's; an instance takes its configured inner codec's
        **_rate_attributes(inner_cls, math.prod(c.scale for c in step_classes)),
        "lossless": False,
        "uses_device": any(c.uses_device for c in step_classes) or bool(getattr(inner_cls, "uses_device", False)),
        "description": f"pipeline: {' then '.join(n for n, _ in step_specs)} around {inner_name}",
        "step_specs": tuple((n, dict(o)) for n, o in step_specs),
        "step_classes": tuple(step_classes),
        "inner_spec": (inner_name, dict(inner_opts)),
        "inner_class": inner_cls,
    }
    return type(f"Pipeline[{canonical}]", (Pipeline,), attrs)


# ---------------------------------------------------------------- header
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CodecError(f"pipeline bitstream truncated while reading {what}")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


class Pipeline(TorchCodec):
    """Steps around an inner codec; built by ``pipeline_class(spec)``, not used directly."""

    step_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = ()
    step_classes: ClassVar[tuple[type, ...]] = ()
    inner_spec: ClassVar[tuple[str, dict[str, Any]]]
    inner_class: ClassVar[type]

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device=device)
        if not self.step_classes:
            raise TypeError("Pipeline is built from a spec: use lcbench.registry.create_codec('bicubic-x2+jpeg')")
        self.steps: list[Step] = []
        for (name, opts), cls in zip(self.step_specs, self.step_classes):
            kwargs = {"device": device, **opts} if cls.uses_device else dict(opts)
            try:
                self.steps.append(cls(**kwargs))
            except TypeError as exc:
                raise ValueError(f"bad options for step {name!r}: {exc}") from exc
        inner_name, inner_opts = self.inner_spec
        kwargs = {"device": device, **inner_opts} if getattr(self.inner_class, "uses_device", False) else dict(inner_opts)
        try:
            self.inner: Codec = self.inner_class(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ValueError) and inner_name in str(exc):
                raise
            raise ValueError(f"bad options for codec {inner_name!r}: {exc}") from exc
        for step in self.steps:
            step.bind(self.inner)
        self.multiple = math.prod(s.scale for s in self.steps)
        self._header_tags: tuple[bytes, list[bytes | None]] | None = None  # chain check, per-step weights tags
        # The configured inner codec's rate rules, not its class's: a learned codec with
        # weights_dir=DIR has the model ids found in DIR as its grid (the class's grid named models
        # the folder lacks: 'rate 3 is not a model id', and --target-bpp tried a missing model 3).
        for attr, value in _rate_attributes(self.inner, self.multiple).items():
            setattr(self, attr, value)

    @classmethod
    def availability(cls) -> Availability:
        for part in (*cls.step_classes, cls.inner_class):
            avail = part.availability()
            if not avail:
                return Availability.no(f"{part.name}: {avail.reason}", avail.fix)
        return Availability.yes()

    def availability_here(self) -> Availability:
        for step in self.steps:  # configured and bound: e.g. comcnn's weights file for this inner codec
            avail = step.availability_here()
            if not avail:
                return Availability.no(f"{step.name}: {avail.reason}", avail.fix)
        avail = self.inner.availability_here()  # the inner codec's tool-path options count
        return avail if avail else Availability.no(f"{self.inner.name}: {avail.reason}", avail.fix)

    def label(self) -> str:
        return "+".join([s.label() for s in self.steps] + [self.inner.label()])

    def check_rate(self, rate: float) -> None:
        """The inner codec's rule (e.g. a learned codec's model ids), under this pipeline's label; for a
        bpp-rated inner codec also on the rate it is asked for (up to rate x S^2 after a x S shrink:
        JPEG 2000 clamped 32 bpp to its 24, and bicubic-x4+jpeg2000 at 2 and 8 gave one bitstream)."""
        if self.rate_is_bpp and self.multiple > 1:
            scaled = rate * self.multiple ** 2
            try:
                self.inner.check_rate(scaled)
            except ValueError as exc:
                top = _max_bpp_rate(self.inner, self.multiple)
                most = f"; this pipeline's {self.rate_param} is at most {top:g}" if top is not None else ""
                raise ValueError(f"{self.label()}: {self.rate_param} {rate:g} asks {self.inner.label()} for up to "
                                 f"{scaled:g} bpp of its x{self.multiple} downscaled image ({self.multiple ** 2}x "
                                 f"fewer pixels), which it does not accept ({exc}){most}") from None
        try:
            self.inner.check_rate(rate)
        except ValueError as exc:
            raise ValueError(f"{self.label()}: {exc}") from None

    def preload(self, rate: float) -> None:
        """Load the learned steps' networks (and a learned inner codec's model) now: the runner
        calls this before its clock starts, so the first job's time is not a model load."""
        for step in self.steps:
            preload = getattr(step, "preload", None)
            if callable(preload):
                preload()
        inner = getattr(self.inner, "preload", None)
        if callable(inner) and not self.rate_is_bpp:  # a bpp rate is scaled per image in encode()
            inner(rate)

    def version(self) -> str:
        return " | ".join([f"{s.label()} {s.version()}" for s in self.steps] + [f"{self.inner.label()} {self.inner.version()}"]
                          + [f"pipeline-format {PIPELINE_FORMAT}"])

    def to(self, device: str) -> "Pipeline":
        super().to(device)
        for s in self.steps:
            s.to(device)
        if isinstance(self.inner, TorchCodec):
            self.inner.to(device)
        return self

    @property
    def scale(self) -> int:
        """Total downscale factor (the border the SR metrics crop)."""
        return self.multiple

    def _inner_check_label(self) -> str:
        """The inner codec's label for the chain check: a model-per-rate codec's ``weights_dir`` is
        left out, as its own bitstream names the model and tags its weights (and refuses others)."""
        from .model_per_rate import ModelPerRateCodec

        if isinstance(self.inner, ModelPerRateCodec):
            return _canonical(self.inner.name, {k: v for k, v in self.inner.options.items() if k != "weights_dir"})
        return self.inner.label()

    def header_tags(self) -> tuple[bytes, list[bytes | None]]:
        """(2-byte step-chain check, per step its 4-byte weights tag or None). Computed when first
        coding (a learned step hashes its weights file then, once per instance)."""
        if self._header_tags is None:
            chain = "+".join([s.check_label() for s in self.steps] + [self._inner_check_label()])
            shas = [s.weights_sha256() for s in self.steps]
            self._header_tags = (hashlib.sha256(chain.encode()).digest()[:2],
                                 [bytes.fromhex(sha[:2 * WEIGHTS_TAG_BYTES]) if sha else None for sha in shas])
        return self._header_tags

    def _stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Input size of each step, then the inner codec's input size."""
        h = -(-height // self.multiple) * self.multiple
        w = -(-width // self.multiple) * self.multiple
        sizes = [(h, w)]
        for s in self.steps:
            h, w = s.output_size(h, w)
            sizes.append((h, w))
        return sizes

    def encode(self, image: np.ndarray, rate: float) -> bytes:
        check_image(image, self.label())
        height, width = image.shape[:2]
        x = pad_to_multiple(image, self.multiple)
        sides = []
        sizes = self._stage_sizes(height, width)
        for step, size in zip(self.steps, sizes[1:]):
            x, side = step.forward(x)
            if x.shape != (*size, 3) or x.dtype != np.uint8:
                raise CodecError(f"step {step.label()} returned {x.dtype} {x.shape}, expected uint8 {(*size, 3)}")
            sides.append(side)
        chain, weights_tags = self.header_tags()
        header = bytearray([FORMAT_TAG]) + chain + _varint(height) + _varint(width)
        for side, weights_tag in zip(sides, weights_tags):
            header += (weights_tag or b"") + _varint(len(side)) + side
        inner_rate = rate
        if self.rate_is_bpp:
            # The pipeline's rate is bpp of the original image; the inner codec's rate control
            # counts its own (smaller) image, so ask it for proportionally more per pixel.
            inner_rate = rate * (height * width) / (sizes[-1][0] * sizes[-1][1])
            try:  # check_rate covers the largest scaled rate; this covers a caller that skipped it
                self.inner.check_rate(inner_rate)
            except ValueError as exc:
                raise CodecError(f"{self.label()}: {self.rate_param} {rate:g} asks {self.inner.label()} for "
                                 f"{inner_rate:g} bpp of its smaller image: {exc}") from None
        return bytes(header) + self.inner.encode(np.ascontiguousarray(x), inner_rate)

    def decode(self, bitstream: bytes) -> np.ndarray:
        if len(bitstream) >= 1 and bitstream[0] == OLD_FORMAT_TAG:
            raise CodecError(f"{self.label()}: the bitstream was written in an older pipeline format (1 or 2; this "
                             f"lcbench writes and reads format {PIPELINE_FORMAT}): encode the image again")
        if len(bitstream) < 3 or bitstream[0] != FORMAT_TAG:
            raise CodecError(f"{self.label()}: not a pipeline bitstream (bad first byte)")
        chain, weights_tags = self.header_tags()
        if bitstream[1:3] != chain:
            raise CodecError(f"{self.label()}: the bitstream was written by a pipeline with other steps or "
                             f"another codec")
        height, pos = _read_varint(bitstream, 3, "the height")
        width, pos = _read_varint(bitstream, pos, "the width")
        if height < 1 or width < 1:
            raise CodecError(f"{self.label()}: bad image size {width}x{height} in the header")
        sides = []
        for step, weights_tag in zip(self.steps, weights_tags):
            if weights_tag is not None:
                written = bitstream[pos:pos + WEIGHTS_TAG_BYTES]
                if len(written) < WEIGHTS_TAG_BYTES:
                    raise CodecError(f"{self.label()}: bitstream truncated in {step.label()}'s weights tag")
                if written != weights_tag:
                    raise CodecError(f"{self.label()}: the bitstream was written with other {step.name} weights "
                                     f"(weights tag {written.hex()}; the weights of {step.label()} have sha256 "
                                     f"{weights_tag.hex()}...): decode it with the weights it was encoded with")
                pos += WEIGHTS_TAG_BYTES
            n, pos = _read_varint(bitstream, pos, f"{step.label()}'s side information")
            if pos + n > len(bitstream):
                raise CodecError(f"{self.label()}: bitstream truncated in {step.label()}'s side information")
            sides.append(bitstream[pos:pos + n])
            pos += n
        sizes = self._stage_sizes(height, width)
        x = self.inner.decode(bitstream[pos:])
        if x.shape != (*sizes[-1], 3):
            raise CodecError(f"{self.label()}: {self.inner.label()} decoded {x.shape}, expected {(*sizes[-1], 3)}")
        for step, side, size in zip(reversed(self.steps), reversed(sides), reversed(sizes[:-1])):
            x = step.inverse(x, side, *size)
            if x.shape != (*size, 3) or x.dtype != np.uint8:
                raise CodecError(f"step {step.label()} inverse returned {x.dtype} {x.shape}, expected uint8 {(*size, 3)}")
        return np.ascontiguousarray(x[:height, :width])

    def extra_metrics(self, original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        """The SR papers' Y PSNR/SSIM with an S-pixel border (S = total scale), for rescaling pipelines."""
        if self.multiple <= 1:
            return {}
        from .sr_metrics import sr_metrics

        try:
            values: dict[str, Any] = sr_metrics(original, decoded, self.multiple)
        except ValueError as exc:  # image too small for the border crop
            return {"psnr_y_sr": math.nan, "ssim_y_sr": math.nan, "notes": f"no psnr_y_sr/ssim_y_sr: {exc}"}
        if math.isnan(values["ssim_y_sr"]):
            values["notes"] = "ssim_y_sr needs at least 11x11 px left after the border crop"
        return values
