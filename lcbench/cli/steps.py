"""``lcbench steps``: pipeline steps (``STEP+...+CODEC``) with availability, scale and origin."""
from __future__ import annotations

import argparse

COMMAND = "steps"
HELP = "list pipeline steps for specs like bicubic-x2+jpeg or comcnn+jpeg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*",
                   help="glob over step names (default: all), or a pipeline spec such as bicubic-x2+jpeg "
                        "to show its steps and codec")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="load a one-file step plugin")


def run(args: argparse.Namespace) -> int:
    from lcbench.codec import Availability
    from lcbench.pipeline import steps
    from lcbench.registry import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    if "+" in args.pattern:  # a whole pipeline spec: its steps, then the codec and rate grid
        from lcbench.pipeline import pipeline_class

        cls = pipeline_class(args.pattern)  # unknown step or codec names fail here, with the known ones
        for (name, opts), step_cls in zip(cls.step_specs, cls.step_classes):
            opts_text = "".join(f":{k}={v}" for k, v in sorted(opts.items()))
            print(f"step   {name + opts_text:<14} x{step_cls.scale:<2} {step_cls.description}")
        inner_name, _ = cls.inner_spec
        print(f"codec  {inner_name:<14}     {cls.inner_class.description}")
        avail = cls.availability()
        grid = cls.default_rates
        if avail:  # the configured pipeline: options, and what its steps pick for this codec (comcnn's weights)
            from lcbench.codec import CodecUnavailable
            from lcbench.registry import create_codec

            try:
                configured = create_codec(args.pattern, device="cpu")
                grid = configured.default_rates  # e.g. the model ids in an inner codec's weights_dir
                avail = configured.availability_here()
            except CodecUnavailable as exc:
                avail = Availability.no(str(exc))
        print(f"\n{cls.name}: {_state(avail)}; "
              f"rate grid {cls.rate_param} = {', '.join(f'{r:g}' for r in grid)}")
        return 0
    names = steps.names(args.pattern)
    if not names:
        raise ValueError(f"no step matches {args.pattern!r} (known: {', '.join(steps.names())})")
    for name in names:
        entry = steps.entry(name)
        cls = entry.load()
        avail = cls.availability()
        print(f"{name:<14} x{cls.scale:<2} {_state(avail)}")
        print(f"{'':<14} {cls.description}  ({entry.origin})")
    for module, err in steps.import_errors.items():
        print(f"(could not import {module}: {err})")
    print("\nUse as STEP+...+CODEC, e.g. --codecs bicubic-x2+jpeg,comcnn+jpeg")
    return 0


def _state(avail) -> str:
    if avail:
        return "available"
    return f"UNAVAILABLE: {avail.reason}" + (f". Fix: {avail.fix}" if avail.fix else "")
