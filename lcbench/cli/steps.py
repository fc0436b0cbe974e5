"""``lcbench steps``: pipeline steps (``STEP+...+CODEC``) with availability, scale and origin."""
from __future__ import annotations

import argparse

COMMAND = "steps"
HELP = "list pipeline steps for specs like bicubic-x2+jpeg or comcnn+jpeg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over step names (default: all)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="load a one-file step plugin")


def run(args: argparse.Namespace) -> int:
    from lcbench.pipeline import steps
    from lcbench.registry import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    names = steps.names(args.pattern)
    if not names:
        raise ValueError(f"no step matches {args.pattern!r} (known: {', '.join(steps.names())})")
    for name in names:
        entry = steps.entry(name)
        cls = entry.load()
        avail = cls.availability()
        state = "available" if avail else f"UNAVAILABLE: {avail.reason} {avail.fix}".strip()
        print(f"{name:<14} x{cls.scale:<2} {state}")
        print(f"{'':<14} {cls.description}  ({entry.origin})")
    for module, err in steps.import_errors.items():
        print(f"(could not import {module}: {err})")
    print("\nUse as STEP+...+CODEC, e.g. --codecs bicubic-x2+jpeg,comcnn+jpeg")
    return 0
