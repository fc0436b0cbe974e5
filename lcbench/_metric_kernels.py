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
def source_terms(mu, e_xx, c2, mu32, var2_c2):  # pragma: no cover - compiled
    """The source's per-pixel SSIM terms from its float64 filtered moments, stored float32:
    the (centred) mean and 2 * variance + C2."""
    fm, fe = mu.ravel(), e_xx.ravel()
    o_mu, o_v = mu32.ravel(), var2_c2.ravel()
    for k in range(fm.size):
        m = fm[k]
        o_mu[k] = m
        o_v[k] = 2.0 * max(fe[k] - m * m, 0.0) + c2


@njit(cache=True, nogil=True)
def difference_products(x, source, decoded, d, dd, xd):  # pragma: no cover - compiled
    """d = decoded - source (uint8 -> float32, exact), dd = d * d, xd = x * d, in one pass into given buffers."""
    fx, fs, fdec, fd, fdd, fxd = x.ravel(), source.ravel(), decoded.ravel(), d.ravel(), dd.ravel(), xd.ravel()
    for k in range(fdec.size):
        v = np.float32(np.int16(fdec[k]) - np.int16(fs[k]))
        fd[k] = v
        fdd[k] = v * v
        fxd[k] = fx[k] * v


# error_model="numpy": no zero-division checks, so the divisions vectorise (denominators are
# >= C2 > 0 and >= C1 > 0 anyway); fastmath lets the float32 row loop use SIMD.
@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def ssim_sums(mu_x, var2_x_c2, mu_d, e_dd, e_xd, pad, centre, c1):  # pragma: no cover - compiled
    """Per-channel means of the SSIM map and the contrast-structure map over the valid region.

    The decoded image enters as its difference d = y - x from the source, so every statistic
    of it is small when the error is small and float32 keeps its precision on flat areas
    (E[y^2] - mu_y^2 on raw values loses ~1e-4 there). With cov = E[x d] - mu_x mu_d and
    var_d = E[d^2] - mu_d^2:  2 cov_xy + C2 = 2 var_x + 2 cov + C2 =: N and
    var_x + var_y + C2 = N + var_d, so cs = N / (N + var_d). The source's terms are
    precomputed (in float64, stored float32): mu_x (centred) and var2_x_c2 = 2 var_x + C2.
    Each row is computed in float32 into a small buffer (vectorised), then added to float64
    per-position sums.
    """
    h, w, nc = mu_d.shape
    lo, hi = pad * nc, (w - pad) * nc
    m = hi - lo
    acc_ssim = np.zeros(m)
    acc_cs = np.zeros(m)
    row_ssim = np.empty(m, np.float32)
    row_cs = np.empty(m, np.float32)
    two = np.float32(2.0)
    for i in range(pad, h - pad):
        r_mx, r_v2 = mu_x[i].ravel()[lo:hi], var2_x_c2[i].ravel()[lo:hi]
        r_md, r_dd, r_xd = mu_d[i].ravel()[lo:hi], e_dd[i].ravel()[lo:hi], e_xd[i].ravel()[lo:hi]
        for k in range(m):
            md = r_md[k]
            mx = r_mx[k]
            num = r_v2[k] + two * (r_xd[k] - mx * md)
            cs_v = num / (num + (r_dd[k] - md * md))
            mt = mx + centre  # local means in pixel units
            my = mt + md
            row_cs[k] = cs_v
            row_ssim[k] = (two * mt * my + c1) / (my * my + mt * mt + c1) * cs_v
        for k in range(m):
            acc_cs[k] += row_cs[k]
            acc_ssim[k] += row_ssim[k]
    n = (h - 2 * pad) * (w - 2 * pad)
    ssim = acc_ssim.reshape(w - 2 * pad, nc).sum(axis=0) / n
    cs = acc_cs.reshape(w - 2 * pad, nc).sum(axis=0) / n
    return ssim, cs
