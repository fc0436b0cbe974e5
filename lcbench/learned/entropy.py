"""Entropy coding of the importance map and the kept code bits, with integer-only probabilities.

The paper codes bits channel by channel with a CNN over a 4x5x5 causal context cube,
which takes minutes per image on a CPU. Here the context model is a logistic model per
(channel, phase) over a small causal context, evaluated vectorised: each channel is
split into four 2x2 sub-lattice phases coded one after another, so every position of a
phase sees the same set of already-decoded neighbours and a whole phase is one numpy
operation and one range-coder call.

Context of a bit at channel k, location (i, j), phase s (values are ternary: 0 unknown
or masked, -1 bit 0, +1 bit 1, as in LI's entropy coder):
- the 8 same-channel neighbours that earlier phases decoded,
- channel k-1's 3x3 window, channels k-2 and k-3 at (i, j),
- the importance level q(i, j) and the sum of channels 0..k-1 at (i, j).

Determinism across processes, machines and devices: weights are integers, the logit is
an exact integer dot product, and P(bit=1) is read from a stored 16-bit table; nothing
on the decoding path depends on floating-point maths of the platform. The importance
map is coded row by row with a categorical model whose context is the rounded mean of
the three levels above, using integer counts that adapt to the image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))  # 2x2 sub-lattice offsets, in coding order
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
WINDOW = ((0, 0),) + NEIGHBOURS
N_FEATURES = 8 + 9 + 2 + 2 + 1  # same-channel, previous channel 3x3, k-2/k-3, q and running sum, bias
LOGIT_SCALE = 256  # weights and logits in units of 1/256
LOGIT_CLIP = 16 * LOGIT_SCALE
PROB_BITS = 16
MAP_PRIOR_TOTAL = 256  # integer prior count mass per map context
MAP_INCREMENT = 8  # count added per coded map symbol


def _phase_of(oy: int, ox: int) -> int:
    return PHASES.index((oy % 2, ox % 2))


# AVAILABLE[s][d]: whether same-channel neighbour d has been decoded when phase s is coded.
AVAILABLE = np.array([[_phase_of(oy + dy, ox + dx) < s for dy, dx in NEIGHBOURS]
                      for s, (oy, ox) in enumerate(PHASES)], dtype=np.int32)


class EntropyModelError(RuntimeError):
    """The entropy-model tables are missing or malformed."""


def _shifted(padded: np.ndarray, oy: int, ox: int, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    """Values at (i+dy, j+dx) for the sub-lattice (oy, ox); ``padded`` has a 1-wide zero border."""
    return padded[..., 1 + oy + dy: 1 + oy + dy + h: 2, 1 + ox + dx: 1 + ox + dx + w: 2]


def phase_features(v: np.ndarray, k: int, s: int, q: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Integer context features of channel ``k``, phase ``s``: (..., h/2, w/2, N_FEATURES) int32.

    ``v``: (..., n, h+2, w+2) ternary code planes with a zero border (entries not yet
    decoded are 0 and never read); ``q``: (..., h, w) importance levels;
    ``cum``: (..., h, w) sum of the ternary values of channels < k.
    """
    h, w = v.shape[-2] - 2, v.shape[-1] - 2
    oy, ox = PHASES[s]
    cur = v[..., k, :, :]
    feats = []
    for d, (dy, dx) in enumerate(NEIGHBOURS):
        f = _shifted(cur, oy, ox, dy, dx, h, w)
        feats.append(f if AVAILABLE[s, d] else np.zeros_like(f))
    prev = v[..., k - 1, :, :] if k >= 1 else np.zeros_like(cur)
    for dy, dx in WINDOW:
        feats.append(_shifted(prev, oy, ox, dy, dx, h, w))
    for back in (2, 3):
        plane = v[..., k - back, :, :] if k >= back else np.zeros_like(cur)
        feats.append(_shifted(plane, oy, ox, 0, 0, h, w))
    feats.append(q[..., oy::2, ox::2])
    feats.append(cum[..., oy::2, ox::2])
    feats.append(np.ones_like(feats[-1]))
    return np.stack([f.astype(np.int32) for f in feats], axis=-1)


