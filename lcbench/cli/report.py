"""``lcbench report``: tables, RD figures, BD-rates and an HTML page from one or more runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "report"
HELP = "summary tables (md/csv/json/tex), RD figures (pdf/png/svg), BD-rates and an HTML report from runs"

REPORT_METRICS = ("psnr_rgb", "psnr_y", "ms_ssim_db", "ssim")
FIGSIZES = {"single": (3.5, 2.6), "double": (7.16, 3.2)}  # IEEE/CVPR column widths in inches


def parse_figsize(text: str) -> tuple[float, float]:
    """``3.5,2.6``, ``3.5x2.6`` or ``single``/``double`` (column width) -> inches."""
    if text in FIGSIZES:
        return FIGSIZES[text]
    try:
        w, h = (float(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--figsize wants WIDTH,HEIGHT in inches or single|double, got {text!r}")
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--figsize must be positive, got {text!r}")
    return w, h


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_common(p: argparse.ArgumentParser) -> None:
    """Arguments shared with ``lcbench bd``."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or results.csv files) to merge")
    p.add_argument("--anchor", help="codec label the BD-rates are measured against (default: jpeg if present, "
                                    "else the first codec)")
    p.add_argument("--method", choices=("pchip", "cubic"), default="pchip",
                   help="BD interpolation: pchip (AV1/JVET CTC, default) or cubic (VCEG-M33 polynomial)")
    p.add_argument("--aggregate", choices=("mean", "mse"), default="mean",
                   help="mean over images of each per-image value (default), or PSNR from the mean MSE")
    p.add_argument("--with", dest="published", action="append", default=[], metavar="FILE.json",
                   help="add a CompressAI results JSON (published curve) to the figures and BD tables")
    p.add_argument("--codecs", type=csv_list, help="only these codec labels (comma-separated)")
    p.add_argument("--on-duplicate", choices=("error", "first", "last"), default="error",
                   help="a job present in two runs: refuse (default) or keep the first/last")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/report of the first run)")
    p.add_argument("--metrics", type=csv_list, default=None,
                   help="metrics for figures and BD tables (default: psnr_rgb,psnr_y,ms_ssim_db,ssim, those present)")
    p.add_argument("--figsize", type=parse_figsize, help="figure size WIDTH,HEIGHT in inches, or single|double")
    p.add_argument("--style", choices=("paper", "slides"), default="paper", help="figure style (default: paper)")
    p.add_argument("--ci", action="store_true", help="draw 95%% confidence bands across images on the RD curves")
    p.add_argument("--spread", choices=("std", "ci", "none"), default="std",
                   help="spread shown beside means in md/tex tables (default: std)")
    p.add_argument("--formats", type=csv_list, default=["pdf", "png", "svg"], help="figure formats")
    p.add_argument("--no-figures", action="store_true", help="skip figures (faster)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML report")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")


def positive_bootstrap(n: int) -> int:
    """``--bootstrap N``: at least ``compare.MIN_BOOTSTRAP`` resamples; ValueError (exit 2) otherwise."""
    from lcbench.compare import MIN_BOOTSTRAP

    if n < MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap must be at least {MIN_BOOTSTRAP} resamples (a 95% interval from fewer is "
                         f"noise), got {n}")
    return n


def metrics_to_use(requested, df, published, defaults, option: str) -> list[str]:
    """The metrics asked for, each checked to be a quality metric column of the results or of a published
    curve (ValueError naming the valid ones: exit 2); without a request, the defaults present."""
    from lcbench.summary import check_metric_names

    tables = [df] + [p.curve for p in published]
    if requested:
        return check_metric_names(list(requested), *tables, option=option)
    return [m for m in defaults if any(m in t.columns for t in tables)]


def load(args: argparse.Namespace):
    """Results frame and published curves from the common arguments; raises ValueError on bad input."""
    from lcbench.compressai_json import read_compressai_json
    from lcbench.results import codecs_in_order, datasets, load_results, select_codecs, split_rate_curves

    positive_bootstrap(args.bootstrap)
    # a codec's grid rows and its --target-bpp rows are two curves: jpeg2000 and jpeg2000@target_bpp
    df = split_rate_curves(load_results(args.runs, on_duplicate=args.on_duplicate))
    names = datasets(df)
    if len(names) > 1:
        raise ValueError(f"the runs are on different datasets ({', '.join(names)}); report them separately")
    df = select_codecs(df, args.codecs)
    published = []
    for path in args.published:
        try:
            published.append(read_compressai_json(path))
        except OSError as exc:  # a bare "[Errno 2] No such file" named neither the option nor its use
            raise ValueError(f"--with {path}: cannot read this CompressAI JSON: {exc.strerror or exc}") from exc
    codecs = codecs_in_order(df)
    # names compared ignoring case: "JPEG" beside a measured "jpeg" reads as the same codec
    seen = {c.casefold(): f"measured codec {c!r}" for c in codecs}
    for p in published:
        other = seen.get(p.name.casefold())
        if other:
            raise ValueError(f"{p.source or 'published curve'}: published curve name {p.name!r} clashes with {other} "
                             f"(names are compared ignoring case); give it another \"name\" in the JSON, "
                             f"e.g. \"{p.name} (published)\"")
        seen[p.name.casefold()] = f"the published curve {p.name!r} of {p.source or '?'}"
    anchor = args.anchor or ("jpeg" if "jpeg" in codecs else codecs[0])
    if anchor not in codecs and anchor not in [p.name for p in published]:
        raise ValueError(f"--anchor {anchor!r} is not among the codecs {codecs + [p.name for p in published]}")
    return df, published, anchor


