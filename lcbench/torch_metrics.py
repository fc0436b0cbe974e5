"""The metrics of ``lcbench.metrics`` on a torch device (the GPU in ``--device cuda`` runs).

Same values, same keys, same notes as ``metrics.compute_metrics`` (tests check both against
it and against pytorch-msssim / scikit-image): PSNR-RGB and PSNR-Y from exact integer /
float64 sums of squared errors, SSIM and MS-SSIM with the 11-tap Gaussian (sigma 1.5) over
the valid region, per channel then averaged, pytorch-msssim 1.0's pooling (2x2 average,
zero padding on odd sides) and ReLU on the contrast terms.

How: a ``TorchReference`` holds the source image's filtered statistics at every scale on
the device, computed once (in float64) and reused for every decoded version of the image.
Each decoded image then enters as its difference d = y - x from the source (exact in any
float type) and costs one grouped separable convolution per scale (d, d^2 and x*d filtered
together as 9 channels) and float64 sums of the SSIM maps; the algebra is that of
``metrics``' CPU kernel (``_metric_kernels.level_sums``).

Precision: the statistics of d are small where the error is small, so float32 keeps its
precision on flat areas. Filtering y itself in float32 (this module's first formulation)
missed the 1e-5 target on large saturated flat areas: kodim20 (white sky) as JPEG q5 gave
SSIM 1.3e-5 away from float64 references, because every flat pixel rounded E[y^2] - mu^2 the
same way. With d, float32 is within ~1e-7 there on real images (tests check both dtypes), but
not on synthetic flat images with large uniform errors (a constant 255 decoded as 49: 1e-4 of
MS-SSIM), and near-lossless images lose 1 - MS-SSIM to float32's step. The default stays
float64, which costs little on data-centre GPUs (FP64 at half the FP32 rate) and is immune
to cuDNN's choice of convolution algorithm; consumer GPUs (FP64 at 1/32-1/64) should pass
``dtype=torch.float32``. Neither has been timed on a GPU yet:
``benchmarks/learned_throughput.py --metrics --device cuda`` measures both. TF32 is switched
off around the convolutions, or cuDNN would round float32 inputs to a 10-bit mantissa on
Ampere and newer GPUs.

Per-image results stay on the device until the end of a batch: one transfer per batch,
no synchronisation per image.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import (C1, C2, MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, SIGMA, WIN_SIZE, ms_ssim_db,
                      psnr_from_mse)

_CENTRE = 128.0  # subtracted before filtering, as in metrics.py: keeps float32 products small
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)  # BT.601 studio-range luma, as metrics.py


def _gauss_1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 11-tap Gaussian of metrics.py (computed in float64, then cast)."""
    coords = torch.arange(WIN_SIZE, dtype=torch.float64) - WIN_SIZE // 2
    g = torch.exp(-(coords ** 2) / (2 * SIGMA ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


_kernels: dict[tuple[Any, ...], Any] = {}  # per device: filter weights, luma weights


def _kernel_pair(channels: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical (C,1,11,1) and horizontal (C,1,1,11) grouped-convolution weights, cached per device."""
    key = (channels, dtype, str(device))
    pair = _kernels.get(key)
    if pair is None:
        g = _gauss_1d(dtype, device)
        pair = _kernels[key] = (g.view(1, 1, WIN_SIZE, 1).repeat(channels, 1, 1, 1).contiguous(),
                                g.view(1, 1, 1, WIN_SIZE).repeat(channels, 1, 1, 1).contiguous())
    return pair


def _luma_weights(device: torch.device) -> torch.Tensor:
    """BT.601 luma weights as a (3,1,1) float64 tensor, uploaded once per device."""
    key = ("luma", str(device))
    w = _kernels.get(key)
    if w is None:
        w = _kernels[key] = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=device).view(3, 1, 1)
    return w


@contextlib.contextmanager
def _exact_fp32(device: torch.device) -> Iterator[None]:
    """No TF32 in cuDNN convolutions while metrics run (float32 option; restored afterwards for the codecs)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _filter(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian over the valid region: (N,C,H,W) -> (N,C,H-10,W-10)."""
    kv, kh = _kernel_pair(x.shape[1], x.dtype, x.device)
    return F.conv2d(F.conv2d(x, kv, groups=x.shape[1]), kh, groups=x.shape[1])


def _pool(x: torch.Tensor) -> torch.Tensor:
    """pytorch-msssim's downsampling: 2x2 mean, zero padding on odd sides. Linear, so it applies
    to the difference d directly (the zero padding of y - x is the difference of the paddings)."""
    h, w = x.shape[-2:]
    return F.avg_pool2d(x, kernel_size=2, padding=[h % 2, w % 2])


@dataclass
class _TorchScale:
    x: torch.Tensor          # centred source at this scale (1,3,H,W)
    mu_x: torch.Tensor       # filtered mean (centred), valid region
    var2_x_c2: torch.Tensor  # 2 * filtered variance + C2 (formed in float64)
    mt: torch.Tensor         # filtered mean in pixel units


@dataclass
class TorchReference:
    """Statistics of one source image on a torch device, reused for every decoded version of it."""

    pixels: torch.Tensor                 # (3,H,W) uint8 on the device
    shape: tuple[int, int, int]          # (H, W, 3), as metrics.Reference.shape
    scales: list[_TorchScale] = field(default_factory=list)
    ms_ssim_note: str | None = None

    @classmethod
    def of(cls, pixels: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float64) -> "TorchReference":
        """From HxWx3 uint8 RGB (numpy) or a (3,H,W) uint8 tensor; statistics computed on ``device``
        in float64 and kept in ``dtype``, the type the decoded images' filtering runs in."""
        dev = torch.device(device)
        chw = _chw_on(pixels, dev, "source image")
        h, w = chw.shape[1:]
        ref = cls(chw, (h, w, 3))
        n_scales = len(MS_SSIM_WEIGHTS)
        if min(h, w) <= MS_SSIM_MIN_SIDE:
            ref.ms_ssim_note = f"ms_ssim needs a short side > {MS_SSIM_MIN_SIDE} px, image is {w}x{h}"
            n_scales = 1 if min(h, w) >= WIN_SIZE else 0
        with torch.inference_mode(), _exact_fp32(dev):
            real = chw[None].to(torch.float64)
            for level in range(n_scales):
                if level:
                    real = _pool(real)  # pooled pixel values: exact (multiples of 4^-level)
                x = real - _CENTRE
                stats = _filter(torch.cat([x, x * x], dim=1))
                mu, e_xx = stats[:, :3], stats[:, 3:]
                var2_c2 = 2.0 * (e_xx - mu * mu).clamp_min(0.0) + C2
                ref.scales.append(_TorchScale(x.to(dtype), mu.to(dtype), var2_c2.to(dtype), (mu + _CENTRE).to(dtype)))
        return ref

    @property
    def device(self) -> torch.device:
        return self.pixels.device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device through pinned memory without blocking (CUDA); unchanged when already there."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _chw_on(image: np.ndarray | torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    """numpy HxWx3 uint8 (lcbench's convention) or a torch (3,H,W) uint8 tensor -> (3,H,W) on ``device``.

    numpy images travel in their own HWC layout (one contiguous copy) and are permuted on the device.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{what}: metrics need HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
        if not image.flags.writeable:  # torch warns on read-only arrays (it never writes here): copy instead
            image = image.copy()
        hwc = to_device(torch.from_numpy(np.ascontiguousarray(image)), device)
        return hwc.permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{what}: metrics need a (3,H,W) uint8 tensor, got {image.dtype} {tuple(image.shape)}")
        return to_device(image, device)
    raise ValueError(f"{what}: expected a numpy array or a torch tensor, got {type(image).__name__}")


def _images(decoded: Any, n: int) -> list[Any]:
    """A (B,3,H,W) tensor or a sequence of per-image arrays/tensors -> list of per-image items."""
    if isinstance(decoded, torch.Tensor):
        if decoded.ndim != 4:
            raise ValueError(f"a batch tensor of decoded images must be (B,3,H,W), got {tuple(decoded.shape)}")
        items = list(decoded.unbind(0))
    else:
        items = list(decoded)
    if len(items) != n:
        raise ValueError(f"{len(items)} decoded images for {n} references")
    return items


def _device_sums(ref: TorchReference, y_chw: torch.Tensor) -> torch.Tensor:
    """[sse_rgb, sse_y, ssim per channel and level..., cs per channel and level...] as float64 on the device."""
    dev = ref.device
    diff = y_chw.to(torch.int32) - ref.pixels.to(torch.int32)
    sse = (diff * diff).sum(dtype=torch.int64).to(torch.float64)  # exact below 2^53
    wy = _luma_weights(dev)
    dy = (diff.to(torch.float64) * wy).sum(dim=0)
    parts = [sse.view(1), (dy * dy).sum().view(1)]
    if ref.scales:
        d = diff[None].to(ref.scales[0].x.dtype)  # exact: small integers
        ssim_l, cs_l = [], []
        for level, s in enumerate(ref.scales):
            if level:
                d = _pool(d)
            f = _filter(torch.cat([d, d * d, s.x * d], dim=1))
            mu_d, e_dd, e_xd = f[:, :3], f[:, 3:6], f[:, 6:]
            # 2 cov_xy + C2 = 2 var_x + 2 (E[x d] - mu_x mu_d) + C2 =: N;  var_x + var_y + C2 = N + var_d
            num = s.var2_x_c2 + 2.0 * (e_xd - s.mu_x * mu_d)
            var_d = e_dd - mu_d * mu_d
            cs_map = 1.0 - var_d / (num + var_d)  # = N / (N + var_d), as on CPU: exactly 1 where d = 0
            my = s.mt + mu_d
            # = (2 mt my + C1) / (mt^2 + my^2 + C1), exactly 1 where the means agree
            ssim_map = (1.0 - mu_d * mu_d / (my * my + s.mt * s.mt + C1)) * cs_map
            ssim_l.append(ssim_map.sum(dim=(0, 2, 3), dtype=torch.float64) / ssim_map[0, 0].numel())
            cs_l.append(cs_map.sum(dim=(0, 2, 3), dtype=torch.float64) / cs_map[0, 0].numel())
        parts += ssim_l + cs_l
    return torch.cat(parts)


def _finish(ref: TorchReference, sums: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """Host side: the same arithmetic and notes as metrics.compute_metrics."""
    notes: list[str] = []
    h, w = ref.shape[:2]
    n_pixels = h * w
    mse_rgb = int(sums[0]) / (3 * n_pixels)
    mse_y = float(sums[1]) / n_pixels
    out = {"mse_rgb": mse_rgb, "psnr_rgb": psnr_from_mse(mse_rgb), "mse_y": mse_y, "psnr_y": psnr_from_mse(mse_y),
           "ssim": math.nan, "ms_ssim": math.nan, "ms_ssim_db": math.nan}
    if not ref.scales:
        notes.append(f"ssim needs at least {WIN_SIZE}x{WIN_SIZE} px")
        return out, notes
    n = len(ref.scales)
    per_level = sums[2:].reshape(2, n, 3)  # [ssim|cs, level, channel]
    out["ssim"] = float(per_level[0, 0].mean())
    if ref.ms_ssim_note:
        notes.append(ref.ms_ssim_note)
        return out, notes
    wts = np.asarray(MS_SSIM_WEIGHTS)
    terms = np.concatenate([np.maximum(per_level[1, :-1], 0.0), np.maximum(per_level[0, -1:], 0.0)])
    out["ms_ssim"] = float(np.prod(terms ** wts[:, None], axis=0).mean())
    out["ms_ssim_db"] = ms_ssim_db(out["ms_ssim"])
    return out, notes


def compute_metrics_batch(refs: Sequence[TorchReference], decoded: Any) -> list[tuple[dict[str, float], list[str]]]:
    """Metrics of each decoded image against its reference -> [(values, notes)], as ``metrics.compute_metrics``.

    ``decoded``: a (B,3,H,W) uint8 tensor of equal-size images, or a sequence with one item per
    reference: a (3,H,W) uint8 tensor (on any device) or an HxWx3 uint8 numpy array. Items not
    on the references' device are uploaded once.
    """
    items = _images(decoded, len(refs))
    sums = []
    for i, (ref, item) in enumerate(zip(refs, items)):
        y = _chw_on(item, ref.device, f"decoded image {i}")
        if tuple(y.shape) != (3, *ref.shape[:2]):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(item, torch.Tensor) else f"{item.dtype} {item.shape}"
            raise ValueError(f"decoded image {i} is {got}, the original is uint8 {ref.shape}")
        with torch.inference_mode(), _exact_fp32(ref.device):
            sums.append(_device_sums(ref, y))
    if not sums:
        return []
    # One transfer (and one synchronisation) for the whole batch; lengths differ with the scale count.
    sizes = [len(s) for s in sums]
    host = torch.cat([s.to(sums[0].device) for s in sums]).cpu().numpy()
    offsets = np.cumsum([0, *sizes])
    return [_finish(ref, host[offsets[k]:offsets[k + 1]]) for k, ref in enumerate(refs)]


def compute_metrics(ref: TorchReference, decoded: np.ndarray | torch.Tensor) -> tuple[dict[str, float], list[str]]:
    """One image: ``compute_metrics_batch([ref], [decoded])[0]``."""
    return compute_metrics_batch([ref], [decoded])[0]