def logistic_table() -> np.ndarray:
    """P(bit = 1) in 1/2^16 units for every clipped integer logit (computed once, then stored)."""
    logits = np.arange(-LOGIT_CLIP, LOGIT_CLIP + 1, dtype=np.float64) / LOGIT_SCALE
    p = np.rint((1 << PROB_BITS) / (1 + np.exp(-logits)))
    return np.clip(p, 1, (1 << PROB_BITS) - 1).astype(np.int32)


def bit_probabilities(feats: np.ndarray, weights: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Integer features (m, F) and weights (F,) -> P(1) as float64 multiples of 2^-16 (exact)."""
    logit = feats.astype(np.int64) @ weights.astype(np.int64)
    idx = np.clip(logit, -LOGIT_CLIP, LOGIT_CLIP) + LOGIT_CLIP
    return table[idx].astype(np.float64) / (1 << PROB_BITS)


# ---------------------------------------------------------------------------------------
# Importance map: row by row, context = rounded mean of the three levels above.

def map_contexts(prev_row: np.ndarray | None, width: int, levels: int) -> np.ndarray:
    if prev_row is None:
        return np.full(width, levels, dtype=np.int64)  # first row: its own context
    p = np.pad(prev_row.astype(np.int64), 1)
    valid = np.pad(np.ones(width, dtype=np.int64), 1)
    total = p[:-2] + p[1:-1] + p[2:]
    count = valid[:-2] + valid[1:-1] + valid[2:]
    return (2 * total + count) // (2 * count)


def _map_prior(map_counts: np.ndarray) -> np.ndarray:
    """Stored prior table (ctx, L) of non-negative integers -> integer counts with mass ~MAP_PRIOR_TOTAL."""
    c = map_counts.astype(np.int64)
    totals = np.maximum(c.sum(axis=1, keepdims=True), 1)
    return 1 + (c * MAP_PRIOR_TOTAL) // totals


# ---------------------------------------------------------------------------------------
# Coding

class ContextModel:
    """Integer tables of one trained model: bit weights (n, 4, F), logistic table, map prior."""

    def __init__(self, tables: dict[str, torch.Tensor], n: int, levels: int) -> None:
        if not isinstance(tables, dict):
            raise EntropyModelError(f"entropy model tables are a {type(tables).__name__}, not a dict of tables")
        for name in ("bit_weights", "logistic_table", "map_counts"):
            if name not in tables:
                raise EntropyModelError(f"entropy model table {name!r} is missing from the weights file")
            t = tables[name]
            if not torch.is_tensor(t) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                what = t.dtype if torch.is_tensor(t) else f"a {type(t).__name__}"
                raise EntropyModelError(f"entropy model table {name!r} is {what}, not an integer tensor")
        shapes = [tuple(tables[k].shape) for k in ("bit_weights", "logistic_table", "map_counts")]
        if shapes != [(n, len(PHASES), N_FEATURES), (2 * LOGIT_CLIP + 1,), (levels + 1, levels)]:
            raise EntropyModelError(f"entropy model tables have the wrong shape for n={n}, L={levels}: "
                                    f"{', '.join(map(str, shapes))}")
        self.weights = tables["bit_weights"].numpy().astype(np.int64)
        self.table = tables["logistic_table"].numpy().astype(np.int64)
        if self.table.min() < 1 or self.table.max() >= 1 << PROB_BITS:
            raise EntropyModelError(f"entropy model table 'logistic_table' holds probabilities outside "
                                    f"1..{(1 << PROB_BITS) - 1}")
        counts = tables["map_counts"].numpy()
        if counts.min() < 0:
            raise EntropyModelError("entropy model table 'map_counts' holds negative counts")
        self.map_prior = _map_prior(counts)
        self.n, self.levels = n, levels

    def warm_up(self) -> None:
        """Compile (or load from numba's disk cache) the coding kernels now, with the argument types
        of real calls, so that it happens when the model loads, not inside a timed encode (seconds
        on a fresh cache)."""
        q = np.zeros((2, 2), dtype=np.int64)
        self.decode(self.encode(np.zeros((self.n, 2, 2), dtype=np.uint8), q), 2, 2)

    def encode(self, bits: np.ndarray, q: np.ndarray) -> np.ndarray:
        """bits (n, h, w) of 0/1 (entries outside the mask are ignored), q (h, w) -> uint32 words."""
        import constriction

        from . import _context_kernels as kernels

        n, h, w = bits.shape
        enc = constriction.stream.queue.RangeEncoder()
        cat = constriction.stream.model.Categorical(perfect=False)
        counts = self.map_prior.copy()
        prev = None
        for i in range(h):
            ctx = map_contexts(prev, w, self.levels)
            enc.encode(q[i].astype(np.int32), cat, (counts[ctx] / counts[ctx].sum(axis=1, keepdims=True)))
            np.add.at(counts, (ctx, q[i].astype(np.int64)), MAP_INCREMENT)
            prev = q[i]
        mask = _mask(q, n, self.levels)
        v = np.zeros((n, h + 2, w + 2), dtype=np.int8)
        v[:, 1:-1, 1:-1] = np.where(mask, 2 * bits.astype(np.int8) - 1, 0)
        # every plane is known: all probabilities in one pass, one range-coder call
        symbols, p1 = kernels.all_bits(v, np.ascontiguousarray(bits, dtype=np.uint8), mask, q.astype(np.int64),
                                       self.weights, self.table, AVAILABLE, LOGIT_CLIP)
        if len(symbols):
            enc.encode(symbols, constriction.stream.model.Bernoulli(perfect=False), p1)
        return enc.get_compressed()

    def decode(self, words: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """uint32 words -> (bits (n, h, w) uint8 with 0 outside the mask, q (h, w))."""
        import constriction

        from . import _context_kernels as kernels

        n = self.n
        dec = constriction.stream.queue.RangeDecoder(words)
        cat = constriction.stream.model.Categorical(perfect=False)
        counts = self.map_prior.copy()
        q = np.zeros((h, w), dtype=np.int64)
        prev = None
        for i in range(h):
            ctx = map_contexts(prev, w, self.levels)
            q[i] = dec.decode(cat, counts[ctx] / counts[ctx].sum(axis=1, keepdims=True))
            np.add.at(counts, (ctx, q[i]), MAP_INCREMENT)
            prev = q[i]
        bern = constriction.stream.model.Bernoulli(perfect=False)
        mask = _mask(q, n, self.levels)
        v = np.zeros((n, h + 2, w + 2), dtype=np.int8)
        cum = np.zeros((h, w), dtype=np.int32)
        p1 = np.empty(((h + 1) // 2) * ((w + 1) // 2), dtype=np.float64)
        for k in range(n):
            for s in range(len(PHASES)):
                count = kernels.phase_probabilities(v, k, s, mask, q, cum, self.weights, self.table, AVAILABLE,
                                                    LOGIT_CLIP, p1)
                if count:
                    kernels.scatter_phase(v, k, s, mask, dec.decode(bern, p1[:count]))
            kernels.add_plane(cum, v, k)
        if not dec.maybe_exhausted():  # the encoder wrote exactly the words these symbols need
            raise ValueError(f"the {len(words)}-word payload does not end where the last symbol does "
                             "(words left over, or missing)")
        bits = (v[:, 1:-1, 1:-1] > 0).astype(np.uint8)
        return bits, q

    def information_bits(self, bits: np.ndarray, q: np.ndarray) -> float:
        """Ideal code length (bits) of the kept bits under this model, without the map (for est columns)."""
        n, h, w = bits.shape
        mask = _mask(q, n, self.levels)
        v = np.zeros((n, h + 2, w + 2), dtype=np.int8)
        v[:, 1:-1, 1:-1] = np.where(mask, 2 * bits.astype(np.int8) - 1, 0)
        cum = np.zeros((h, w), dtype=np.int32)
        total = 0.0
        for k in range(n):
            for s, (oy, ox) in enumerate(PHASES):
                sel = mask[k, oy::2, ox::2]
                if sel.any():
                    p1 = bit_probabilities(phase_features(v, k, s, q, cum)[sel], self.weights[k, s], self.table)
                    b = bits[k, oy::2, ox::2][sel]
                    total -= float(np.log2(np.where(b > 0, p1, 1 - p1)).sum())
            cum += v[k, 1:-1, 1:-1]
        return total


def _mask(q: np.ndarray, n: int, levels: int) -> np.ndarray:
    """(n, h, w) bool: channel k kept iff k < (n/L)(q+1), the model's mask rule in integers."""
    k = np.arange(n).reshape(n, 1, 1)
    return k * levels < n * (q[None].astype(np.int64) + 1)


# ---------------------------------------------------------------------------------------
# Fitting (after training, on training crops only)

def fit_context_model(model, crops: Sequence[np.ndarray], use_map: bool = True, iterations: int = 12,
                      l2: float = 1e-2) -> dict[str, torch.Tensor]:
    """Fit the integer context model on the codes of ``crops`` (HxWx3 uint8, sides multiples of 16).

    Per (channel, phase): logistic regression by Newton's method with a small L2 penalty,
    then weights rounded to 1/LOGIT_SCALE. Map prior: context/level counts.
    """
    cfg = model.config
    n, levels = cfg.n, cfg.levels
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    bits_l, q_l = [], []
    with torch.no_grad():
        for i in range(0, len(x), 16):
            code, p = model.analyse(model.scale_in(x[i:i + 16]))
            bits_l.append((code > 0.5).numpy().astype(np.int8))
            q = torch.clamp(torch.floor(p * levels), 0, levels - 1).to(torch.int64)[:, 0]
            q_l.append(q.numpy() if use_map else np.full(q.shape, levels - 1, dtype=np.int64))
    bits = np.concatenate(bits_l)
    q = np.concatenate(q_l)
    b_, n_, h, w = bits.shape
    mask = np.stack([_mask(qi, n, levels) for qi in q])
    v = np.zeros((b_, n, h + 2, w + 2), dtype=np.int8)
    v[:, :, 1:-1, 1:-1] = np.where(mask, 2 * bits - 1, 0)
    weights = np.zeros((n, len(PHASES), N_FEATURES), dtype=np.int32)
    cum = np.zeros((b_, h, w), dtype=np.int32)
    for k in range(n):
        for s, (oy, ox) in enumerate(PHASES):
            sel = mask[:, k, oy::2, ox::2]
            if sel.sum() < 2:
                continue
            feats = phase_features(v, k, s, q, cum)[sel].astype(np.float64)
            y = bits[:, k, oy::2, ox::2][sel].astype(np.float64)
            wt = _newton_logistic(feats, y, iterations, l2)
            weights[k, s] = np.rint(wt * LOGIT_SCALE).astype(np.int32)
        cum += v[:, k, 1:-1, 1:-1]
    map_counts = np.zeros((levels + 1, levels), dtype=np.int64)
    for qi in q:
        prev = None
        for row in qi:
            np.add.at(map_counts, (map_contexts(prev, w, levels), row), 1)
            prev = row
    return {"bit_weights": torch.from_numpy(weights), "logistic_table": torch.from_numpy(logistic_table()),
            "map_counts": torch.from_numpy(map_counts)}


def _newton_logistic(x: np.ndarray, y: np.ndarray, iterations: int, l2: float) -> np.ndarray:
    """Weights minimising mean logistic loss + l2/2 |w|^2 (bias included in x's last column).

    In torch (float64): its thread setting is respected, unlike numpy's BLAS pool, which
    thrashes on a busy shared machine.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
    m, f = xt.shape
    w = torch.zeros(f, dtype=torch.float64)
    reg = l2 * torch.eye(f, dtype=torch.float64)
    reg[-1, -1] = 1e-6  # the bias is barely regularised
    for _ in range(iterations):
        p = torch.sigmoid(torch.clamp(xt @ w, -30, 30))
        grad = xt.T @ (p - yt) / m + reg @ w
        hess = (xt * (p * (1 - p))[:, None]).T @ xt / m + reg
        step = torch.linalg.solve(hess, grad)
        w -= step
        if float(step.abs().max()) < 1e-4:
            break
    # Keep logits inside the table's range for typical features.
    return np.clip(w.numpy(), -LOGIT_CLIP / LOGIT_SCALE, LOGIT_CLIP / LOGIT_SCALE)
