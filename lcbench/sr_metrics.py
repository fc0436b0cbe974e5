"""The super-resolution / rescaling papers' metric convention (IRN, SAIN, BasicSR test scripts).

- Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (BT.601 studio range), in float64, not rounded;
- the ground truth is "mod-cropped" to a multiple of the scale S, then S pixels are cropped
  from every side of both images;
- PSNR with peak 255; SSIM as IRN/BasicSR ``calculate_ssim``: 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, over the valid region (5 more pixels off each side), on the Y plane.

Pipelines report these as ``psnr_y_sr`` and ``ssim_y_sr`` (S = the pipeline's total scale),
beside the harness's usual whole-image metrics.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .metrics import luma_bt601

_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def sr_region(image: np.ndarray, scale: int) -> np.ndarray:
    """Mod-crop to a multiple of ``scale``, then drop ``scale`` pixels on every side."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    h, w = image.shape[:2]
    h2, w2 = h - h % scale, w - w % scale
    if h2 <= 2 * scale or w2 <= 2 * scale:
        raise ValueError(f"image {w}x{h} is too small for a {scale}-pixel border crop")
    return image[scale:h2 - scale, scale:w2 - scale]


def ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float planes (0..255), Gaussian 11/1.5, valid region, as IRN/BasicSR."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if min(a.shape) < 11:
        return math.nan
    g = cv2.getGaussianKernel(11, 1.5)

    def blur(x: np.ndarray) -> np.ndarray:
        # the Gaussian window g g^T as two 1-D passes: BasicSR's filter2D(x, -1, g g^T) to ~1e-15,
        # 52 -> 32 ms per Kodak image with the rest of sr_metrics (most of a comcnn+jpeg job outside the codec)
        return cv2.sepFilter2D(x, -1, g, g)[5:-5, 5:-5]

    mu1, mu2 = blur(a), blur(b)
    s11 = blur(a * a) - mu1 ** 2
    s22 = blur(b * b) - mu2 ** 2
    s12 = blur(a * b) - mu1 * mu2
    num = (2 * mu1 * mu2 + _C1) * (2 * s12 + _C2)
    den = (mu1 ** 2 + mu2 ** 2 + _C1) * (s11 + s22 + _C2)
    return float(np.mean(num / den))


def sr_metrics(original: np.ndarray, decoded: np.ndarray, scale: int) -> dict[str, float]:
    """``{"psnr_y_sr": ..., "ssim_y_sr": ...}`` of decoded against original (HxWx3 uint8)."""
    if original.shape != decoded.shape:
        raise ValueError(f"sr_metrics: shapes differ: {original.shape} vs {decoded.shape}")
    y1 = sr_region(luma_bt601(original), scale)
    y2 = sr_region(luma_bt601(decoded), scale)
    mse = float(np.mean((y1 - y2) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
    return {"psnr_y_sr": psnr, "ssim_y_sr": ssim_plane(y1, y2)}
