"""Rate-distortion figures ready for a paper: one figure per metric against bpp.

- Each codec keeps its colour and marker in every figure (``codec_styles``), from the
  Okabe-Ito palette, which stays distinguishable for colour-blind readers and in greyscale
  thanks to the markers. Published curves are dashed, with "(published)" in the legend.
- PDF with TrueType (Type 42) fonts that journals' checkers accept, PNG at 300 dpi, SVG with
  text as paths (renders the same everywhere).
- ``style="paper"`` fits a single column (3.5 x 2.6 in, 8 pt text); ``"slides"`` is larger.
- Optional bands: the confidence interval of the mean across images at each rate point.

Uses the Agg canvas and ``Figure`` objects directly, never pyplot's global state, so it works
headless and in threads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from lcbench.compressai_json import PublishedCurve

PLOT_METRICS = ("psnr_rgb", "psnr_y", "ms_ssim_db", "ssim")
FORMATS = ("pdf", "png", "svg")
Y_LABELS = {"psnr_rgb": "PSNR-RGB [dB]", "psnr_y": "PSNR-Y [dB]", "ms_ssim_db": "MS-SSIM [dB]", "ssim": "SSIM",
            "ms_ssim": "MS-SSIM"}
# Okabe & Ito (2008) colour-blind safe palette, yellow left out (invisible on white), black last.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
STYLES = {
    "paper": {"figsize": (3.5, 2.6), "font": 8.0, "line": 1.0, "marker": 3.2, "legend": 6.5},
    "slides": {"figsize": (6.4, 4.8), "font": 14.0, "line": 2.0, "marker": 6.5, "legend": 12.0},
}
RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path", "font.family": "DejaVu Sans",
      "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.02}


def codec_styles(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per name, by position, so the same list gives the same look everywhere."""
    return {n: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(dict.fromkeys(names))}


def published_label(name: str) -> str:
    """Legend text of a published curve: ``JPEG`` -> ``JPEG (published)``, so it never reads as measured
    (a name that already says "published" is kept)."""
    return name if "published" in name.lower() else f"{name} (published)"


def _rc(style: str) -> dict:
    if style not in STYLES:
        raise ValueError(f"unknown plot style {style!r}; choose one of {sorted(STYLES)}")
    s = STYLES[style]
    return {**RC, "font.size": s["font"], "axes.labelsize": s["font"], "xtick.labelsize": s["font"] - 1,
            "ytick.labelsize": s["font"] - 1, "legend.fontsize": s["legend"], "lines.linewidth": s["line"],
            "lines.markersize": s["marker"], "axes.linewidth": 0.6 if style == "paper" else 1.0,
            "grid.linewidth": 0.4 if style == "paper" else 0.8}


