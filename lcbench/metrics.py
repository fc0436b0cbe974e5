"""Full-reference metrics on 8-bit RGB: PSNR (RGB, Y), SSIM, MS-SSIM.

Conventions (tests check each against an independent implementation):
- psnr_rgb: 10 log10(255^2 / MSE), MSE over all pixels and all three channels jointly
  (CompressAI's convention); inf for identical images.
- psnr_y: the same on BT.601 studio-range luma Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
  (the rescaling/SR papers' convention), computed in float64 without rounding.
- ssim: Wang et al. with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data
  range 255, over the valid region, per channel then averaged; equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)`` and pytorch-msssim's ``ssim``.
- ms_ssim: pytorch-msssim 1.0's ``ms_ssim(data_range=255)`` with its defaults (5 scales,
  weights 0.0448..0.1333, 2x2 average pooling with zero padding on odd sides, ReLU on the
  contrast terms), per channel then averaged, with an exactly normalised Gaussian window
  (pytorch-msssim normalises its window in float32; its taps sum to 1 - 3e-8, which moves
  MS-SSIM by up to ~1e-5 on bright images). Needs a short side > 160 px; smaller images
  get NaN and a note saying so.
- ms_ssim_db: -10 log10(1 - ms_ssim) per image.

Speed: the source image's filtered statistics (means and variances at every scale) do
not change across rate points and codecs, so ``Reference`` computes them once (in float64).
Each decoded image then costs one streaming pass per scale (``_metric_kernels.level_sums``)
over its difference d from the source: d, d^2 and x*d are Gaussian-filtered in float32 row by
row and the SSIM terms summed as rows complete, with nothing image-sized written. Filtering
the decoded image itself in float32 loses ~4e-5 of SSIM on flat bright areas (E[y^2] - mu_y^2
cancels catastrophically); the statistics of d are small where the error is small, so they
keep their precision (large uniform errors on flat areas, a constant 255 decoded as 49, still
lose up to 1e-4: no codec output we measured comes near that). Squared errors are exact integer
sums taken in the same pass. Near-lossless images, where the float32 terms cannot carry
1 - SSIM, are measured again in float64 (``NEAR_LOSSLESS``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


METRIC_NAMES = ("psnr_rgb", "psnr_y", "mse_rgb", "mse_y", "ssim", "ms_ssim", "ms_ssim_db")
# Which direction is better, for reports and regression checks.
HIGHER_IS_BETTER = {"psnr_rgb": True, "psnr_y": True, "mse_rgb": False, "mse_y": False, "ssim": True,
                    "ms_ssim": True, "ms_ssim_db": True, "bpp": False, "enc_time_s": False, "dec_time_s": False}

WIN_SIZE, SIGMA, K1, K2, DATA_RANGE = 11, 1.5, 0.01, 0.03, 255.0
C1, C2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = (WIN_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 160: short side must exceed it
_PAD = WIN_SIZE // 2
_CENTRE = 128.0  # subtracted before filtering to keep float32 products small


def _gauss_1d() -> np.ndarray:
    coords = np.arange(WIN_SIZE, dtype=np.float64) - WIN_SIZE // 2
    g = np.exp(-(coords ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


_G64 = _gauss_1d()
_G = _G64.astype(np.float32)


class _LazyKernels:
    """numba compiles (or loads from its cache) on first use: keep ``import lcbench.metrics`` cheap."""

    def __getattr__(self, name: str):
        from . import _metric_kernels

        return getattr(_metric_kernels, name)


kernels = _LazyKernels()


def _pooled_shape(h: int, w: int) -> tuple[int, int, int]:
    """Shape after pytorch-msssim's avg_pool2d(kernel 2, stride 2, padding side % 2): ceil(side / 2)."""
    return (h + 1) // 2, (w + 1) // 2, 3


_SKIP32 = np.empty((0, 0, 3), np.float32)  # "no output" for a kernel's optional array
_SKIP64 = np.empty((0, 0, 3), np.float64)


