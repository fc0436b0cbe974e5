"""``lcbench run``: codecs x rate points x images -> results.csv, run.json and a summary table."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "run"
HELP = "run codecs over a dataset and write per-image results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codecs", "-c", default="",
                   help="comma-separated codec specs, e.g. jpeg,webp,jpeg:subsampling=444 or pipelines such as "
                        "bicubic-x2+jpeg,comcnn+jpeg (see `lcbench codecs`, `lcbench steps`)")
    p.add_argument("--preset", metavar="NAME",
                   help="a published protocol's codecs and rate grid: rescale-jpeg or rescale-webp (bicubic x2/x4 "
                        "around the codec at quality 30..90; prints the papers' Y-channel PSNR/SSIM table); "
                        "--codecs adds to it; with --target-bpp its codecs are rate-matched instead of the grid")
    p.add_argument("--dataset", "-d", default="sample", help="folder path or dataset name (default: sample, offline)")
    p.add_argument("--out", "-o", help="run directory (default: reports/<dataset>); re-running resumes it")
    p.add_argument("-q", "--quality", action="append", metavar="GRID",
                   help="rate grid for every codec (5,10,20 or 5:95:5), or per codec: jpeg=5:95:5 (repeatable)")
    p.add_argument("--target-bpp", metavar="LIST",
                   help="rate matching: per image and codec, the rate parameter whose bitstream is closest to each "
                        "target bpp (e.g. 0.25,0.5,1.0); replaces the rate grid")
    p.add_argument("--jobs", "-j", type=int, default=None, help="parallel workers (default: all cores; -1 too)")
    p.add_argument("--backend", choices=["loky", "dask"], default="loky",
                   help="loky: worker processes here (default); dask: a Dask cluster (see --scheduler)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="device for learned codecs (default: cuda when a GPU is present, else cpu)")
    p.add_argument("--metrics-backend", choices=["auto", "cpu", "torch"], default=None,
                   help="where learned codecs' metrics run: torch (on --device, float64) or cpu "
                        "(lcbench.metrics); auto (default): torch on cuda, cpu otherwise")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--images", dest="image_glob", action="append", default=None,
                   help="glob over image ids or file names; repeat it or separate globs with commas for several")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help="load a one-file codec plugin")
    p.add_argument("--save-bitstreams", action="store_true", help="keep every bitstream under RUN_DIR/bitstreams")
    p.add_argument("--save-decoded", action="store_true", help="keep every decoded image under RUN_DIR/decoded")
    p.add_argument("--no-cache", action="store_true",
                   help="do not reuse results from the machine-wide cache ($LCBENCH_CACHE/results.sqlite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lcbench.rates import parse_rate_list, parse_rate_overrides
    from lcbench.registry import load_plugin
    from lcbench.runner import RunOptions, execute
    from lcbench.summary import format_terminal_table

    if args.scheduler and args.backend != "dask":  # it ran on this machine, the scheduler unused
        raise ValueError("--scheduler is used only with --backend dask: add --backend dask to run on that "
                         "cluster, or drop --scheduler to run here")
    if args.scheduler and args.jobs is not None:
        print("note: --jobs is ignored with --scheduler: the cluster's workers run the jobs (their number is "
              "set where they are started: dask worker --nworkers N --nthreads 1)", file=sys.stderr)
    for plugin in args.plugin:
        load_plugin(plugin)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    try:
        every, per_codec = parse_rate_overrides(args.quality)
    except ValueError as exc:  # "bad rate value 'abc'" named no option
        raise ValueError(f"-q/--quality: {exc}") from exc
    try:
        targets = parse_rate_list(args.target_bpp) if args.target_bpp else None
    except ValueError as exc:
        raise ValueError(f"--target-bpp: {exc}") from exc
    if args.out is not None:  # a bare "[Errno 17] File exists" / "Not a directory" named no option
        out = Path(args.out).absolute()
        for p in (out, *out.parents):
            if p.exists():
                if not p.is_dir():
                    where = "is a file" if p == out else f"lies under the file {p}"
                    raise ValueError(f"--out {args.out}: {where}; give a folder for the run (created if missing)")
                break
    if targets and (every or per_codec):  # the user's -q only: a preset's grid is not the user's input
        raise ValueError("--target-bpp replaces the rate grid: do not combine it with -q/--quality")
    preset = None
    if args.preset:
        from lcbench.presets import get_preset

        preset = get_preset(args.preset)
        codecs = list(preset.codecs) + [c for c in codecs if c not in preset.codecs]
        if not targets:
            # the protocol's grid, unless -q overrides it for a codec (or for all); with --target-bpp the
            # preset's codecs are rate-matched to the targets like every other codec (its grid is not used)
            per_codec = {**({} if every else {k: v for k, v in preset.rates.items()}), **per_codec}
    if not codecs:
        raise ValueError("--codecs: no codec given (or use --preset)")
    options = RunOptions(codecs=codecs, dataset=args.dataset, out=args.out, rates=every, codec_rates=per_codec,
                         target_bpp=targets, jobs=args.jobs, device=args.device, max_images=args.max_images,
                         image_glob=",".join(args.image_glob) if args.image_glob else None,
                         save_bitstreams=args.save_bitstreams, save_decoded=args.save_decoded,
                         progress=False if args.no_progress else None, use_cache=not args.no_cache, backend=args.backend,
                         scheduler=args.scheduler, metrics_backend=args.metrics_backend)
    outcome = execute(options)
    print(format_terminal_table(outcome.frame))
    if preset is not None:
        from lcbench.presets import format_sr_table

        print("\n" + format_sr_table(outcome.frame, style="text"))
    done = outcome.planned - len(outcome.failures)
    print(f"\n{done}/{outcome.planned} jobs ok ({outcome.skipped} reused from {outcome.run_dir}, "
          f"{outcome.from_cache} from the result cache); results: {outcome.run_dir / 'results.csv'}")
    for label, n in outcome.old_version_rows.items():
        print(f"note: {n} row(s) of {label} measured only by an older version of it, on an earlier state of "
              "the image file, with older metric definitions or under an older rate-parameter name (jpeg2000's "
              "grid was target_bpp, now nominal_bpp) are left out of results.csv (run those rate points and "
              "images again to measure them now)", file=sys.stderr)
    if outcome.ignored:
        reasons = outcome.ignored_reasons
        names = "; ".join(f"{p} ({reasons[p]})" if reasons.get(p) else p for p in outcome.ignored[:8])
        more = f"; and {len(outcome.ignored) - 8} more" if len(outcome.ignored) > 8 else ""
        print(f"note: {len(outcome.ignored)} file(s)/folder(s) under the dataset folder are not benchmarked: "
              f"{names}{more}; all listed with their reasons in run.json", file=sys.stderr)
    if outcome.failures:
        print(f"{len(outcome.failures)} job(s) FAILED:", file=sys.stderr)
        shown = {}
        for rec in outcome.failures:
            shown.setdefault(rec["error"], 0)
            shown[rec["error"]] += 1
        for err, count in list(shown.items())[:20]:
            print(f"  [{count}x] {err}", file=sys.stderr)
        return 1
    return 0

