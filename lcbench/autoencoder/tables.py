"""Integer probability tables for the latents, and the range coder that uses them.

Why integer tables: the encoder and the decoder must use bit-identical probabilities, or
the decoder goes off the rails after the first differing symbol. A density network
evaluated in floating point at decode time can differ in the last bit between machines,
libraries or thread counts (the most reported bug of learned-codec toolkits). So the
density is evaluated once, after training, and frozen as integer counts per channel that
sum to 2**PROB_BITS; the codec reads only those integers.

Table of channel c (stored in the weights file):
    offset[c]            the smallest integer value with its own symbol (lo)
    size[c]              number of symbols, including the escape symbol (the last one)
    counts[c, :size[c]]  integer frequencies, each >= 1, summing to 2**PROB_BITS

A latent value v of channel c is coded as symbol v - lo when lo <= v < lo + size - 1, else
as the escape symbol followed, at the end of the stream, by v itself with a uniform model
over 16 bits. So decoding is exact for any latent in +-ESCAPE_LIMIT; values beyond that
(never seen: latents of 8-bit images are far smaller) are clamped to it by the encoder.
The range coder is constriction's; it gets each table as counts / 2**PROB_BITS, which is
exact in floating point, so it quantises identical inputs the same way everywhere.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

PROB_BITS = 16
TOTAL = 1 << PROB_BITS
TAIL_MASS = 1e-6  # probability mass below lo (and above the last symbol) left to the escape
GRID = 512  # densities are evaluated on the integers -GRID..GRID to find each channel's support
MAX_SYMBOLS = 1024
ESCAPE_LIMIT = (1 << 15) - 1


class EntropyTableError(ValueError):
    """The integer tables are missing or inconsistent; the message says which part."""


class LatentCodingError(ValueError):
    """A payload cannot be decoded with these tables (corrupt or from another model)."""


def build_tables(density: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Freeze a trained FactorizedDensity into integer tables (float64 for accurate tails)."""
    d = copy.deepcopy(density).double().cpu()
    grid = torch.arange(-GRID, GRID + 1, dtype=torch.float64)
    with torch.no_grad():
        channels = d.matrices[0].shape[0]
        v = grid.expand(channels, 1, -1)
        upper = torch.sigmoid(d.logits_cdf(v + 0.5))[:, 0].numpy()  # c(k + 0.5)
        lower = torch.sigmoid(d.logits_cdf(v - 0.5))[:, 0].numpy()  # c(k - 0.5)
    if not (np.isfinite(upper).all() and np.isfinite(lower).all()):
        bad = sorted(set(np.flatnonzero(~(np.isfinite(upper) & np.isfinite(lower)).all(axis=1)).tolist()))
        raise EntropyTableError(f"the density model gives NaN/inf probabilities for {len(bad)} latent channels "
                                f"(e.g. channel {bad[0]}): its weights are not finite (training diverged?)")
    offsets, sizes, rows = [], [], []
    for c in range(channels):
        inside = (upper[c] > TAIL_MASS) & (lower[c] < 1 - TAIL_MASS)
        idx = np.flatnonzero(inside)
        if idx.size == 0:  # a degenerate density: keep the single most likely value
            idx = np.array([int(np.argmax(upper[c] - lower[c]))])
        first, last = int(idx[0]), int(idx[-1])
        if last - first + 1 > MAX_SYMBOLS - 1:  # keep the most likely window; the rest escapes
            centre = int(np.argmax(upper[c] - lower[c]))
            first = max(0, centre - (MAX_SYMBOLS - 1) // 2)
            last = first + MAX_SYMBOLS - 2
        pmf = upper[c, first:last + 1] - lower[c, first:last + 1]
        escape = lower[c, first] + (1.0 - upper[c, last])
        offsets.append(first - GRID)
        rows.append(quantise_pmf(np.append(pmf, escape)))
        sizes.append(len(rows[-1]))
    counts = np.zeros((channels, max(sizes)), dtype=np.int32)
    for c, row in enumerate(rows):
        counts[c, :len(row)] = row
    return {"offsets": torch.tensor(offsets, dtype=torch.int32), "sizes": torch.tensor(sizes, dtype=torch.int32),
            "counts": torch.from_numpy(counts)}


def quantise_pmf(pmf: np.ndarray) -> np.ndarray:
    """Probabilities -> integer counts, each >= 1, summing to exactly TOTAL."""
    pmf = np.asarray(pmf, dtype=np.float64)
    if not np.isfinite(pmf).all():
        raise EntropyTableError("probabilities are NaN/inf: no integer table can be built from them")
    pmf = np.clip(pmf, 0, None)
    n = len(pmf)
    if n >= TOTAL:
        raise EntropyTableError(f"{n} symbols do not fit a {PROB_BITS}-bit table")
    counts = 1 + np.floor(pmf / max(pmf.sum(), 1e-300) * (TOTAL - n)).astype(np.int64)
    counts[np.argmax(counts)] += TOTAL - counts.sum()  # the rounding remainder goes to the mode
    return counts.astype(np.int32)


class EntropyTables:
    """Validated integer tables of one model, and coding of a latent tensor (C, h, w) with them."""

    def __init__(self, tables: dict[str, torch.Tensor], channels: int) -> None:
        if not isinstance(tables, dict):
            raise EntropyTableError(f"the entropy tables are a {type(tables).__name__}, not a dict of tables")
        for name in ("offsets", "sizes", "counts"):
            if name not in tables:
                raise EntropyTableError(f"entropy table {name!r} is missing")
            t = tables[name]
            if not torch.is_tensor(t) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                what = t.dtype if torch.is_tensor(t) else f"a {type(t).__name__}"
                raise EntropyTableError(f"entropy table {name!r} is {what}, not an integer tensor")
        self.offsets = tables["offsets"].numpy().astype(np.int64)
        self.sizes = tables["sizes"].numpy().astype(np.int64)
        counts = tables["counts"].numpy().astype(np.int64)
        if self.offsets.shape != (channels,) or self.sizes.shape != (channels,) or counts.ndim != 2 \
                or counts.shape[0] != channels:
            raise EntropyTableError(f"entropy tables do not have {channels} channels")
        self.rows = []
        for c in range(channels):
            row = counts[c, :self.sizes[c]]
            if self.sizes[c] < 1 or self.sizes[c] > counts.shape[1] or row.min() < 1 or row.sum() != TOTAL:
                raise EntropyTableError(f"entropy table of channel {c} is malformed (counts must be >= 1 "
                                        f"and sum to {TOTAL})")
            self.rows.append(row)
        self.channels = channels

    def _model(self, c: int):
        import constriction

        # counts / 2**16 is exact in float64: every platform hands constriction the same numbers.
        return constriction.stream.model.Categorical(self.rows[c] / TOTAL, perfect=False)

    def encode(self, latents: np.ndarray) -> np.ndarray:
        """Integer latents (C, h, w) -> range coder words (uint32)."""
        import constriction

        enc = constriction.stream.queue.RangeEncoder()
        escaped = []
        for c in range(self.channels):
            values = np.clip(latents[c].ravel().astype(np.int64), -ESCAPE_LIMIT, ESCAPE_LIMIT)
            symbols = values - self.offsets[c]
            escape = self.sizes[c] - 1
            outside = (symbols < 0) | (symbols >= escape)
            enc.encode(np.where(outside, escape, symbols).astype(np.int32), self._model(c))
            escaped.append(values[outside])
        rare = np.concatenate(escaped)
        if rare.size:
            enc.encode((rare + ESCAPE_LIMIT).astype(np.int32), constriction.stream.model.Uniform(2 * ESCAPE_LIMIT + 1))
        return enc.get_compressed()

    def decode(self, words: np.ndarray, height: int, width: int) -> np.ndarray:
        """Range coder words -> integer latents (C, height, width), int32."""
        import constriction

        dec = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
        out = np.empty((self.channels, height * width), dtype=np.int64)
        escapes = []
        try:
            for c in range(self.channels):
                symbols = dec.decode(self._model(c), height * width).astype(np.int64)
                out[c] = symbols + self.offsets[c]
                escapes.append(np.flatnonzero(symbols == self.sizes[c] - 1))
            n_rare = sum(len(e) for e in escapes)
            if n_rare:
                rare = dec.decode(constriction.stream.model.Uniform(2 * ESCAPE_LIMIT + 1), n_rare).astype(np.int64)
                rare -= ESCAPE_LIMIT
                start = 0
                for c, pos in enumerate(escapes):
                    out[c, pos] = rare[start:start + len(pos)]
                    start += len(pos)
            exhausted = dec.maybe_exhausted()
        except Exception as exc:  # constriction raises on streams it cannot decode
            raise LatentCodingError(f"latents cannot be decoded: {exc}") from exc
        if not exhausted:  # the encoder wrote exactly the words these symbols need
            raise LatentCodingError(f"the {len(words)}-word payload does not end where the last latent does "
                                    "(words left over, or missing)")
        return out.reshape(self.channels, height, width).astype(np.int32)

    def information_bits(self, latents: np.ndarray) -> float:
        """Ideal code length of ``latents`` under the integer tables (escaped values: 16 bits extra)."""
        total = 0.0
        for c in range(self.channels):
            values = latents[c].ravel().astype(np.int64)
            symbols = values - self.offsets[c]
            escape = self.sizes[c] - 1
            outside = (symbols < 0) | (symbols >= escape)
            counts = self.rows[c][np.where(outside, escape, symbols)]
            total += float(np.sum(PROB_BITS - np.log2(counts))) + 16.0 * int(outside.sum())
        return total