def run(args: argparse.Namespace) -> int:
    import tempfile

    import pandas as pd

    from lcbench.bdrate import bd_table, per_image_bd_frame
    from lcbench.compressai_json import curve_from_results, write_compressai_json
    from lcbench.results import codecs_in_order, failed_jobs
    from lcbench.summary import (aggregation_note, bd_display_table, format_terminal_table, summarize, summary_metrics,
                                 summary_table, to_json, to_latex, to_markdown, to_text)

    from lcbench.plots import FORMATS

    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown:  # before any table is written
        raise ValueError(f"--formats: unknown figure format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    df, published, anchor = load(args)
    metrics = metrics_to_use(args.metrics, df, published, REPORT_METRICS, "--metrics")
    out = args.out or Path(args.runs[0] if Path(args.runs[0]).is_dir() else Path(args.runs[0]).parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)

    shown = summary_metrics(df)  # the standard columns and any extra metric (psnr_y_sr, ...)
    summ = summarize(df, metrics=shown, aggregate=args.aggregate)
    spread = None if args.spread == "none" else args.spread
    table = summary_table(summ, metrics=shown, spread=spread, aggregate=args.aggregate)
    summ.to_csv(out / "summary.csv", index=False)
    written.append(out / "summary.csv")
    write("summary.md", to_markdown(table))
    write("summary.tex", to_latex(table, label="tab:rd-summary"))
    write("summary.json", to_json(summ, aggregate=args.aggregate, runs=[str(r) for r in args.runs]))

    extra = {p.name: p.curve for p in published}
    bd_tables, bd = [], None
    if len(codecs_in_order(df)) + len(published) > 1 and metrics:
        bd = bd_table(df, anchor, metrics=metrics, method=args.method, aggregate=args.aggregate,
                      extra_curves=extra, extra_sources={p.name: p.source for p in published}, n_boot=args.bootstrap)
        bd.to_csv(out / "bd.csv", index=False)
        written.append(out / "bd.csv")
        write("bd.json", to_json(bd, aggregate=args.aggregate, anchor=anchor, method=args.method))
        bd_tables = [bd_display_table(bd, "rate"), bd_display_table(bd, "metric")]
        write("bd.md", "\n".join(to_markdown(t) for t in bd_tables))
        write("bd.tex", "\n".join(to_latex(t, label=f"tab:bd-{k}") for t, k in zip(bd_tables, ("rate", "metric"))))
    per_image_bd = None
    if anchor in codecs_in_order(df) and len(codecs_in_order(df)) > 1 and metrics:
        per_image_bd = pd.concat([per_image_bd_frame(df, anchor, m, "rate", args.method) for m in metrics],
                                 ignore_index=True)
        per_image_bd.to_csv(out / "bd_per_image.csv", index=False)
        written.append(out / "bd_per_image.csv")

    for codec in codecs_in_order(df):
        safe = "".join(ch if ch.isalnum() or ch in "-_.+=" else "_" for ch in codec)
        written.append(write_compressai_json(out / "compressai" / f"{safe}.json", curve_from_results(
            df, codec, args.aggregate, f"lcbench {', '.join(str(r) for r in args.runs)}; {aggregation_note(args.aggregate)}")))

    figures, embed_dir = {}, None
    if not args.no_figures:
        from lcbench.plots import Y_LABELS, plot_all

        figs = plot_all(df, out, metrics=metrics, formats=args.formats, published=published, aggregate=args.aggregate,
                        ci=args.ci, style=args.style, figsize=args.figsize)
        for metric, paths in figs.items():
            written += paths
            png = [p for p in paths if p.suffix in (".png", ".svg")]
            if png:
                figures[f"{Y_LABELS.get(metric, metric)} vs bpp"] = png[0]
        if figs and not figures and not args.no_html:
            # --formats without png/svg: the HTML report still embeds the figures (rendered to a
            # temporary folder, not left beside the files asked for)
            embed_dir = tempfile.TemporaryDirectory(prefix="lcbench-report-")
            embed = plot_all(df, Path(embed_dir.name), metrics=metrics, formats=["svg"],
                             published=published, aggregate=args.aggregate, ci=args.ci, style=args.style,
                             figsize=args.figsize)
            figures = {f"{Y_LABELS.get(m, m)} vs bpp": paths[0] for m, paths in embed.items() if paths}
    if not args.no_html:
        from lcbench.html_report import write_html_report

        meta = {"runs": ", ".join(str(r) for r in args.runs), "anchor": anchor, "BD method": args.method,
                "aggregation": aggregation_note(args.aggregate)}
        if published:
            meta["published curves (not measured by lcbench)"] = ", ".join(f"{p.name} ({p.source})" for p in published)
        written.append(write_html_report(out / "report.html", df, summary_tables=[table], bd_tables=bd_tables,
                                         figures=figures, per_image_bd=per_image_bd, meta=meta))
    if embed_dir is not None:
        embed_dir.cleanup()

    print(format_terminal_table(df, aggregate=args.aggregate))
    if bd_tables:
        print(to_text(bd_tables[0]))
    failed = failed_jobs(df)
    if len(failed):
        print(f"note: {len(failed)} failed job(s) left out of every value", file=sys.stderr)
    print(f"wrote {len(written)} files to {out}")
    return 0
