"""``lcbench codecs``: every registered codec with availability, version and how to fix it."""
from __future__ import annotations

import argparse
import json

COMMAND = "codecs"
HELP = "list codecs with availability, version and rate grid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over codec names (default: all)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="load a one-file codec plugin")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from lcbench.codec_info import describe_codecs
    from lcbench.registry import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    rows = describe_codecs(args.pattern)
    if not rows:
        from lcbench.registry import codecs

        raise ValueError(f"no codec matches {args.pattern!r}; codecs: {', '.join(sorted(codecs.names()))}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        status = "available" if row["available"] else "UNAVAILABLE"
        print(f"{row['name']:<16} {status:<12} {row['version'] if row['available'] else row['reason']}")
        loaded = bool(row["rate_param"])  # a codec that failed to load has no grid (nor description)
        grid = f"  [{row['rate_param']}: {row['rates']}]" if loaded else ""
        print(f"{'':<16} {row['description'] or ('' if loaded else '(not loaded)')}{grid}  ({row['origin']})")
        if not row["available"] and row["fix"]:
            print(f"{'':<16} fix: {row['fix']}")
    print("\nPipelines: STEP+CODEC runs steps around any codec, e.g. comcnn+jpeg, bicubic-x2+webp, "
          "lanczos-x4+jpeg (`lcbench steps` lists the steps).")
    return 0
