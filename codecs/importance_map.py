"""``importance_map``: the content-weighted learned codec of Li et al. (CVPR 2018).

The rate parameter is the model id: one shipped network per rate point, trained with a
different rate target r (``codecs/weights/importance_map_<id>.pt``). The bitstream is
self-contained (header with size and model id, range-coded importance map and kept bits);
bpp is measured on it. ``extra_columns()`` records the model's own rate estimate
(kept code bits per pixel, the quantity its rate loss controls) beside it.

Options: ``device`` (cpu/cuda, set by the runner) and ``weights_dir`` (a folder of
``importance_map_<id>.pt`` files, e.g. written by ``lcbench train importance_map``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lcbench.codec import Availability, CodecError, CodecUnavailable, TorchCodec, check_image
from lcbench.learned_batching import group_by_padded_shape, reproducible_synthesis, pad_image, padded
from lcbench.registry import register_codec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MODELS = (1, 2, 3, 4, 5)
_FILE_RE = re.compile(r"^importance_map_(\d+)\.pt$")
PAD_MULTIPLE = 16  # code map (1/8 resolution) with even sides, for the 2x2 coding phases


def weights_path(model_id: int, folder: Path | None = None) -> Path:
    return Path(folder if folder is not None else WEIGHTS_DIR) / f"importance_map_{int(model_id)}.pt"


def _missing_dependency() -> str | None:
    for module, pip in (("torch", "torch"), ("constriction", "constriction")):
        try:
            __import__(module)
        except ImportError:
            return pip
    return None


@register_codec
class ImportanceMap(TorchCodec):
    """Li et al. CVPR 2018 content-weighted codec, reduced width, shipped weights (rate = model id)."""

    name = "importance_map"
    rate_param = "model"
    # Model 2 is left out of the default grid: on Kodak it spends more bits than model 1 (0.121 vs
    # 0.102 bpp) for the same MS-SSIM (0.8207), so it is dominated and makes the RD curve
    # non-monotonic (no BD-rate). It still runs with `-q importance_map=2`.
    default_rates: ClassVar[tuple[float, ...]] = (1.0, 3.0, 4.0, 5.0)
    rate_range = (float(min(SHIPPED_MODELS)), float(max(SHIPPED_MODELS)))
    discrete_rates = True  # a fixed set of models: --target-bpp picks the nearest one
    rate_increases_bits = True
    description = "Li et al. CVPR 2018 importance-map codec (learned, range-coded)"

    def __init__(self, device: str = "cpu", weights_dir: str | None = None) -> None:
        super().__init__(device=device)
        self.weights_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
        if weights_dir:
            self.options["weights_dir"] = str(weights_dir)
            # your own models: the grid is whatever importance_map_<id>.pt files the folder has
            self.default_rates = tuple(float(i) for i in self.model_ids()) or self.default_rates
        self._models: dict[int, Any] = {}  # id -> (network, ContextModel, sha256)
        self._load_lock = threading.Lock()  # decode_host may run in the runner's coding thread
        self.last_estimate: dict[str, float] = {}
        self.last_batch_extras: list[dict[str, float]] = []
        self._version: str | None = None
        self._availability: Availability | None = None

    # -- discovery and checks --------------------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        missing = _missing_dependency()
        if missing:
            return Availability.no(f"importance_map needs the Python package {missing!r}", f"pip install {missing}")
        from lcbench.learned.weights import WeightsError, read

        for model_id in SHIPPED_MODELS:
            path = weights_path(model_id)
            try:
                read(path)
            except WeightsError as exc:
                return Availability.no(str(exc), "reinstall lcbench from a full checkout (codecs/weights/*.pt), "
                                       "or train weights with `lcbench train importance_map`")
        return Availability.yes()

    def availability_here(self) -> Availability:
        """With ``weights_dir``: every importance_map_<id>.pt there must load (checked once, before
        any job runs, so a corrupt file is bad input naming the file, not an error in every job).
        Without it: the class's check of the shipped weights."""
        if not self.options.get("weights_dir"):
            return type(self).availability()
        if self._availability is None:
            self._availability = self._check_weights_dir()
        return self._availability

    def _check_weights_dir(self) -> Availability:
        missing = _missing_dependency()
        if missing:
            return Availability.no(f"importance_map needs the Python package {missing!r}", f"pip install {missing}")
        from lcbench.learned.entropy import ContextModel, EntropyModelError
        from lcbench.learned.weights import WeightsError, load_model

        ids = self.model_ids()
        if not ids:
            return Availability.no(f"importance_map: no importance_map_<id>.pt weights in {self.weights_dir}",
                                   "train some with `lcbench train importance_map`")
        for model_id in ids:
            path = weights_path(model_id, self.weights_dir)
            try:
                net, tables = load_model(path)
                ContextModel(tables, net.config.n, net.config.levels)
            except EntropyModelError as exc:
                return Availability.no(f"importance_map weights file {path}: {exc}",
                                       "train it again with `lcbench train importance_map`")
            except WeightsError as exc:
                return Availability.no(str(exc), "replace or remove that file (`lcbench train importance_map` "
                                       "writes valid ones)")
        return Availability.yes()

    def model_ids(self) -> list[int]:
        """Model ids present in the weights folder."""
        if not self.weights_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.weights_dir.iterdir() if (m := _FILE_RE.match(p.name)))

    def check_rate(self, rate: float) -> None:
        """A rate is a model id: one of the weights files this instance can load."""
        ids = self.model_ids()
        if rate not in ids:
            raise ValueError(f"{self.label()}: rate {rate:g} is not a model id (available: {ids})")

    def version(self) -> str:
        """sha256 over the weights files of every model this codec instance can use, and the bitstream format."""
        if self._version is None:
            self._version = self._weights_hash()
        return self._version

    def _weights_hash(self) -> str:
        ids = self.model_ids() if self.options else list(SHIPPED_MODELS)
        if not ids:
            raise CodecUnavailable(f"importance_map: no importance_map_<id>.pt weights in {self.weights_dir}")
        from lcbench.learned.weights import sha256_of

        lines = []
        for i in ids:
            path = weights_path(i, self.weights_dir)
            if not path.is_file():
                raise CodecUnavailable(f"importance_map: weights file {path} is missing")
            lines.append(f"{i}:{sha256_of(path)}")
        from lcbench.learned.bitstream import FORMAT_VERSION

        # the bitstream format is part of the version: cached results of an older format
        # (different bytes, so a different bpp) must not be reused
        return f"weights-sha256:{hashlib.sha256(chr(10).join(lines).encode()).hexdigest()} bitstream-v{FORMAT_VERSION}"

    def _model(self, model_id: int) -> tuple[Any, Any, str]:
        hit = self._models.get(model_id)
        if hit is not None:
            return hit
        with self._load_lock:
            return self._load(model_id)

    def _load(self, model_id: int) -> tuple[Any, Any, str]:
        if model_id not in self._models:
            missing = _missing_dependency()
            if missing:
                raise CodecUnavailable(f"importance_map needs {missing!r}: pip install {missing}")
            from lcbench.learned.entropy import ContextModel, EntropyModelError
            from lcbench.learned.weights import WeightsError, load_model, sha256_of

            path = weights_path(model_id, self.weights_dir)
            try:
                net, tables = load_model(path)
                ctx = ContextModel(tables, net.config.n, net.config.levels)
            except (WeightsError, EntropyModelError) as exc:
                raise CodecUnavailable(f"importance_map model {model_id}: {exc}") from exc
            self._models[model_id] = (net.to(self.device), ctx, sha256_of(path))
        return self._models[model_id]

    def to(self, device: str) -> "ImportanceMap":
        super().to(device)
        for net, _, _ in self._models.values():
            net.to(device)
        return self

    def _model_id(self, rate: float) -> int:
        model_id = int(round(float(rate)))
        if model_id != float(rate) or model_id < 0 or model_id > 255:
            raise CodecError(f"importance_map: rate {rate!r} is not a model id (one of {self.model_ids()})")
        if not weights_path(model_id, self.weights_dir).is_file():
            raise CodecUnavailable(f"importance_map: no model {model_id}: {weights_path(model_id, self.weights_dir)} "
                                   f"is missing (available ids: {self.model_ids()})")
        return model_id

    # -- coding ----------------------------------------------------------------------------
    def encode(self, image: np.ndarray, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, bitstream: bytes) -> np.ndarray:
        return self.decode_batch([bitstream])[0]

    def encode_batch(self, images: Sequence[np.ndarray], rate: float) -> list[bytes]:
        """Encode images at one model; images of equal padded size share one network pass."""
        bitstreams, estimates = self.encode_host(self.encode_device(images, rate))
        self.last_estimate = estimates[-1] if estimates else {}
        self.last_batch_extras = estimates  # per image, read by the runner after encode_batch
        return bitstreams

    def decode_batch(self, bitstreams: Sequence[bytes]) -> list[np.ndarray]:
        return self.decode_device(self.decode_host(bitstreams))[0]

    # -- staged coding (the runner's device pipeline) -----------------------------------------
    # encode_batch = encode_host(encode_device(...)) and decode_batch = decode_device(decode_host(...)).
    # The *_device stages hold all torch work and run in the caller's thread; the *_host stages
    # are the range coding (numpy + constriction, no torch), which the runner may run in a
    # background thread while the device works on the next batch. The same functions run in
    # both cases, so the bytes and pixels are the same.

    def encode_device(self, images: Sequence[np.ndarray], rate: float) -> "_Analysed":
        """Network analysis on the device -> code bits and importance levels on the host."""
        import torch
        from lcbench.learned.model import levels_of

        for im in images:
            check_image(im, self.name)
        model_id = self._model_id(rate)
        net, _, _ = self._model(model_id)
        levels = net.config.levels
        groups = []
        for _, idx in group_by_padded_shape([im.shape[:2] for im in images], PAD_MULTIPLE).items():
            hwc = _to_device(torch.from_numpy(np.stack([pad_image(images[i], PAD_MULTIPLE) for i in idx])), self.device)
            with torch.inference_mode():
                code, p = net.analyse(net.scale_in(hwc.permute(0, 3, 1, 2)))
                bits, q = _to_host((code > 0.5).to(torch.uint8), levels_of(p, levels)[:, 0])
            groups.append((idx, bits.numpy(), q.numpy()))
        return _Analysed(model_id, [im.shape[:2] for im in images], groups)

    def encode_host(self, analysed: "_Analysed") -> tuple[list[bytes], list[dict[str, float]]]:
        """Range coding and packing -> (bitstreams, per-image model estimates). No torch work."""
        from lcbench.learned.bitstream import Header, pack

        net, ctx, sha = self._model(analysed.model_id)
        n, levels = net.config.n, net.config.levels
        out: list[bytes | None] = [None] * len(analysed.sizes)
        estimates: list[dict[str, float]] = [{}] * len(analysed.sizes)
        for idx, bits, q in analysed.groups:
            for j, i in enumerate(idx):
                h, w = analysed.sizes[i]
                words = ctx.encode(bits[j], q[j])
                out[i] = pack(Header(analysed.model_id, bytes.fromhex(sha[:8]), h, w), words)
                kept = int((np.arange(n)[:, None, None] * levels < n * (q[j][None] + 1)).sum())
                estimates[i] = {"est_bpp": kept / (h * w), "kept_fraction": kept / bits[j].size}
        return [b for b in out if b is not None], estimates

    def decode_host(self, bitstreams: Sequence[bytes]) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        """Parse and range-decode -> [(header, bits, levels)]. No torch work."""
        from lcbench.learned.bitstream import BitstreamError, unpack

        parsed = []
        for data in bitstreams:
            try:
                header, words = unpack(bytes(data))
            except BitstreamError as exc:
                raise CodecError(f"importance_map: {exc}") from exc
            net, ctx, sha = self._model(self._model_id(header.model_id))
            if header.weights_tag != bytes.fromhex(sha[:8]):
                raise CodecError(f"importance_map: the bitstream was written with other weights for model "
                                 f"{header.model_id} (tag {header.weights_tag.hex()}, these weights {sha[:8]})")
            hp, wp = padded(header.height, PAD_MULTIPLE), padded(header.width, PAD_MULTIPLE)
            try:
                bits, q = ctx.decode(words, hp // 8, wp // 8)
            except Exception as exc:  # constriction raises on exhausted/garbled streams
                raise CodecError(f"importance_map: corrupt bitstream for model {header.model_id}: {exc}") from exc
            parsed.append((header, bits, q))
        return parsed

    def decode_device(self, parsed: Sequence[tuple[Any, np.ndarray, np.ndarray]], keep_on_device: bool = False
                      ) -> tuple[list[np.ndarray], list[Any] | None]:
        """Synthesis on the device -> (HxWx3 uint8 images, and with ``keep_on_device`` the same
        images as (3,H,W) uint8 tensors still on the device, e.g. for metrics there)."""
        import torch
        from lcbench.learned.model import importance_mask

        results: list[np.ndarray | None] = [None] * len(parsed)
        on_device: list[Any] = [None] * len(parsed)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (header, _, _) in enumerate(parsed):
            groups.setdefault((header.model_id, padded(header.height, PAD_MULTIPLE), padded(header.width, PAD_MULTIPLE)), []).append(i)
        for (model_id, _, _), idx in groups.items():
            net, _, _ = self._model(model_id)
            # uint8 bits and int64 levels travel; the 0/1 masked code is formed on the device (exact)
            bits = _to_device(torch.from_numpy(np.stack([parsed[i][1] for i in idx])), self.device)
            q = _to_device(torch.from_numpy(np.stack([parsed[i][2] for i in idx])), self.device)[:, None]
            with torch.inference_mode(), reproducible_synthesis(self.device):
                mask = importance_mask(q, net.config.n, net.config.levels)
                y = net.synthesise(bits.float() * mask)
                pixels = torch.clamp(torch.round(y * 127.5 + 127.5), 0, 255).to(torch.uint8)
            (host,) = _to_host(pixels.permute(0, 2, 3, 1))
            host = host.numpy()
            for j, i in enumerate(idx):
                h, w = parsed[i][0].height, parsed[i][0].width
                results[i] = np.ascontiguousarray(host[j, :h, :w])
                if keep_on_device:
                    on_device[i] = pixels[j, :, :h, :w]
        return [r for r in results if r is not None], (on_device if keep_on_device else None)

    def extra_columns(self) -> dict[str, Any]:
        """The model's own rate estimate for the last encoded image (kept code bits per pixel)."""
        return dict(self.last_estimate)




@dataclasses.dataclass
class _Analysed:
    """encode_device's output: per padded-size group, the image indices, code bits and levels (host arrays)."""

    model_id: int
    sizes: list[tuple[int, int]]
    groups: list[tuple[list[int], np.ndarray, np.ndarray]]


def _to_device(t: Any, device: str) -> Any:
    """Host -> device; on CUDA through pinned memory without blocking (the copy overlaps queued work)."""
    if str(device).startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _to_host(*tensors: Any) -> tuple[Any, ...]:
    """Device -> host copies; on CUDA into pinned buffers, all queued first, then one synchronisation."""
    import torch

    if not tensors or tensors[0].device.type != "cuda":
        return tuple(t.cpu() for t in tensors)
    out = []
    for t in tensors:
        buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        buf.copy_(t, non_blocking=True)
        out.append(buf)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return tuple(out)


