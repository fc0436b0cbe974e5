"""Rate matching: the rate parameter whose real bitstream is closest to a target bpp, per image.

Bisection over ``codec.rate_range``, in the direction given by ``codec.rate_increases_bits``
(quality-like up, QP-like down). Quality-like parameters ("quality", "qp", "level", ...) are
searched in integer steps: the answer is the closest of the bisection's candidates, so usually
within one step of the target (sizes that are not monotonic in the quality can leave it a few
percent further off). A target outside what the codec reaches gets the closest of the range's
end and the few steps just inside it (``END_PROBES``). Continuous parameters (a target
bpp, a distance) are bisected until the interval or the rate error is tiny.

Every candidate is really encoded; bpp = 8 * len(bitstream) / (H * W). Bit counts are not
strictly monotonic in the parameter for every codec, so the answer is the closest of all
candidates tried, not just the last bracket.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lcbench.codec import check_image

INTEGER_RATE_PARAMS = ("quality", "q", "qp", "crf", "level", "effort")
END_PROBES = 3  # integer steps tried inside an end of the range when the target lies beyond it


def is_integer_rate(codec: Any) -> bool:
    """Whether a codec's rate parameter takes integer steps: the codec's own ``rate_is_integer``
    attribute when it has one, otherwise judged from ``rate_param``."""
    explicit = getattr(codec, "rate_is_integer", None)
    if explicit is not None:
        return bool(explicit)
    return str(getattr(codec, "rate_param", "")).lower() in INTEGER_RATE_PARAMS


@dataclass
class RateMatch:
    """The chosen rate, its bitstream and bpp, and every (rate -> bpp) tried on the way."""

    rate: float
    bitstream: bytes
    bpp: float
    target_bpp: float
    tried: dict[float, float] = field(default_factory=dict)

    @property
    def error(self) -> float:
        return self.bpp - self.target_bpp


def match_rate_detailed(codec: Any, image: np.ndarray, target_bpp: float, *, rel_tol: float = 1e-3,
                        max_encodes: int = 64) -> RateMatch:
    """Like ``match_rate``, returning the search record as well."""
    name = getattr(codec, "name", type(codec).__name__)
    check_image(image, name)
    if not (isinstance(target_bpp, (int, float)) and math.isfinite(target_bpp) and target_bpp > 0):
        raise ValueError(f"{name}: target bpp must be a positive number, got {target_bpp!r}")
    if getattr(codec, "rate_range", None) is None:
        raise ValueError(f"{name}: rate matching needs the codec's rate_range, which it does not declare")
    lo, hi = (float(v) for v in codec.rate_range)
    integer = is_integer_rate(codec)
    if integer:
        lo, hi = float(math.ceil(lo)), float(math.floor(hi))
    if hi < lo:
        raise ValueError(f"{name}: empty rate_range {codec.rate_range}")
    pixels = image.shape[0] * image.shape[1]
    up = bool(getattr(codec, "rate_increases_bits", True))
    cache: dict[float, bytes] = {}

    def bpp(rate: float) -> float:
        if rate not in cache:
            if len(cache) >= max_encodes:
                raise RuntimeError(f"{name}: rate matching to {target_bpp} bpp did not settle in {max_encodes} encodes")
            cache[rate] = codec.encode(image, rate)
        return 8.0 * len(cache[rate]) / pixels

    # Work on a position t in [lo, hi] where bits grow with t; map it to the codec's parameter.
    def param(t: float) -> float:
        return t if up else lo + hi - t

    a, b = lo, hi
    if bpp(param(a)) < target_bpp < bpp(param(b)):
        # Invariant: bpp(a) < target < bpp(b).
        if up and not integer and getattr(codec, "rate_is_bpp", False) and lo < target_bpp < hi:
            # The parameter is itself a bpp (JPEG 2000's rate control): the target is the best first
            # guess, and it narrows the bracket.
            if bpp(target_bpp) < target_bpp:
                a = target_bpp
            elif bpp(target_bpp) > target_bpp:
                b = target_bpp
            else:
                a = b = target_bpp
        while a < b:
            if integer:
                if b - a <= 1:
                    break
                mid = float(math.floor((a + b) / 2))
            else:
                mid = (a + b) / 2
                # The bracket's width relative to where it is, not to the whole range: at a
                # 0.02 bpp target, a width of 0.001 x JPEG 2000's range (0.008) was 40% of it.
                width_done = b - a <= rel_tol * max(abs(a), abs(b), 1e-9 * (hi - lo))
                if width_done or abs(bpp(param(mid)) - target_bpp) <= rel_tol * target_bpp:
                    break
            if bpp(param(mid)) < target_bpp:
                a = mid
            else:
                b = mid
        if not integer and a < b:
            bpp(param((a + b) / 2))
    elif integer:
        # Outside the bracket at an end of the range. Sizes are not monotonic next to the ends for
        # every codec (cjxl's q 5 writes more bits than q 6): the steps just inside are tried too,
        # or a target q 6 hits was reported as "not reached" at q 5.
        below = target_bpp <= bpp(param(a))
        for k in range(1, END_PROBES + 1):
            t = a + k if below else b - k
            if lo <= t <= hi:
                bpp(param(t))
    tried = {r: 8.0 * len(data) / pixels for r, data in cache.items()}
    # Closest of everything tried; on a tie, the smaller bitstream (stays within the budget).
    best = min(tried, key=lambda r: (abs(tried[r] - target_bpp), tried[r]))
    return RateMatch(float(best), cache[best], tried[best], float(target_bpp), dict(sorted(tried.items())))


def match_rate(codec: Any, image: np.ndarray, target_bpp: float) -> tuple[float, bytes]:
    """The rate parameter whose real bitstream bpp is closest to ``target_bpp``, and that bitstream."""
    m = match_rate_detailed(codec, image, target_bpp)
    return m.rate, m.bitstream


def match_nearest_rate(codec: Any, image: np.ndarray, target_bpp: float) -> tuple[float, bytes]:
    """For codecs with a finite set of operating points (learned models, no ``rate_range``):
    encode at each of ``codec.default_rates`` and return the one whose real bpp is closest."""
    name = getattr(codec, "name", type(codec).__name__)
    check_image(image, name)
    rates = tuple(getattr(codec, "default_rates", ()))
    if not rates:
        raise ValueError(f"{name}: no rate points to choose from")
    h, w = image.shape[:2]
    best: tuple[float, float, bytes] | None = None
    for rate in rates:
        data = codec.encode(image, rate)
        err = abs(8.0 * len(data) / (h * w) - target_bpp)
        if best is None or err < best[0]:
            best = (err, float(rate), data)
    assert best is not None
    return best[1], best[2]