def plot_rd(df: pd.DataFrame, metric: str, *, codecs: Sequence[str] | None = None, aggregate: str = "mean",
            ci: bool = False, confidence: float = 0.95, published: Sequence[PublishedCurve] = (),
            styles: Mapping[str, tuple[str, str]] | None = None, style: str = "paper",
            figsize: tuple[float, float] | None = None, title: str | None = None) -> Figure:
    """One RD figure: ``metric`` against mean bpp for each codec of a results frame, plus the
    published curves that have the metric. ``ci`` draws the confidence band across images. The
    curves are over one image set, the images with a usable value at every rate point of every
    codec drawn (as in the BD tables; the legend gives n/N when some are left out), so no point
    and no curve averages different images. A codec with no such image is not drawn, and the
    figure names it; codecs with no image in common are drawn over their own images, and said so."""
    from lcbench.bdrate import image_completeness
    from lcbench.compressai_json import aggregate_like_published
    from lcbench.results import codecs_in_order, split_rate_curves
    from lcbench.summary import rd_curve

    df = split_rate_curves(df)  # a codec's grid and target_bpp rows are two curves (jpeg, jpeg@target_bpp)
    codecs = list(codecs) if codecs is not None else codecs_in_order(df)
    styles = dict(styles or codec_styles(codecs + [p.name for p in published]))
    rc = _rc(style)  # raises a clear error for an unknown style
    s = STYLES[style]
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=figsize or s["figsize"], layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        drawn = 0
        # with a published curve of this metric, measured curves are averaged as CompressAI averages,
        # so the two are drawn on one scale (MS-SSIM dB of the mean, not the mean of per-image dB)
        overlaid = any(metric in p.curve.columns for p in published)
        how = aggregate_like_published(metric) if overlaid else aggregate
        # one image set at every rate point and for every curve: images lacking a usable value at
        # some point of some codec are left out, and the legend says how many images a curve is over
        has_metric = metric in df.columns
        present = [c for c in codecs if has_metric and (df["codec"] == c).any()]
        own = {c: image_completeness(df, [c], metric) for c in present}
        drawable = [c for c in present if own[c][0]]
        common = image_completeness(df, drawable, metric) if drawable else ([], {})
        apart = bool(drawable) and not common[0]  # no image in common: each over its own images
        notes = [f"not drawn, no image with a usable {metric} at every rate point: {', '.join(not_drawn)}"
                 for not_drawn in [[c for c in present if c not in drawable]] if not_drawn]
        if apart:
            notes.append("no image has a usable value for every codec: each curve is over its own images")
        for codec in drawable:
            images, left_out = own[codec] if apart else common
            n_all = len(set(map(str, df.loc[df["codec"] == codec, "image"]))) if apart else len(images) + len(left_out)
            c = rd_curve(df, codec, metric, aggregate=how, confidence=confidence, images=images)
            if c.empty:
                continue
            label = codec + (f" ({len(images)}/{n_all} images)" if len(images) < n_all else "")
            colour, marker = styles.get(codec, ("#333333", "o"))
            x, y = c["bpp"].to_numpy(), c[metric].to_numpy()
            ax.plot(x, y, color=colour, marker=marker, label=label, zorder=3)
            if ci:
                half = c[f"{metric}_ci"].to_numpy()
                ok = np.isfinite(half)
                ax.fill_between(x[ok], (y - half)[ok], (y + half)[ok], color=colour, alpha=0.12, linewidth=0,
                                zorder=2)
            drawn += 1
        for p in published:
            if metric not in p.curve.columns:
                continue
            c = p.curve[["bpp", metric]].dropna().sort_values("bpp")
            colour, marker = styles.get(p.name, ("#333333", "x"))
            ax.plot(c["bpp"], c[metric], color=colour, marker=marker, linestyle="--", label=published_label(p.name),
                    markerfacecolor="none", zorder=3)
            drawn += 1
        ax.set_xlabel("Rate [bpp]")
        ax.set_ylabel(Y_LABELS.get(metric, metric) + (" (of the mean, as CompressAI)" if how != aggregate else ""))
        ax.set_xlim(left=0)
        ax.grid(True, color="#d9d9d9", zorder=0)
        ax.set_axisbelow(True)
        if title:
            ax.set_title(title)
        if notes:  # below the axes, so a reader of the figure alone sees what it leaves out: wrapped to
            # the figure's width, as the figure's x label, for which the constrained layout makes room
            import textwrap

            width = max(30, int(fig.get_figwidth() * 20))
            fig.supxlabel("\n".join(textwrap.fill(n, width) for n in notes), x=0.01, ha="left",
                          fontsize="x-small", color="#a00000")
        if drawn:
            ax.legend(loc="lower right", frameon=True, framealpha=0.9, edgecolor="none", handlelength=2.2,
                      borderaxespad=0.3)
        else:
            ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center", va="center")
    fig._lcbench_style = style  # savefig must use the same rc (fonts are chosen when saving)
    return fig


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 300) -> list[Path]:
    """Write ``stem.pdf``/``.png``/``.svg``: PDF fonts as Type 42, PNG at ``dpi``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown figure format(s) {unknown}; choose from {FORMATS}")
    paths = []
    with matplotlib.rc_context(_rc(getattr(fig, "_lcbench_style", "paper"))):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            fig.savefig(path, format=fmt, dpi=dpi, metadata={"Creator": "lcbench"} if fmt in ("pdf", "svg") else None)
            paths.append(path)
    return paths


def plot_all(df: pd.DataFrame, out_dir: str | Path, metrics: Sequence[str] = PLOT_METRICS,
             formats: Sequence[str] = FORMATS, published: Sequence[PublishedCurve] = (), prefix: str = "rd_",
             **kwargs) -> dict[str, list[Path]]:
    """One figure per metric into ``out_dir`` (``rd_psnr_rgb.pdf`` ...), same codec styles in all;
    returns the written paths per metric. Metrics absent from the results are skipped."""
    from lcbench.results import codecs_in_order, split_rate_curves

    df = split_rate_curves(df)
    codecs = list(kwargs.pop("codecs", None) or codecs_in_order(df))
    styles = codec_styles(codecs + [p.name for p in published])
    written: dict[str, list[Path]] = {}
    for metric in metrics:
        if metric not in df.columns and not any(metric in p.curve.columns for p in published):
            continue
        fig = plot_rd(df, metric, codecs=codecs, published=published, styles=styles, **kwargs)
        written[metric] = save_figure(fig, Path(out_dir) / f"{prefix}{metric}", formats)
    return written
