"""``lcbench bd``: Bjontegaard delta rate and metric of each codec against an anchor."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lcbench.cli.report import add_common, csv_list

COMMAND = "bd"
HELP = "BD-rate and BD-metric (PCHIP or cubic) of each codec against --anchor, on average curves and per image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--metric", dest="metrics", type=csv_list, action="extend", metavar="METRIC[,METRIC]",
                   help="metric column(s) (default: psnr_rgb,psnr_y,ms_ssim_db,ssim; repeatable)")
    p.add_argument("--no-per-image", action="store_true", help="only the average curves (skips the bootstrap)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--format", choices=("text", "markdown", "latex", "csv", "json"), default="text",
                   help="output format (default: text)")
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")
    p.add_argument("--strict", action="store_true", help="exit 1 when any BD value is NaN (curves unusable)")


def run(args: argparse.Namespace) -> int:
    from lcbench.bdrate import DEFAULT_METRICS, bd_table
    from lcbench.cli.report import load, metrics_to_use
    from lcbench.summary import bd_display_table, to_json, to_latex, to_markdown, to_text

    df, published, anchor = load(args)
    metrics = metrics_to_use(args.metrics, df, published, DEFAULT_METRICS, "--metric")
    bd = bd_table(df, anchor, metrics=metrics, method=args.method, aggregate=args.aggregate,
                  per_image=not args.no_per_image, extra_curves={p.name: p.curve for p in published},
                  extra_sources={p.name: p.source for p in published},
                  n_boot=args.bootstrap)
    if bd.empty:
        raise ValueError(f"nothing to compare: the results have only the anchor {anchor!r}")
    if args.format == "csv":
        text = bd.to_csv(index=False)
    elif args.format == "json":
        text = to_json(bd, aggregate=args.aggregate, anchor=anchor, method=args.method)
    else:
        render = {"text": to_text, "markdown": to_markdown, "latex": to_latex}[args.format]
        text = "\n".join(render(bd_display_table(bd, kind)) for kind in ("rate", "metric"))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    nan = bd[[c for c in ("bd_rate", "bd_metric") if c in bd.columns]].map(
        lambda v: not math.isfinite(v)).to_numpy().any()
    return 1 if (args.strict and nan) else 0
