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
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lcbench.codec import CodecError, check_image
from lcbench.learned_batching import network_batches, pad_image, padded, reproducible_synthesis
from lcbench.model_per_rate import ModelFileError, ModelPerRateCodec
from lcbench.registry import register_codec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PAD_MULTIPLE = 16  # code map (1/8 resolution) with even sides, for the 2x2 coding phases


@register_codec
class ImportanceMap(ModelPerRateCodec):
    """Li et al. CVPR 2018 content-weighted codec, reduced width, shipped weights (rate = model id)."""

    name = "importance_map"
    shipped_models = (1, 2, 3, 4, 5)
    shipped_weights_dir = WEIGHTS_DIR
    # Model 2 is left out of the default grid: on Kodak it spends more bits than model 1 (0.121 vs
    # 0.102 bpp) for the same MS-SSIM (0.8207), so it is dominated and makes the RD curve
    # non-monotonic (no BD-rate). It still runs with `-q importance_map=2`.
    default_rates: ClassVar[tuple[float, ...]] = (1.0, 3.0, 4.0, 5.0)
    rate_range = (1.0, 5.0)
    description = "Li et al. CVPR 2018 importance-map codec (learned, range-coded)"

    def __init__(self, device: str = "cpu", weights_dir: str | None = None) -> None:
        super().__init__(device=device, weights_dir=weights_dir)
        self.last_estimate: dict[str, float] = {}
        self.last_batch_extras: list[dict[str, float]] = []

    @classmethod
    def _read_model(cls, path: Path) -> tuple[Any, Any]:
        """-> (network, ContextModel): the entropy tables must fit the network, or the file is bad."""
        from lcbench.learned.entropy import ContextModel, EntropyModelError
        from lcbench.learned.weights import WeightsError, load_model

        try:
            net, tables = load_model(path)
            ctx = ContextModel(tables, net.config.n, net.config.levels)
            ctx.warm_up()  # numba's kernels load with the model, not in the first timed encode
            return net, ctx
        except EntropyModelError as exc:
            raise ModelFileError(f"importance_map weights file {path}: {exc}") from exc
        except WeightsError as exc:
            raise ModelFileError(str(exc)) from exc

    @classmethod
    def _bitstream_format_version(cls) -> int:
        from lcbench.learned.bitstream import FORMAT_VERSION

        return FORMAT_VERSION

    # -- coding (encode/decode of one image go through these) ---------------------------------
    def encode_batch(self, images: Sequence[np.ndarray], rate: float) -> list[bytes]:
        """Encode images at one model; on CUDA images of equal padded size share one network pass
        (on the CPU one image at a time: see learned_batching.network_batches)."""
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
        for idx in network_batches([im.shape[:2] for im in images], PAD_MULTIPLE, self.device):
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
            self._check_weights_tag(header.model_id, header.weights_tag, sha)
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
        by_model: dict[int, list[int]] = {}
        for i, (header, _, _) in enumerate(parsed):
            by_model.setdefault(header.model_id, []).append(i)
        batches = [(model_id, [idx[j] for j in batch]) for model_id, idx in by_model.items()
                   for batch in network_batches([(parsed[i][0].height, parsed[i][0].width) for i in idx],
                                                PAD_MULTIPLE, self.device)]
        for model_id, idx in batches:
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


