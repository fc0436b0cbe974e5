"""Compiled (numba) context-model loops of the importance-map entropy coder (entropy.py).

entropy.phase_features builds a phase's 22 features as stacked numpy arrays, which is the
readable definition and what training uses; coding an image with it took ~135 ms, almost
all numpy call overhead over 128 channels x 4 phases of ~1,500 positions, so on a GPU the
range coding was 90-98% of a learned codec's time. These loops compute the same integer
logits position by position (same features, same order, exact integer arithmetic), so the
probabilities, and therefore the bitstreams, are bit-identical to the numpy definition.

Layout (as in entropy.py): ``v`` (n, h+2, w+2) int8 ternary planes with a zero border,
``q`` (h, w) int64 levels, ``cum`` (h, w) int32 sum of the planes of earlier channels,
``weights`` (n, 4, 22) int64, ``table`` (2*clip+1,) int64 P(1) in 1/2^16 units.
Compiled on first use and cached on disk.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# entropy.PHASES, NEIGHBOURS and WINDOW, as flat tuples numba can unroll
_PHASE_Y = (0, 1, 0, 1)
_PHASE_X = (0, 1, 1, 0)
_NB_Y = (-1, -1, -1, 0, 0, 1, 1, 1)
_NB_X = (-1, 0, 1, -1, 1, -1, 0, 1)


@njit(cache=True, nogil=True)
def _effective_weights(weights, k, s, available):  # pragma: no cover - compiled
    """Channel k, phase s's weights with those of features that are always 0 there (neighbours
    not yet decoded, channels before the first) set to 0, so the position loop has no branches
    (what it then reads for them, the encoder's known bits or channel 0's plane, counts 0)."""
    w = weights[k, s].copy()
    for d in range(8):
        if not available[s, d]:
            w[d] = 0
    if k < 1:
        w[8:17] = 0
    if k < 2:
        w[17] = 0
    if k < 3:
        w[18] = 0
    return w


@njit(cache=True, nogil=True)
def _logit(v, k, y, x, q, cum, w):  # pragma: no cover - compiled
    """Integer logit of channel k at code position (y, x) (unpadded) with _effective_weights w."""
    py, px = y + 1, x + 1
    k1, k2, k3 = max(k - 1, 0), max(k - 2, 0), max(k - 3, 0)  # read but weighted 0 below channel 1/2/3
    acc = w[19] * q[y, x] + w[20] * cum[y, x] + w[21]
    acc += w[8] * v[k1, py, px] + w[17] * v[k2, py, px] + w[18] * v[k3, py, px]
    for d in range(8):
        dy, dx = _NB_Y[d], _NB_X[d]
        acc += w[d] * v[k, py + dy, px + dx] + w[9 + d] * v[k1, py + dy, px + dx]
    return acc


@njit(cache=True, nogil=True)
def _probability(logit, table, clip):  # pragma: no cover - compiled
    if logit < -clip:
        logit = -clip
    elif logit > clip:
        logit = clip
    return table[logit + clip] / 65536.0


@njit(cache=True, nogil=True)
def phase_probabilities(v, k, s, mask, q, cum, weights, table, available, clip, out):  # pragma: no cover
    """P(bit = 1) of the kept positions of channel k, phase s, in row-major order -> out[:count]; count."""
    oy, ox = _PHASE_Y[s], _PHASE_X[s]
    h, w = q.shape
    wk = _effective_weights(weights, k, s, available)
    m = 0
    for y in range(oy, h, 2):
        for x in range(ox, w, 2):
            if mask[k, y, x]:
                out[m] = _probability(_logit(v, k, y, x, q, cum, wk), table, clip)
                m += 1
    return m


@njit(cache=True, nogil=True)
def scatter_phase(v, k, s, mask, got):  # pragma: no cover - compiled
    """Write decoded bits ``got`` (0/1, in phase_probabilities' order) into v as -1/+1."""
    oy, ox = _PHASE_Y[s], _PHASE_X[s]
    h, w = mask.shape[1], mask.shape[2]
    m = 0
    for y in range(oy, h, 2):
        for x in range(ox, w, 2):
            if mask[k, y, x]:
                v[k, y + 1, x + 1] = 2 * got[m] - 1
                m += 1


@njit(cache=True, nogil=True)
def add_plane(cum, v, k):  # pragma: no cover - compiled
    """cum += channel k's plane (after all its phases are coded)."""
    h, w = cum.shape
    for y in range(h):
        for x in range(w):
            cum[y, x] += v[k, y + 1, x + 1]


@njit(cache=True, nogil=True)
def all_bits(v, bits, mask, q, weights, table, available, clip):  # pragma: no cover - compiled
    """The encoder's whole bit sequence at once (every plane is known): (symbols, P(1)) in
    coding order (channel, phase, row-major position), as the decoder will need them."""
    n, h, w = mask.shape
    total = 0
    for k in range(n):
        for y in range(h):
            for x in range(w):
                if mask[k, y, x]:
                    total += 1
    symbols = np.empty(total, np.int32)
    p1 = np.empty(total, np.float64)
    cum = np.zeros((h, w), np.int32)
    m = 0
    for k in range(n):
        for s in range(4):
            oy, ox = _PHASE_Y[s], _PHASE_X[s]
            wk = _effective_weights(weights, k, s, available)
            for y in range(oy, h, 2):
                for x in range(ox, w, 2):
                    if mask[k, y, x]:
                        symbols[m] = bits[k, y, x]
                        p1[m] = _probability(_logit(v, k, y, x, q, cum, wk), table, clip)
                        m += 1
        add_plane(cum, v, k)
    return symbols, p1