_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def luma_bt601(rgb: np.ndarray) -> np.ndarray:
    """Studio-range BT.601 Y in float64 from uint8 RGB."""
    return 16.0 + rgb.astype(np.float64) @ _Y_WEIGHTS


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(DATA_RANGE ** 2 / mse)


def ms_ssim_db(value: float) -> float:
    if not np.isfinite(value):
        return math.nan
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


@dataclass
class _Scale:
    x: np.ndarray | None  # centred float32 source at this scale; None at full scale (the uint8 pixels serve)
    mu_x: np.ndarray      # filtered mean (centred), valid region: (h - 10, w - 10, 3) float32
    var2_x_c2: np.ndarray  # 2 * filtered variance + C2, valid region (variance formed in float64)
    pooled_shape: tuple[int, int, int] | None  # the next scale's shape; None at the last scale
    # The pooled difference for the next scale is written here for every decoded image: a fresh
    # array per call would cost page faults. A Reference is used by one thread at a time.
    _pooled: np.ndarray | None = None

    def pooled_buffer(self) -> np.ndarray:
        if self.pooled_shape is None:
            return _SKIP32
        if self._pooled is None:
            self._pooled = np.empty(self.pooled_shape, np.float32)
        return self._pooled


@dataclass
class Reference:
    """Statistics of one source image, reused for every decoded version of it."""

    pixels: np.ndarray
    scales: list[_Scale] = field(default_factory=list)
    ms_ssim_note: str | None = None
    _float64: Any = None  # lcbench.torch_metrics.TorchReference, built for near-lossless images only

    @classmethod
    def of(cls, pixels: np.ndarray) -> "Reference":
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"metrics need HxWx3 uint8 RGB, got {pixels.dtype} {pixels.shape}")
        ref = cls(np.ascontiguousarray(pixels))
        h, w = pixels.shape[:2]
        n_scales = len(MS_SSIM_WEIGHTS)
        if min(h, w) <= MS_SSIM_MIN_SIDE:
            ref.ms_ssim_note = f"ms_ssim needs a short side > {MS_SSIM_MIN_SIDE} px, image is {w}x{h}"
            n_scales = 1 if min(h, w) >= WIN_SIZE else 0
        src = ref.pixels
        for level in range(n_scales):
            h, w = src.shape[:2]
            valid = (h - 2 * _PAD, w - 2 * _PAD, 3)
            mu_x, var2_x_c2 = np.empty(valid, np.float32), np.empty(valid, np.float32)
            x = np.empty(src.shape, np.float32) if level else None
            last = level == n_scales - 1
            # Pooled in float64 (exact: multiples of 4^-level); zero padding on odd sides.
            nxt = _SKIP64 if last else np.empty(_pooled_shape(h, w), np.float64)
            kernels.source_level(src, _CENTRE, _G64, C2, _SKIP32 if x is None else x, mu_x, var2_x_c2, nxt)
            ref.scales.append(_Scale(x, mu_x, var2_x_c2, None if last else nxt.shape))
            src = nxt
        return ref

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape


def _squared_errors(moments: np.ndarray) -> tuple[int, float]:
    """(sum of squared RGB errors, sum of squared BT.601 Y errors) from the exact integer moments
    [e_0^2, e_1^2, e_2^2, e_0 e_1, e_0 e_2, e_1 e_2]: Y is affine in RGB, so its error is
    _Y_WEIGHTS . e and its square expands into these six sums (no luma images needed)."""
    s00, s11, s22, s01, s02, s12 = (int(v) for v in moments)
    w0, w1, w2 = _Y_WEIGHTS
    sse_y = w0 * w0 * s00 + w1 * w1 * s11 + w2 * w2 * s22 + 2.0 * (w0 * w1 * s01 + w0 * w2 * s02 + w1 * w2 * s12)
    return s00 + s11 + s22, float(sse_y)


