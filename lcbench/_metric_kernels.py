"""Fused per-pixel loops for the metrics (numba), so each pass reads memory once.

Element-wise numpy would allocate and traverse a full image-sized array for every one of
the ~15 operations in the SSIM formula; these loops do them all in one pass and
accumulate the sums in float64. Compiled on first use and cached on disk.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def squared_errors(a, b, wy0, wy1, wy2):  # pragma: no cover - compiled
    """Sum of squared RGB differences (exact, int64) and of squared BT.601 Y differences."""
    h, w, _ = a.shape
    sse = np.int64(0)
    sse_y = 0.0
    for i in range(h):
        for j in range(w):
            dr = np.int64(a[i, j, 0]) - np.int64(b[i, j, 0])
            dg = np.int64(a[i, j, 1]) - np.int64(b[i, j, 1])
            db = np.int64(a[i, j, 2]) - np.int64(b[i, j, 2])
            sse += dr * dr + dg * dg + db * db
            dy = wy0 * dr + wy1 * dg + wy2 * db
            sse_y += dy * dy
    return sse, sse_y


@njit(cache=True, nogil=True)
def products(x, y, yy, xy):  # pragma: no cover - compiled
    """yy = y * y and xy = x * y, element-wise, in one pass."""
    fx, fy, fyy, fxy = x.ravel(), y.ravel(), yy.ravel(), xy.ravel()
    for k in range(fy.size):
        v = fy[k]
        fyy[k] = v * v
        fxy[k] = fx[k] * v


@njit(cache=True, nogil=True)
def centred_products(x, decoded, centre, y, yy, xy):  # pragma: no cover - compiled
    """y = decoded - centre (uint8 -> float32), yy = y * y, xy = x * y, in one pass into given buffers."""
    fx, fd, fy, fyy, fxy = x.ravel(), decoded.ravel(), y.ravel(), yy.ravel(), xy.ravel()
    for k in range(fd.size):
        v = np.float32(fd[k]) - centre
        fy[k] = v
        fyy[k] = v * v
        fxy[k] = fx[k] * v


@njit(cache=True, nogil=True)
def ssim_sums(mu_x, var_x_c2, lum_x, lum_x2_c1, mu_y, e_yy, e_xy, pad, centre, c1, c2):  # pragma: no cover
    """Per-channel means of the SSIM map and the contrast-structure map over the valid region.

    Inputs are full-size HxWxC filtered maps of centred values; the source's terms are
    precomputed: var_x_c2 = var_x + C2, lum_x = 2 * mu_x_true, lum_x2_c1 = mu_x_true^2 + C1.
    Rows are walked as flat (W*C) runs so the loop vectorises; sums are kept per position
    in float64 and folded into channels at the end.
    """
    h, w, nc = mu_y.shape
    lo, hi = pad * nc, (w - pad) * nc
    acc_ssim = np.zeros(w * nc)
    acc_cs = np.zeros(w * nc)
    two = np.float32(2.0)
    for i in range(pad, h - pad):
        r_mx, r_vx, r_lx, r_lx2 = mu_x[i].ravel(), var_x_c2[i].ravel(), lum_x[i].ravel(), lum_x2_c1[i].ravel()
        r_my, r_yy, r_xy = mu_y[i].ravel(), e_yy[i].ravel(), e_xy[i].ravel()
        for k in range(lo, hi):
            my = r_my[k]
            cs_v = (two * (r_xy[k] - r_mx[k] * my) + c2) / (r_vx[k] + (r_yy[k] - my * my))
            m = my + centre
            lum = (r_lx[k] * m + c1) / (m * m + r_lx2[k])
            acc_cs[k] += cs_v
            acc_ssim[k] += lum * cs_v
    n = (h - 2 * pad) * (w - 2 * pad)
    ssim = acc_ssim.reshape(w, nc).sum(axis=0) / n
    cs = acc_cs.reshape(w, nc).sum(axis=0) / n
    return ssim, cs
