"""Streaming kernels for the metrics (numba): one pass per scale, nothing image-sized in between.

A scale's SSIM needs three Gaussian-filtered statistics of the decoded image. Filtering
whole images (OpenCV) and then combining them moved ~15 full-size float arrays through
memory per decoded image and was bound by memory bandwidth. Here each input row is
filtered horizontally into a ring of the last 11 rows, the ring is filtered vertically
into one output row, and that row's SSIM terms are summed at once, so the working set
stays in cache. Compiled on first use and cached on disk.
"""
from __future__ import annotations

import numpy as np
from numba import njit


# The window has 11 taps (metrics.WIN_SIZE) and is symmetric, hard-coded here so that each output
# is 6 multiplies over contiguous 1-D views: indexing one array at ``k + offset`` makes numba
# emit a negative-index check per load, which stops LLVM vectorising (13x slower).
@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _hfilter(src, g, nc, out):  # pragma: no cover - compiled
    """out[k] = sum_t g[t] src[k + t nc]: the valid part of a horizontal filter of one interleaved row."""
    m = out.size
    g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
    a0, a1, a2, a3, a4 = src[0:m], src[nc:nc + m], src[2 * nc:2 * nc + m], src[3 * nc:3 * nc + m], src[4 * nc:4 * nc + m]
    a5 = src[5 * nc:5 * nc + m]
    b4, b3, b2 = src[6 * nc:6 * nc + m], src[7 * nc:7 * nc + m], src[8 * nc:8 * nc + m]
    b1, b0 = src[9 * nc:9 * nc + m], src[10 * nc:10 * nc + m]
    for k in range(m):
        out[k] = (g5 * a5[k] + g4 * (a4[k] + b4[k]) + g3 * (a3[k] + b3[k]) + g2 * (a2[k] + b2[k])
                  + g1 * (a1[k] + b1[k]) + g0 * (a0[k] + b0[k]))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _vfilter(ring, first, q, g, out):  # pragma: no cover - compiled
    """out = sum_t g[t] ring[(first + t) % 11, q]: the vertical filter over the ring of filtered rows."""
    n = ring.shape[0]
    g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
    a0, a1, a2 = ring[first % n, q], ring[(first + 1) % n, q], ring[(first + 2) % n, q]
    a3, a4, a5 = ring[(first + 3) % n, q], ring[(first + 4) % n, q], ring[(first + 5) % n, q]
    b4, b3, b2 = ring[(first + 6) % n, q], ring[(first + 7) % n, q], ring[(first + 8) % n, q]
    b1, b0 = ring[(first + 9) % n, q], ring[(first + 10) % n, q]
    for k in range(out.size):
        out[k] = (g5 * a5[k] + g4 * (a4[k] + b4[k]) + g3 * (a3[k] + b3[k]) + g2 * (a2[k] + b2[k])
                  + g1 * (a1[k] + b1[k]) + g0 * (a0[k] + b0[k]))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _pool_row(d, i, h, w, nc, ph, pw, rowsum, pooled):  # pragma: no cover - compiled
    """Add row i of the difference to the 2x2 average pooling (pytorch-msssim's avg_pool2d with
    zero padding of side % 2 on both ends). Rows pair up as padded rows (2o, 2o + 1); a pair's
    sum waits in ``rowsum`` and is pooled horizontally when complete. Exact in float32: the
    values are multiples of 4^-level well inside float32's 24 bits."""
    W = w * nc
    first_of_pair = (i + ph) % 2 == 0
    if first_of_pair or i == 0:  # i == 0 with odd height: its partner is the zero padding row
        for k in range(W):
            rowsum[k] = d[k]
    else:
        for k in range(W):
            rowsum[k] += d[k]
    if first_of_pair and i != h - 1:
        return  # wait for the second row (the last row of an odd height pairs with zero padding)
    oi = (i + ph) >> 1
    if oi >= pooled.shape[0]:
        return
    quarter = np.float32(0.25)
    out = pooled[oi]
    w2 = pooled.shape[1]
    rs = rowsum.reshape(w, nc)
    if pw == 0:
        for oj in range(w2):
            for c in range(nc):
                out[oj, c] = quarter * (rs[2 * oj, c] + rs[2 * oj + 1, c])
    else:  # column j goes to output (j + 1) // 2; the zero padding column joins column 0
        for c in range(nc):
            out[0, c] = quarter * rs[0, c]
        for oj in range(1, w2):
            for c in range(nc):
                s = rs[2 * oj - 1, c]
                if 2 * oj < w:
                    s += rs[2 * oj, c]
                out[oj, c] = quarter * s


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def source_level(src, centre, g, c2, x_out, mu_out, var2_out, pooled):  # pragma: no cover - compiled
    """One scale of the source image, in float64: the centred pixels (``x_out``, float32, exact;
    shape (0, 0, nc) skips it),
    the filtered mean and 2 * variance + C2 over the valid region (``mu_out``, ``var2_out``:
    float32, (h - 10, w - 10, nc)), and the 2x2 pooled image for the next scale (float64, exact;
    shape (0, 0, nc) skips it). ``src`` is the uint8 image or the previous scale's pooled one.
    The variance E[x^2] - mu^2 is formed in float64, where its cancellation is harmless."""
    h, w, nc = src.shape
    taps = g.size
    r = taps // 2
    W = w * nc
    m = W - 2 * r * nc
    ring = np.empty((taps, 2, m))
    x = np.empty(W)
    xx = np.empty(W)
    mu = np.empty(m)
    e_xx = np.empty(m)
    rowsum = np.zeros(W)
    ph, pw = h % 2, w % 2
    for i in range(h):
        sr = src[i].ravel()
        for k in range(W):
            v = np.float64(sr[k]) - centre
            x[k] = v
            xx[k] = v * v
        if x_out.shape[0] > 0:
            xo = x_out[i].ravel()
            for k in range(W):
                xo[k] = x[k]
        if pooled.shape[0] > 0:
            _pool_row(sr, i, h, w, nc, ph, pw, rowsum, pooled)
        slot = i % taps
        _hfilter(x, g, nc, ring[slot, 0])
        _hfilter(xx, g, nc, ring[slot, 1])
        if i < taps - 1:
            continue
        first = i - taps + 1
        _vfilter(ring, first, 0, g, mu)
        _vfilter(ring, first, 1, g, e_xx)
        mo, vo = mu_out[first].ravel(), var2_out[first].ravel()
        for k in range(m):
            mk = mu[k]
            mo[k] = mk
            vo[k] = 2.0 * max(e_xx[k] - mk * mk, 0.0) + c2


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def level_sums(x, a, from_pixels, mu_x, var2_x_c2, g, centre, c1, pooled):  # pragma: no cover - compiled
    """One scale of a decoded image in one streaming pass -> (per-channel sum of the SSIM map,
    per-channel sum of the contrast-structure map, squared-error moments); divide the sums by
    the number of valid positions, (h - 10) * (w - 10).

    The decoded image enters as its difference d = y - x from the source, so every statistic of
    it is small when the error is small and float32 keeps its precision on flat areas
    (E[y^2] - mu_y^2 on raw values loses ~4e-5 of SSIM there). ``from_pixels`` (full scale):
    ``a`` and ``x`` are the decoded and source uint8 images, and d and the centred x are formed
    here. Otherwise ``a`` is the previous scale's pooled difference and ``x`` the centred pooled
    source, both float32. d, d^2 and x d are filtered (valid region only); with
    cov = E[x d] - mu_x mu_d and var_d = E[d^2] - mu_d^2:  2 cov_xy + C2 = 2 var_x + 2 cov + C2
    =: N and var_x + var_y + C2 = N + var_d, so cs = N / (N + var_d). The source's terms come
    from ``source_level``: mu_x (centred) and var2_x_c2 = 2 var_x + C2, valid region.

    Also writes the 2x2 pooled difference for the next scale into ``pooled`` ((0, 0, nc) skips
    it) and, from pixels, returns the exact integer sums [sum e_c^2 for c = 0..2, e_0 e_1,
    e_0 e_2, e_1 e_2] of the per-channel errors (PSNR on RGB and, by linearity, on luma).
    """
    h, w, nc = x.shape
    taps = g.size
    r = taps // 2
    W = w * nc
    lo = r * nc
    m = W - 2 * lo
    ring = np.empty((taps, 3, m), np.float32)
    d = np.empty(W, np.float32)
    dd = np.empty(W, np.float32)
    xd = np.empty(W, np.float32)
    v = np.empty((3, m), np.float32)
    acc_ssim = np.zeros(m)
    acc_cs = np.zeros(m)
    row_ssim = np.empty(m, np.float32)
    row_cs = np.empty(m, np.float32)
    rowsum = np.zeros(W, np.float32)
    moments = np.zeros(6, np.int64)
    two = np.float32(2.0)
    one = np.float32(1.0)
    ph, pw = h % 2, w % 2
    for i in range(h):
        xr = x[i].ravel()
        ar = a[i].ravel()
        if from_pixels:
            for k in range(W):
                xs = np.float32(xr[k])
                e = np.float32(ar[k]) - xs  # exact: small integers
                d[k] = e
                dd[k] = e * e
                xd[k] = (xs - centre) * e
            a3, x3 = a[i], x[i]
            s00 = s11 = s22 = s01 = s02 = s12 = np.int64(0)
            for j in range(w):
                e0 = np.int64(a3[j, 0]) - np.int64(x3[j, 0])
                e1 = np.int64(a3[j, 1]) - np.int64(x3[j, 1])
                e2 = np.int64(a3[j, 2]) - np.int64(x3[j, 2])
                s00 += e0 * e0
                s11 += e1 * e1
                s22 += e2 * e2
                s01 += e0 * e1
                s02 += e0 * e2
                s12 += e1 * e2
            moments[0] += s00
            moments[1] += s11
            moments[2] += s22
            moments[3] += s01
            moments[4] += s02
            moments[5] += s12
        else:
            for k in range(W):
                e = np.float32(ar[k])
                d[k] = e
                dd[k] = e * e
                xd[k] = np.float32(xr[k]) * e
        if pooled.shape[0] > 0:
            _pool_row(d, i, h, w, nc, ph, pw, rowsum, pooled)
        slot = i % taps
        _hfilter(d, g, nc, ring[slot, 0])
        _hfilter(dd, g, nc, ring[slot, 1])
        _hfilter(xd, g, nc, ring[slot, 2])
        if i < taps - 1:
            continue
        first = i - taps + 1
        _vfilter(ring, first, 0, g, v[0])
        _vfilter(ring, first, 1, g, v[1])
        _vfilter(ring, first, 2, g, v[2])
        r_mx, r_v2 = mu_x[first].ravel(), var2_x_c2[first].ravel()
        r_md, r_dd, r_xd = v[0], v[1], v[2]
        for k in range(m):
            md = r_md[k]
            mx = r_mx[k]
            num = r_v2[k] + two * (r_xd[k] - mx * md)
            var_d = r_dd[k] - md * md
            mt = mx + centre  # local means in pixel units
            my = mt + md
            # cs = N / (N + var_d) and l = (2 mt my + C1) / (mt^2 + my^2 + C1), written as
            # 1 - (small) / (...): exactly 1 where the decoded window equals the source's.
            # fastmath turns x / y into x * (1 / y), so N / N came out 1 - 6e-8 on some
            # rows and a lossless codec got MS-SSIM ~ 91 dB instead of inf.
            cs_v = one - var_d / (num + var_d)
            row_cs[k] = cs_v
            row_ssim[k] = (one - md * md / (my * my + mt * mt + c1)) * cs_v
        for k in range(m):
            acc_cs[k] += row_cs[k]
            acc_ssim[k] += row_ssim[k]
    # sums, not means: fastmath turns x / n into x * (1 / n), so an all-ones map summed to
    # exactly n came out 1 - 1e-16; the caller divides outside compiled code
    ssim = acc_ssim.reshape(w - 2 * r, nc).sum(axis=0)
    cs = acc_cs.reshape(w - 2 * r, nc).sum(axis=0)
    return ssim, cs, moments
