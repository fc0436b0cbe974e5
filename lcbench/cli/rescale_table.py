"""``lcbench rescale-table RUN_DIR...``: the rescaling papers' table (dataset x rate point, PSNR/SSIM on Y)."""
from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "rescale-table"
HELP = "rescaling-paper table from runs of rescaling pipelines: PSNR/SSIM on Y (border = scale) per rate point"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or results.csv files (e.g. set5 and set14 runs)")
    p.add_argument("--style", choices=("markdown", "text", "csv"), default="markdown", help="output style (default markdown)")
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")
    p.add_argument("--on-duplicate", choices=("error", "first", "last"), default="error",
                   help="a job present in two runs: refuse (default) or keep the first/last")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a one-file step plugin, so its steps' scale (the metrics' border) is known")


def run(args: argparse.Namespace) -> int:
    from lcbench.presets import format_sr_table, sr_table
    from lcbench.registry import load_plugin
    from lcbench.results import load_results

    for plugin in args.plugin:
        load_plugin(plugin)
    df = load_results(args.runs, on_duplicate=args.on_duplicate)
    try:
        text = sr_table(df).to_csv(index=False) if args.style == "csv" else format_sr_table(df, style=args.style)
    except ValueError as exc:  # exit 2, naming the runs the table was asked of
        raise ValueError(f"{', '.join(map(str, args.runs))}: {exc}") from exc
    if args.output:
        args.output.write_text(text + ("" if text.endswith("\n") else "\n"))
    else:
        print(text)
    return 0