def _error_moments(source: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """The same moments in numpy, for images too small for SSIM (no streaming pass runs)."""
    e = decoded.reshape(-1, 3).astype(np.int64) - source.reshape(-1, 3)
    return np.array([(e[:, 0] * e[:, 0]).sum(), (e[:, 1] * e[:, 1]).sum(), (e[:, 2] * e[:, 2]).sum(),
                     (e[:, 0] * e[:, 1]).sum(), (e[:, 0] * e[:, 2]).sum(), (e[:, 1] * e[:, 2]).sum()])


def compute_metrics(ref: Reference, decoded: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """All metrics of ``decoded`` against the reference; returns (values, notes)."""
    if decoded.shape != ref.shape or decoded.dtype != np.uint8:
        raise ValueError(f"decoded image is {decoded.dtype} {decoded.shape}, the original is uint8 {ref.shape}")
    notes: list[str] = []
    per_level_ssim, per_level_cs = [], []
    moments = None
    d = None
    for level, scale in enumerate(ref.scales):
        pooled = scale.pooled_buffer()
        if level == 0:
            ssim_c, cs_c, moments = kernels.level_sums(ref.pixels, np.ascontiguousarray(decoded), True, scale.mu_x,
                                                       scale.var2_x_c2, _G, np.float32(_CENTRE), np.float32(C1), pooled)
        else:  # pooling is linear: the pooled difference is pool(y) - pool(x), zero padding included
            ssim_c, cs_c, _ = kernels.level_sums(scale.x, d, False, scale.mu_x, scale.var2_x_c2, _G,
                                                 np.float32(_CENTRE), np.float32(C1), pooled)
        d = pooled
        h, w = scale.mu_x.shape[:2]  # the valid region: one value per window position
        per_level_ssim.append(ssim_c / (h * w))
        per_level_cs.append(cs_c / (h * w))
    if moments is None:
        moments = _error_moments(ref.pixels, decoded)
    sse, sse_y = _squared_errors(moments)
    n_pixels = ref.pixels.shape[0] * ref.pixels.shape[1]
    mse_rgb = sse / (3 * n_pixels)
    mse_y = sse_y / n_pixels
    out = {"mse_rgb": mse_rgb, "psnr_rgb": psnr_from_mse(mse_rgb), "mse_y": mse_y, "psnr_y": psnr_from_mse(mse_y),
           "ssim": math.nan, "ms_ssim": math.nan, "ms_ssim_db": math.nan}
    if not ref.scales:
        notes.append(f"ssim needs at least {WIN_SIZE}x{WIN_SIZE} px")
        return out, notes
    out["ssim"] = float(per_level_ssim[0].mean())
    if ref.ms_ssim_note:
        notes.append(ref.ms_ssim_note)
        return out, notes
    w = np.asarray(MS_SSIM_WEIGHTS)
    terms = np.stack([np.maximum(c, 0.0) for c in per_level_cs[:-1]] + [np.maximum(per_level_ssim[-1], 0.0)])
    per_channel = np.prod(terms ** w[:, None], axis=0)
    out["ms_ssim"] = float(per_channel.mean())
    out["ms_ssim_db"] = ms_ssim_db(out["ms_ssim"])
    if sse > 0 and min(1.0 - out["ssim"], 1.0 - out["ms_ssim"]) < NEAR_LOSSLESS:
        _near_lossless_in_float64(ref, decoded, out)
    return out, notes


# Below this distance from 1, the float32 SSIM terms (1 - small, rounded to a step of ~6e-8) no
# longer carry 1 - SSIM to a few digits: a near-lossless image got ms_ssim = 1.0 exactly and
# ms_ssim_db = inf, as if lossless, and dB values well above 50 lost ~0.1 dB. Such images (rare:
# PSNR around 60 dB and up) are measured again in float64, which is exact to ~1e-13.
NEAR_LOSSLESS = 1e-5


def _near_lossless_in_float64(ref: Reference, decoded: np.ndarray, out: dict[str, float]) -> None:
    import torch

    from .torch_metrics import TorchReference, compute_metrics as compute_float64

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # inside a worker process: its siblings use the other cores
    try:
        if ref._float64 is None:
            ref._float64 = TorchReference.of(ref.pixels, "cpu")
        exact, _ = compute_float64(ref._float64, decoded)
    finally:
        torch.set_num_threads(threads)
    for key in ("ssim", "ms_ssim", "ms_ssim_db"):
        out[key] = exact[key]
