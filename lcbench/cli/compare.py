"""``lcbench compare BASELINE CANDIDATE``: regression verdict of a candidate run against a baseline.

Exit codes: 0 every check passed, 1 a check failed (or could not be computed), 2 bad input
(missing images or jobs on one side, different datasets, too few rate points, unknown codec).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lcbench.cli import EXIT_BAD_INPUT

COMMAND = "compare"
HELP = ("compare a candidate run against a baseline (BD-rate with per-image 95% CI, per-point deltas, time ratios); "
        "exit 0 pass, 1 regression, 2 bad input")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--markdown/--junit/--json (shared with ``lcbench check``)."""
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown summary (pull-request comment)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML, one test case per codec x metric")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the verdict as JSON")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", help="baseline: run directory, results.csv or CompressAI JSON (file or folder)")
    p.add_argument("candidate", help="candidate: run directory, results.csv or CompressAI JSON (file or folder)")
    p.add_argument("--metric", dest="metrics", type=_csv_list, action="extend", metavar="METRIC[,METRIC]",
                   help="metric column(s) for BD-rate (default: psnr_rgb,ms_ssim_db; repeatable)")
    p.add_argument("--pair", dest="pairs", action="append", metavar="OLD:NEW",
                   help="compare baseline codec OLD with candidate codec NEW (repeatable; default: every codec "
                        "of the baseline, each of which the candidate must have; OLD=>NEW when labels carry options)")
    p.add_argument("--max-bd-rate", type=float, default=0.0, metavar="PCT",
                   help="BD-rate increase allowed, percent (default 0)")
    p.add_argument("--max-slowdown", type=float, default=None, metavar="RATIO",
                   help="encode/decode time ratio candidate/baseline allowed (default: not checked)")
    p.add_argument("--fail-on", choices=("significant", "point"), default="significant",
                   help="significant (default): fail only when the whole per-image 95%% interval exceeds the "
                        "threshold; point: when the estimate does")
    p.add_argument("--method", choices=("pchip", "cubic"), default="pchip", help="BD interpolation (default pchip)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    add_output_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lcbench.ci_outputs import text_summary, write_outputs
    from lcbench.compare import CompareInputError, Thresholds, compare, error_verdict, parse_pair

    thresholds = None
    try:
        try:
            thresholds = Thresholds(args.max_bd_rate, args.max_slowdown, args.fail_on)
        except CompareInputError as exc:  # Thresholds names its fields (max_slowdown): say the options
            raise CompareInputError(str(exc).replace("max_bd_rate", "--max-bd-rate")
                                    .replace("max_slowdown", "--max-slowdown").replace("fail_on", "--fail-on")) from exc
        pairs = [parse_pair(p) for p in args.pairs or []]
        verdict = compare(args.baseline, args.candidate, args.metrics, pairs, thresholds, args.method, args.bootstrap)
    except CompareInputError as exc:
        verdict = error_verdict(args.baseline, args.candidate, str(exc), thresholds, args.method)
        write_outputs(verdict, args.markdown, args.junit, args.json)
        print(f"lcbench compare: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(text_summary(verdict))
    for path in write_outputs(verdict, args.markdown, args.junit, args.json):
        print(f"wrote {path}")
    return verdict.exit_code
