"""What `lcbench codecs` and run metadata say about each codec."""
from __future__ import annotations

from typing import Any

from .registry import codecs, create_codec


def format_rates(rates: tuple[float, ...] | list[float]) -> str:
    return ",".join(f"{r:g}" for r in rates)


def describe_codecs(pattern: str = "*") -> list[dict[str, Any]]:
    rows = []
    for name in codecs.names(pattern):
        entry = codecs.entry(name)
        row: dict[str, Any] = {"name": name, "origin": entry.origin, "available": False, "version": "",
                               "reason": "", "fix": "", "description": "", "rate_param": "", "rates": ""}
        try:
            cls = entry.load()
            row.update(description=getattr(cls, "description", "") or (cls.__doc__ or "").strip().split("\n")[0],
                       rate_param=cls.rate_param, rates=format_rates(cls.default_rates))
            avail = cls.availability()
            row.update(available=bool(avail), reason=avail.reason, fix=avail.fix)
            if avail:
                row["version"] = create_codec(name).version()
        except Exception as exc:  # a broken plugin is reported, not fatal
            row.update(available=False, reason=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    return rows
