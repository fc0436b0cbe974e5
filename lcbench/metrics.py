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
not change across rate points and codecs, so ``Reference`` computes them once and each
decoded image costs three separable Gaussian filterings per scale (OpenCV, float32) of its
difference d from the source: d, d^2 and x*d. Filtering the decoded image itself in float32
loses ~4e-5 of SSIM on flat bright areas (E[y^2] - mu_y^2 cancels catastrophically); the
statistics of d are small where the error is small, so they keep their precision. The
source's variance is computed once in float64. The per-pixel SSIM formula runs as one fused
loop (``_metric_kernels``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
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


def _filter(plane: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Separable Gaussian filter at full size; only the valid region is used later."""
    return cv2.sepFilter2D(plane, cv2.CV_32F, _G, _G, dst=out, borderType=cv2.BORDER_REFLECT)


def _filter64(plane: np.ndarray) -> np.ndarray:
    """The same in float64, for the source's statistics (computed once per image)."""
    return cv2.sepFilter2D(plane, cv2.CV_64F, _G64, _G64, borderType=cv2.BORDER_REFLECT)


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.avg_pool2d(kernel 2, stride 2, padding = side % 2), zero padding counted."""
    h, w = x.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
    h2, w2 = (x.shape[0] - 2) // 2 + 1, (x.shape[1] - 2) // 2 + 1
    x = np.ascontiguousarray(x[: 2 * h2, : 2 * w2])
    return cv2.resize(x, (w2, h2), interpolation=cv2.INTER_AREA)  # exact 2x2 block means


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
    x: np.ndarray        # centred float32 HxWx3
    mu_x: np.ndarray     # filtered mean (centred), full size; valid region used
    var2_x_c2: np.ndarray  # 2 * filtered variance + C2 (variance computed in float64)
    # Work buffers reused for every decoded image: fresh image-sized arrays per call would
    # cost more in page faults than the arithmetic. A Reference is used by one thread.
    buffers: list[np.ndarray] = field(default_factory=list)

    def work(self) -> list[np.ndarray]:
        if not self.buffers:
            self.buffers = [np.empty_like(self.x) for _ in range(6)]
        return self.buffers


@dataclass
class Reference:
    """Statistics of one source image, reused for every decoded version of it."""

    pixels: np.ndarray
    scales: list[_Scale] = field(default_factory=list)
    ms_ssim_note: str | None = None

    @classmethod
    def of(cls, pixels: np.ndarray) -> "Reference":
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"metrics need HxWx3 uint8 RGB, got {pixels.dtype} {pixels.shape}")
        ref = cls(pixels)
        h, w = pixels.shape[:2]
        n_scales = len(MS_SSIM_WEIGHTS)
        if min(h, w) <= MS_SSIM_MIN_SIDE:
            ref.ms_ssim_note = f"ms_ssim needs a short side > {MS_SSIM_MIN_SIDE} px, image is {w}x{h}"
            n_scales = 1 if min(h, w) >= WIN_SIZE else 0
        real = pixels.astype(np.float64)
        for level in range(n_scales):
            if level:
                real = _avg_pool2(real)  # zero padding on odd sides, as pytorch-msssim
            x = real - _CENTRE
            terms = [np.empty(x.shape, np.float32) for _ in range(2)]
            kernels.source_terms(_filter64(x), _filter64(x * x), C2, *terms)
            ref.scales.append(_Scale(x.astype(np.float32), *terms))
        return ref

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape


def _ssim_terms(s: _Scale, d: np.ndarray | None, source: np.ndarray | None = None,
                decoded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term at one scale (float64).

    ``d`` is decoded minus source in float32; at full scale pass the uint8 ``source`` and
    ``decoded`` instead and the subtraction is fused into the products pass (no image-sized
    temporaries; the difference lands in ``s.work()[5]``).
    """
    dd, xd, f_d, f_dd, f_xd, d_buf = s.work()
    if d is None:
        d = d_buf
        kernels.difference_products(s.x, source, decoded, d, dd, xd)
    else:
        kernels.products(s.x, d, dd, xd)
    return kernels.ssim_sums(s.mu_x, s.var2_x_c2, _filter(d, f_d), _filter(dd, f_dd), _filter(xd, f_xd), _PAD,
                             np.float32(_CENTRE), np.float32(C1))


def compute_metrics(ref: Reference, decoded: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """All metrics of ``decoded`` against the reference; returns (values, notes)."""
    if decoded.shape != ref.shape or decoded.dtype != np.uint8:
        raise ValueError(f"decoded image is {decoded.dtype} {decoded.shape}, the original is uint8 {ref.shape}")
    notes: list[str] = []
    # Y is affine in RGB, so the Y error is _Y_WEIGHTS . (RGB difference): no luma images needed.
    sse, sse_y = kernels.squared_errors(ref.pixels, decoded, *_Y_WEIGHTS)
    n_pixels = ref.pixels.shape[0] * ref.pixels.shape[1]
    mse_rgb = int(sse) / (3 * n_pixels)
    mse_y = float(sse_y) / n_pixels
    out = {"mse_rgb": mse_rgb, "psnr_rgb": psnr_from_mse(mse_rgb), "mse_y": mse_y, "psnr_y": psnr_from_mse(mse_y),
           "ssim": math.nan, "ms_ssim": math.nan, "ms_ssim_db": math.nan}
    if not ref.scales:
        notes.append(f"ssim needs at least {WIN_SIZE}x{WIN_SIZE} px")
        return out, notes
    per_level_ssim, per_level_cs = [], []
    for level, scale in enumerate(ref.scales):
        if level == 0:
            ssim_c, cs_c = _ssim_terms(scale, None, ref.pixels, decoded)
            d = scale.work()[5]  # decoded - source, written by the fused pass
        else:
            d = _avg_pool2(d)  # pooling is linear: pool(y) - pool(x), zero padding included
            ssim_c, cs_c = _ssim_terms(scale, d)
        per_level_ssim.append(ssim_c)
        per_level_cs.append(cs_c)
    out["ssim"] = float(per_level_ssim[0].mean())
    if ref.ms_ssim_note:
        notes.append(ref.ms_ssim_note)
        return out, notes
    w = np.asarray(MS_SSIM_WEIGHTS)
    terms = np.stack([np.maximum(c, 0.0) for c in per_level_cs[:-1]] + [np.maximum(per_level_ssim[-1], 0.0)])
    per_channel = np.prod(terms ** w[:, None], axis=0)
    out["ms_ssim"] = float(per_channel.mean())
    out["ms_ssim_db"] = ms_ssim_db(out["ms_ssim"])
    return out, notes
