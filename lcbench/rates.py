"""Rate grids from the command line: ``5,10,20``, ``5:95:5``, or per codec ``jpeg=5:95:5``."""
from __future__ import annotations

from decimal import Decimal

# A range that expands to more points than this is a typo (5:95:1e-7), not a benchmark.
MAX_RANGE_POINTS = 10_000


def parse_rate_list(text: str) -> tuple[float, ...]:
    """``"5,10,20"`` or ``"5:95:5"`` (inclusive range) or a mix ``"1,5:95:10"``."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise ValueError(f"bad rate range {part!r}: expected START:STOP:STEP")
            try:
                start, stop, step = (Decimal(b) for b in bits)
            except Exception:
                raise ValueError(f"bad rate range {part!r}: not numbers") from None
            if not all(d.is_finite() for d in (start, stop, step)):
                raise ValueError(f"bad rate range {part!r}: START, STOP and STEP must be finite numbers")
            if step == 0 or (stop - start) * step < 0:
                raise ValueError(f"bad rate range {part!r}: step must move from START towards STOP")
            count = int((stop - start) / step) + 1
            if count > MAX_RANGE_POINTS:
                raise ValueError(f"bad rate range {part!r}: {count} points (at most {MAX_RANGE_POINTS}; "
                                 "a larger STEP?)")
            v = start
            while (v <= stop) if step > 0 else (v >= stop):
                values.append(float(v))
                v += step
        else:
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"bad rate value {part!r}") from None
    if not values:
        raise ValueError(f"empty rate list {text!r}")
    return tuple(dict.fromkeys(values))  # keep order, drop duplicates


def parse_rate_overrides(items: list[str] | None) -> tuple[tuple[float, ...] | None, dict[str, tuple[float, ...]]]:
    """``-q`` arguments -> (grid for every codec or None, {codec: grid})."""
    every: tuple[float, ...] | None = None
    per_codec: dict[str, tuple[float, ...]] = {}
    for item in items or []:
        name, eq, grid = item.rpartition("=")  # a grid has no "=", a codec spec may (jpeg:subsampling=444)
        if eq and name.strip():
            per_codec[name.strip()] = parse_rate_list(grid)
        else:
            every = parse_rate_list(item)
    return every, per_codec
