"""``lcbench check [CONFIG.toml]``: run the benchmark, compare with the baseline, check bitstreams; CI gate.

Exit codes: 0 every check passed, 1 a check failed, 2 bad input (config, baseline, missing images).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lcbench.cli import EXIT_BAD_INPUT
from lcbench.cli.compare import add_output_arguments

COMMAND = "check"
HELP = ("release gate from a TOML config: run the benchmark (reusing cached jobs), compare with the baseline, "
        "check bitstream compatibility and determinism, write Markdown/JUnit/JSON; exit 0 pass, 1 fail, 2 bad input")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="lcbench-check.toml",
                   help="check configuration (default: lcbench-check.toml); see docs/ci.md")
    p.add_argument("--baseline", help="override [baseline] path")
    p.add_argument("--run-dir", type=Path, help="override [run] dir (where the candidate run is stored and resumed)")
    p.add_argument("--jobs", "-j", type=int, help="override [run] jobs")
    add_output_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lcbench.check import load_config, run_check
    from lcbench.ci_outputs import text_summary, write_outputs
    from lcbench.codec import CodecError
    from lcbench.compare import CompareInputError, error_verdict
    from lcbench.dataset import DatasetError

    cfg = None
    try:
        cfg = load_config(args.config)
        if args.baseline:
            cfg.baseline = str(Path(args.baseline).resolve())  # the check runs in the config's folder
        if args.run_dir:
            cfg.run_dir = Path(args.run_dir).resolve()
        if args.jobs is not None:
            cfg.jobs = args.jobs
        for key in ("markdown", "junit", "json"):
            if getattr(args, key):
                setattr(cfg, key, getattr(args, key))
        result = run_check(cfg)
    except (CompareInputError, ValueError, OSError, DatasetError, CodecError) as exc:
        # ValueError/OSError: unknown codec, unresolvable dataset, unreadable files: all bad input
        verdict = error_verdict(cfg.baseline if cfg else "?", str(cfg.run_dir) if cfg else "?", str(exc),
                                cfg.thresholds if cfg else None)
        print(f"lcbench check: error: {exc}", file=sys.stderr)
        if cfg is not None:  # the reports carry the error too; one that cannot be written is skipped
            for key in ("markdown", "junit", "json"):
                target = getattr(cfg, key)
                if target is None:
                    continue
                try:
                    write_outputs(verdict, **{f"{key}_path": target})
                except OSError as write_exc:
                    print(f"lcbench check: could not write the {key} report {target}: "
                          f"{write_exc.strerror or write_exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    v = result.verdict
    print(f"run {result.run_dir}: {result.jobs_run} job(s) run, {result.jobs_reused} reused")
    sys.stdout.write(text_summary(v))
    for note in v.notes:
        print(f"note: {note}")
    for path in write_outputs(v, cfg.markdown, cfg.junit, cfg.json):
        print(f"wrote {path}")
    return v.exit_code
