"""Per codec x rate point aggregation of a results frame, and tables in Markdown, CSV, JSON,
LaTeX (booktabs) and plain text.

Aggregation over images, stated in every table's caption:
- ``mean`` (default): the arithmetic mean over images of each per-image value, as CompressAI
  and most papers do (PSNR is averaged in dB, MS-SSIM dB is the mean of per-image dB values).
- ``mse``: PSNR from the mean MSE over images (``mse_rgb``/``mse_y`` columns), and MS-SSIM dB
  from the mean MS-SSIM (what CompressAI's plot script does); other columns are means.
Spread is always over per-image values: sample standard deviation (ddof=1) and the half
width of a Student-t confidence interval of the mean.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd

Aggregate = Literal["mean", "mse"]
AGGREGATES = ("mean", "mse")
SUMMARY_METRICS = ("bpp", "psnr_rgb", "psnr_y", "ssim", "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s")
HIGHER_IS_BETTER = {"bpp": False, "psnr_rgb": True, "psnr_y": True, "ssim": True, "ms_ssim": True,
                    "ms_ssim_db": True, "enc_time_s": False, "dec_time_s": False, "mse_rgb": False, "mse_y": False,
                    "psnr_y_sr": True, "ssim_y_sr": True}
# label, decimals, display scale
DISPLAY = {
    "bpp": ("bpp", 4, 1.0),
    "psnr_rgb": ("PSNR-RGB [dB]", 2, 1.0),
    "psnr_y": ("PSNR-Y [dB]", 2, 1.0),
    "ssim": ("SSIM", 4, 1.0),
    "ms_ssim": ("MS-SSIM", 4, 1.0),
    "ms_ssim_db": ("MS-SSIM [dB]", 2, 1.0),
    "enc_time_s": ("Enc. [ms]", 1, 1000.0),
    "dec_time_s": ("Dec. [ms]", 1, 1000.0),
    "mse_rgb": ("MSE-RGB", 2, 1.0),
    "mse_y": ("MSE-Y", 2, 1.0),
    "psnr_y_sr": ("PSNR-Y SR [dB]", 2, 1.0),  # pipelines' super-resolution protocol (sr_metrics)
    "ssim_y_sr": ("SSIM-Y SR", 4, 1.0),
}
METRIC_NAMES = {"psnr_rgb": "PSNR-RGB", "psnr_y": "PSNR-Y", "ssim": "SSIM", "ms_ssim": "MS-SSIM",
                "ms_ssim_db": "MS-SSIM dB", "mse_rgb": "MSE-RGB", "mse_y": "MSE-Y"}
_MSE_OF = {"psnr_rgb": "mse_rgb", "psnr_y": "mse_y"}
COMPARABLE_RATE_PARAMS = ("target_bpp",)
LOW_OVERLAP = 0.5  # BD values over less of the joint range than this get a note


# Quality metrics a BD-rate / RD curve can be computed on (quality rises with rate).
QUALITY_METRICS = ("psnr_rgb", "psnr_y", "ssim", "ms_ssim", "ms_ssim_db")
# Numeric result columns that are not quality metrics: rate, size, distortion (falls with rate), time.
NON_METRIC_COLUMNS = frozenset({"quality", "width", "height", "bytes", "bpp", "est_bpp", "matched_rate",
                                "mse_rgb", "mse_y", "enc_time_s", "dec_time_s", "n_images", "ok",
                                "kept_fraction"})  # importance_map's share of code bits kept: a diagnostic


def quality_metric_columns(table: pd.DataFrame) -> list[str]:
    """Columns of a results frame (or an average curve) usable as a BD/RD quality metric: the
    standard ``QUALITY_METRICS`` present, then numeric extra metric columns (e.g. a pipeline's
    ``psnr_y_sr``); rate, size, MSE and time columns are not metrics."""
    out = [m for m in QUALITY_METRICS if m in table.columns]
    for col in table.columns:
        if col in out or col in NON_METRIC_COLUMNS or col.startswith("mse") or col.endswith(("_s", "bpp", "_ci", "_std")):
            continue
        v = table[col]
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v) and np.isfinite(v.astype(float)).any():
            out.append(col)
    return out


def check_metric_names(metrics: Sequence[str], *tables: pd.DataFrame, option: str = "--metric") -> list[str]:
    """``metrics`` if every name is a quality metric column of at least one of ``tables``; else
    ``ValueError`` naming the unknown ones and the valid names."""
    valid: list[str] = []
    for t in tables:
        valid += [m for m in quality_metric_columns(t) if m not in valid]
    unknown = [m for m in metrics if m not in valid]
    if unknown:
        raise ValueError(f"{option}: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                         f"a quality metric of these results; valid: {', '.join(valid) or '(none)'}")
    if len(set(metrics)) != len(list(metrics)):
        raise ValueError(f"{option}: a metric is named twice: {list(metrics)}")
    return list(metrics)


def _ensure_validated(df: pd.DataFrame) -> pd.DataFrame:
    if "ok" in df.columns:
        return df
    from lcbench.results import validate

    return validate(df)


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregation {aggregate!r}; choose one of {AGGREGATES}")


def aggregation_note(aggregate: str, confidence: float = 0.95, spread: bool = True) -> str:
    """One sentence stating how values were aggregated, for captions; ``spread=False`` for a
    table that shows no spread (the end-of-run table), which then does not mention it."""
    _check_aggregate(aggregate)
    how = ("mean over images of each per-image value" if aggregate == "mean"
           else "PSNR from the mean MSE over images, MS-SSIM dB from the mean MS-SSIM, other columns mean over images")
    if not spread:
        return f"Aggregation: {how}."
    return f"Aggregation: {how}; spread: standard deviation and {confidence:.0%} CI of the mean across images."


def _bootstrap_min_values() -> int:
    from .bdrate import BOOTSTRAP_MIN_VALUES  # here: bdrate imports scipy.interpolate (~0.8 s at start-up)

    return BOOTSTRAP_MIN_VALUES


def pooled_as(metric: str, aggregate: str) -> str:
    """How ``_pooled`` really aggregates ``metric`` under ``aggregate``: "mse" pools only PSNR-RGB,
    PSNR-Y (from the mean MSE) and MS-SSIM dB (from the mean MS-SSIM); every other column, e.g. a
    pipeline's psnr_y_sr, which has no MSE column, is a mean over images either way."""
    if aggregate == "mse" and (metric in _MSE_OF or metric == "ms_ssim_db"):
        return "mse"
    return "mean"


def _pooled(values: pd.DataFrame, metric: str, aggregate: str) -> float:
    """The aggregate of one metric over the rows (images) of one rate point."""
    if aggregate == "mse" and metric in _MSE_OF:
        mse_col = _MSE_OF[metric]
        if mse_col not in values.columns:
            raise ValueError(f"--aggregate mse needs the {mse_col!r} column, which these results lack")
        mse = values[mse_col].dropna()
        if mse.empty:
            return math.nan
        m = float(mse.mean())
        return math.inf if m == 0 else 10 * math.log10(255.0 ** 2 / m)
    if aggregate == "mse" and metric == "ms_ssim_db" and "ms_ssim" in values.columns:
        ms = values["ms_ssim"].dropna()
        if ms.empty:
            return math.nan
        m = float(ms.mean())
        return math.inf if m >= 1 else -10 * math.log10(1 - m)
    v = values[metric].dropna()
    return float(v.mean()) if not v.empty else math.nan


def _count(values: pd.DataFrame, metric: str, aggregate: str) -> int:
    """How many images (rows) the aggregate of ``metric`` is over: those with a value (not NaN)."""
    col = metric
    if aggregate == "mse" and metric in _MSE_OF and _MSE_OF[metric] in values.columns:
        col = _MSE_OF[metric]
    elif aggregate == "mse" and metric == "ms_ssim_db" and "ms_ssim" in values.columns:
        col = "ms_ssim"
    return int(values[col].notna().sum())


def _spread(v: pd.Series, confidence: float) -> tuple[float, float]:
    """(standard deviation, CI half width) over the values the mean is over (NaN dropped, as the
    mean does); NaN when fewer than 2 values or when a value is infinite (the mean is then
    infinite too: a spread beside it would describe other numbers)."""
    v = v.dropna()
    if len(v) < 2 or not np.isfinite(v.to_numpy(dtype=float)).all():
        return math.nan, math.nan
    sd = float(v.std(ddof=1))
    from scipy.special import stdtrit  # Student-t quantile; scipy.stats would cost ~1 s at start-up

    half = float(stdtrit(len(v) - 1, 0.5 + confidence / 2)) * sd / math.sqrt(len(v))
    return sd, half


TIME_METRICS = ("enc_time_s", "dec_time_s")
BATCH_NOTE = "time is the mean over a batch of"  # lcbench.worker's note on batched jobs


def _time_note(ok: pd.DataFrame, time_metrics: Sequence[str]) -> str:
    """Why the times of one rate point have no spread across images, or "": per-image time =
    batch time / N (the worker's note), or every image has the same time."""
    if not time_metrics or ok.empty:
        return ""
    notes = ok["notes"].astype(object).fillna("").astype(str) if "notes" in ok.columns else pd.Series(dtype=str)
    if notes.str.contains(BATCH_NOTE, regex=False).any():
        return "per-image time = batch time / batch size (batched codec)"
    for m in time_metrics:
        v = ok[m].dropna()
        if len(v) >= 2 and v.nunique() == 1:
            return "the same time for every image"
    return ""


def summary_metrics(df: pd.DataFrame) -> list[str]:
    """``SUMMARY_METRICS`` then the extra quality metric columns a run has (a pipeline's
    ``psnr_y_sr``/``ssim_y_sr``, a plugin's extra metrics), so summaries leave none out."""
    return list(SUMMARY_METRICS) + [m for m in quality_metric_columns(df) if m not in SUMMARY_METRICS]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS, aggregate: Aggregate = "mean",
              confidence: float = 0.95, spread: bool = True) -> pd.DataFrame:
    """One row per codec and rate point: ``n_images``, ``n_failed``, and for each metric ``m``
    the aggregate ``m``, ``m_n`` (the images it is over: fewer than ``n_images`` where the metric
    is NaN, e.g. MS-SSIM of images with a short side of 160 px or less), ``m_std`` and ``m_ci``
    (half width of the CI of the mean; both left out with ``spread=False``, which skips scipy's
    import, e.g. for the end-of-run table). A metric with an infinite value (PSNR of a lossless
    decode) has an infinite mean and no spread (NaN). Times get no spread (NaN) where they are not
    per-image measurements: a batched codec's per-image time is the batch's time / N, the same for
    every image of a batch; ``time_note`` says so (also when every image has the same time).

    Failed jobs are counted in ``n_failed`` and left out of every value. Rows are ordered by
    codec (order of appearance) and mean bpp.
    """
    from lcbench.results import codecs_in_order, split_rate_curves

    _check_aggregate(aggregate)
    df = split_rate_curves(_ensure_validated(df))  # grid and target_bpp rows of one codec: two labels
    metrics = [m for m in metrics if m in df.columns]
    rows = []
    for codec in codecs_in_order(df):
        sub = df.loc[df["codec"] == codec]
        for (rate_param, quality), g in sub.groupby(["rate_param", "quality"], sort=False, dropna=False):
            ok = g.loc[g["ok"]]
            row = {"codec": codec, "rate_param": rate_param, "quality": quality, "n_images": int(len(ok)),
                   "n_failed": int(len(g) - len(ok))}
            if rate_param in COMPARABLE_RATE_PARAMS and "bpp" in ok.columns:
                # per image: misses in opposite directions cancel in the mean (0.259 and 0.343 bpp
                # for a 0.3 target averaged 0.3009, and the row looked on target)
                from lcbench.jobs import OFF_TARGET

                target = float(quality)
                row["n_off_target"] = int((~((ok["bpp"] - target).abs() <= OFF_TARGET * target)).sum())
            note = _time_note(ok, [m for m in metrics if m in TIME_METRICS])
            for m in metrics:
                row[m] = _pooled(ok, m, aggregate)
                row[f"{m}_n"] = _count(ok, m, aggregate)
                if spread:
                    # a batched codec's per-image time is its batch's time / N: no spread across images
                    row[f"{m}_std"], row[f"{m}_ci"] = ((math.nan, math.nan) if m in TIME_METRICS and note
                                                       else _spread(ok[m], confidence))
            if any(m in TIME_METRICS for m in metrics):
                row["time_note"] = note
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = out.assign(_c=out["codec"].map({c: i for i, c in enumerate(codecs_in_order(df))}))
    order = order.sort_values(["_c", "bpp", "quality"] if "bpp" in out.columns else ["_c", "quality"], kind="stable")
    return order.drop(columns="_c").reset_index(drop=True)


def rd_curve(df: pd.DataFrame, codec: str, metric: str, aggregate: Aggregate = "mean",
             images: Sequence[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """The average rate-distortion curve of one codec: columns ``quality``, ``bpp``, ``metric``,
    ``<metric>_ci`` and ``n_images``, sorted by bpp; only successful jobs with a finite metric,
    optionally restricted to ``images``. ``codec`` is a curve label of ``split_rate_curves``: a codec
    with grid and rate-matched rows has two curves (``jpeg2000``, ``jpeg2000@target_bpp``)."""
    from lcbench.results import split_rate_curves

    _check_aggregate(aggregate)
    df = split_rate_curves(_ensure_validated(df))
    sub = df.loc[(df["codec"] == codec) & df["ok"]]
    sub = sub.loc[np.isfinite(sub[metric])]
    if images is not None:
        sub = sub.loc[sub["image"].isin(list(images))]
    rows = []
    for (_, quality), g in sub.groupby(["rate_param", "quality"], sort=False):
        rows.append({"quality": quality, "bpp": float(g["bpp"].mean()), metric: _pooled(g, metric, aggregate),
                     f"{metric}_ci": _spread(g[metric], confidence)[1], "n_images": len(g)})
    cols = ["quality", "bpp", metric, f"{metric}_ci", "n_images"]
    return pd.DataFrame(rows, columns=cols).sort_values("bpp", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- tables

@dataclass
class Cell:
    text: str
    value: float = math.nan  # for finding the best value; NaN for text cells
    bold: bool = False
    spread: str = ""  # "1.23" shown as "text ± spread"
    suffix: str = ""  # shown after value and spread, e.g. "(n=7)"

    def display(self) -> str:
        """The cell as plain text: value, ± spread, suffix."""
        text = f"{self.text} ± {self.spread}" if self.spread else self.text
        return f"{text} {self.suffix}" if self.suffix else text


@dataclass
class Table:
    """A rendered-agnostic table: header, rows of cells, caption and notes."""

    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per column


def _fmt(value: float, decimals: int, scale: float = 1.0, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value * scale:{'+' if signed else ''}.{decimals}f}"


def mark_best(table: Table, columns: Sequence[int], higher_is_better: Sequence[bool],
              groups: Sequence[Sequence[int]] | None = None) -> None:
    """Bold the best value of each given column, within each group of row indices (default: all
    rows). Ties at the displayed precision are all bold; groups with one row get no bold."""
    groups = groups if groups is not None else [list(range(len(table.rows)))]
    for col, hib in zip(columns, higher_is_better):
        for group in groups:
            cells = [table.rows[r][col] for r in group]
            finite = [c for c in cells if math.isfinite(c.value)]
            if len(finite) < 2:
                continue
            best_text = (max if hib else min)(finite, key=lambda c: c.value).text
            for c in finite:
                if c.text == best_text:
                    c.bold = True


def summary_table(summary: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS, spread: str | None = "std",
                  aggregate: str = "mean", confidence: float = 0.95) -> Table:
    """Table of ``summarize`` output. Where several codecs share a rate point (e.g. rate-matched
    runs at a target bpp), the best value per column among them is bold."""
    metrics = [m for m in metrics if m in summary.columns]
    header = ["Codec", "Rate point", "N"] + [DISPLAY.get(m, (m, 4, 1.0))[0] for m in metrics]
    rows = []
    fewer: dict[str, list[str]] = {}  # metric -> "codec rate point: n of N" where the mean is over fewer images
    for _, r in summary.iterrows():
        n = f"{int(r['n_images'])}" + (f" ({int(r['n_failed'])} failed)" if r.get("n_failed", 0) else "")
        cells = [Cell(str(r["codec"])), Cell(f"{r['rate_param']}={r['quality']:g}"), Cell(n)]
        for m in metrics:
            _, dec, scale = DISPLAY.get(m, (m, 4, 1.0))
            sp = ""
            if spread in ("std", "ci") and m != "bpp":
                s = r.get(f"{m}_{spread}", math.nan)
                sp = _fmt(s, dec, scale) if math.isfinite(s) else ""
            suffix = ""
            n_m = r.get(f"{m}_n", math.nan)
            if math.isfinite(n_m) and int(n_m) < int(r["n_images"]):
                suffix = f"(n={int(n_m)})"
                fewer.setdefault(m, []).append(f"{r['codec']} {r['rate_param']}={r['quality']:g}: "
                                               f"{int(n_m)} of {int(r['n_images'])}")
            cells.append(Cell(_fmt(r[m], dec, scale), float(r[m]), spread=sp, suffix=suffix))
        rows.append(cells)
    table = Table(header, rows, align="llr" + "r" * len(metrics))
    # Only rate points that mean the same rate for every codec are comparable: quality=50 of
    # JPEG and of WebP are unrelated, target_bpp=0.5 (measured bpp after rate matching) is not.
    # A codec that missed the target (PNG at 0.25 bpp sits at 13 bpp) is not at that rate, so it
    # takes no part: it was bold for SSIM 1.0 at "0.25 bpp" and hid the real best.
    from lcbench.jobs import OFF_TARGET

    points: dict[tuple, list[int]] = {}
    off_target: list[str] = []
    for i, (_, r) in enumerate(summary.iterrows()):
        if r["rate_param"] in COMPARABLE_RATE_PARAMS:
            target, bpp = float(r["quality"]), float(r["bpp"])
            n_off = r.get("n_off_target", math.nan)
            n_off = int(n_off) if isinstance(n_off, (int, float)) and math.isfinite(n_off) else None
            on_target = (n_off == 0) if n_off is not None else (math.isfinite(bpp) and abs(bpp - target) <= OFF_TARGET * target)
            if on_target:
                points.setdefault((r["rate_param"], r["quality"]), []).append(i)
            else:
                which = f"{n_off} of {int(r['n_images'])} images off, " if n_off is not None else ""
                off_target.append(f"{r['codec']} {r['rate_param']}={target:g} ({which}mean {bpp:.4g} bpp)")
    shared = [g for g in points.values() if len(g) > 1]
    if off_target:  # every such row, also when no bold comparison is left
        table.notes.append(f"More than {OFF_TARGET:.0%} off the target rate for some or all images, so not in "
                           f"any bold comparison (results.csv's notes say which images): " + "; ".join(off_target) + ".")
    # only columns whose direction is known: a plugin's extra metric may be lower-is-better (LPIPS)
    bold_cols = [3 + i for i, m in enumerate(metrics) if m != "bpp" and m in HIGHER_IS_BETTER]
    mark_best(table, bold_cols, [HIGHER_IS_BETTER[metrics[c - 3]] for c in bold_cols], shared)
    spread_note = {"std": " Values are mean ± standard deviation across images.",
                   "ci": f" Values are mean ± half width of the {confidence:.0%} CI of the mean."}.get(spread or "", "")
    table.caption = (f"Results per codec and rate point. {aggregation_note(aggregate, confidence, spread is not None)}"
                     f"{spread_note}"
                     + (" Bold: best among codecs at the same rate point." if shared else ""))
    time_cols = [m for m in metrics if m in TIME_METRICS]
    if time_cols and "time_note" in summary.columns:
        by_note: dict[str, list[str]] = {}
        for codec, note in zip(summary["codec"], summary["time_note"].fillna("")):
            if note and str(codec) not in by_note.setdefault(note, []):
                by_note[note].append(str(codec))
        names = "/".join(DISPLAY[m][0].split(" [")[0] for m in time_cols)
        for note, codecs in by_note.items():
            if codecs:
                table.notes.append(f"{names} times of {', '.join(codecs)}: {note}, so no spread across images is "
                                   f"shown.")
    if (summary.get("n_failed", pd.Series(dtype=float)) > 0).any():
        table.notes.append("Failed jobs are excluded from the values; N counts the images used.")
    for m, where in fewer.items():
        why = (" (MS-SSIM is undefined, NaN, on images with a short side of 160 px or less)"
               if m in ("ms_ssim", "ms_ssim_db") else " (the others have no value, NaN)")
        shown = "; ".join(where[:4]) + (f"; ... ({len(where)} rate points in all)" if len(where) > 4 else "")
        table.notes.append(f"{DISPLAY.get(m, (m,))[0]}: mean over fewer images than N where marked (n=...): "
                           f"{shown}{why}.")
    return table


def bd_display_table(bd: pd.DataFrame, kind: Literal["rate", "metric"] = "rate") -> Table:
    """Table of ``lcbench.bdrate.bd_table`` output: one row per codec, for each metric the value on
    the average curves and the per-image mean with its bootstrap interval. Best per column bold
    (lowest BD-rate, highest BD-metric) among measured codecs; NaN cells say why in the notes.
    A published curve (``source`` "published: FILE") is marked with a dagger on its name and its
    values, with a footnote, and is never bold."""
    metrics = list(dict.fromkeys(bd["metric"]))
    codecs = list(dict.fromkeys(bd["codec"]))
    anchor = bd["anchor"].iloc[0] if len(bd) else ""
    method = bd["method"].iloc[0] if len(bd) else ""

    def source(col: str, name_col: str, name: str) -> str:
        if col not in bd.columns:
            return "measured"
        rows = bd.loc[bd[name_col] == name, col]
        return str(rows.iloc[0]) if len(rows) else "measured"

    published = {c: source("source", "codec", c) for c in codecs if source("source", "codec", c).startswith("published")}
    anchor_src = source("anchor_source", "anchor", anchor)
    if anchor_src.startswith("published"):
        published = {anchor: anchor_src, **published}
    dagger = "\u2020"
    per_image = f"bd_{kind}_img_mean" in bd.columns
    header = ["Codec"]
    for m in metrics:
        name = METRIC_NAMES.get(m, m)
        header.append(f"{name} avg")
        if per_image:
            header.append(f"{name} per-image [95% CI]")
    rows, notes, measured_rows = [], [], []
    for codec in codecs:
        mark = dagger if codec in published else ""
        if not mark:
            measured_rows.append(len(rows))
        cells = [Cell(codec, suffix=mark)]
        for m in metrics:
            r = bd.loc[(bd["codec"] == codec) & (bd["metric"] == m)].iloc[0]
            dec = 2 if (kind == "rate" or "psnr" in m or m.endswith("_db")) else 4
            v = float(r[f"bd_{kind}"])
            text = _fmt(v, dec, signed=True)
            refs: list[str] = []  # note markers go in the suffix: the value stays a number (a LaTeX minus)
            if not math.isfinite(v):
                notes.append(f"{codec}, {METRIC_NAMES.get(m, m)} (average curves): {r[f'bd_{kind}_reason']}")
                refs.append(f"[{len(notes)}]")
            overlap = float(r.get(f"bd_{kind}_overlap", math.nan))
            if math.isfinite(v) and overlap < LOW_OVERLAP:
                axis = "quality" if kind == "rate" else "log-rate"
                notes.append(f"{codec}, {METRIC_NAMES.get(m, m)}: the curves overlap on only {overlap:.0%} of their "
                             f"joint {axis} range, so the value describes a narrow part of the curves")
                refs.append(f"[{len(notes)}]")
            n_out = _num(r.get("n_images_left_out", 0))
            if codec in published and str(r.get("left_out", "") or ""):
                notes.append(f"{codec}, {METRIC_NAMES.get(m, m)} (average curves): the measured anchor's curve is over "
                             f"its images with a usable value at every rate point; left out: {r.get('left_out', '')}")
                refs.append(f"[{len(notes)}]")
            elif math.isfinite(n_out) and n_out > 0:
                n_out = int(n_out)
                n_in = int(r["n_images"]) if math.isfinite(_num(r.get("n_images"))) else 0
                notes.append(f"{codec}, {METRIC_NAMES.get(m, m)} (average curves): over {n_in} of {n_in + n_out} "
                             f"images; left out, lacking a usable value at some rate point: {r.get('left_out', '')}")
                refs.append(f"[{len(notes)}]")
            cells.append(Cell(text, v, suffix=" ".join([*refs, mark]).strip()))
            if per_image:
                pm = float(r[f"bd_{kind}_img_mean"])
                if math.isfinite(pm):
                    lo, hi = float(r[f"bd_{kind}_img_ci_low"]), float(r[f"bd_{kind}_img_ci_high"])
                    t = _fmt(pm, dec, signed=True)
                    if math.isfinite(lo) and math.isfinite(hi):  # none over too few images
                        t += f" [{_fmt(lo, dec, signed=True)}, {_fmt(hi, dec, signed=True)}]"
                    n, of = int(r[f"bd_{kind}_img_n"]), int(r[f"bd_{kind}_img_of"])
                    cells.append(Cell(t, pm, suffix=f"(n={n}/{of})" if n < of else ""))
                else:
                    notes.append(f"{codec}, {METRIC_NAMES.get(m, m)} (per image): {r[f'bd_{kind}_img_reason']}")
                    cells.append(Cell(f"n/a [{len(notes)}]"))
        rows.append(cells)
    table = Table(header, rows, align="l" + "r" * (len(header) - 1))
    cols = list(range(1, len(header)))
    mark_best(table, cols, [kind != "rate"] * len(cols), [measured_rows])  # a published curve is never bold
    what = "BD-rate [%] (negative: fewer bits at equal quality)" if kind == "rate" else \
        "BD-metric (positive: higher quality at equal rate; dB for PSNR and MS-SSIM dB, SSIM units for SSIM)"
    against = anchor + (dagger if anchor in published else "")
    table.caption = (f"{what} against {against}, {method.upper() if method == 'pchip' else 'cubic (VCEG-M33)'} "
                     f"interpolation over the overlapping range. avg: on the average curves; per-image: mean over "
                     f"images with a 95% interval (expanded percentile bootstrap; Student's t below "
                     f"{_bootstrap_min_values()} images). Bold: best per column"
                     + (" among measured codecs." if published else "."))
    table.notes = [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    for name, src in published.items():
        table.notes.append(f"{dagger} {name}{' (the anchor)' if name == anchor else ''}: published curve, not measured "
                           f"by lcbench ({src.partition(': ')[2] or src}); its values come from that average curve, "
                           f"with no per-image data, and the measured curve compared with it is averaged as "
                           f"CompressAI averages (mean PSNR and SSIM, MS-SSIM dB of the mean MS-SSIM)")
    return table


# ---------------------------------------------------------------- renderers

def _cell_md(c: Cell) -> str:
    text = c.display().replace("|", "\\|")
    return f"**{text}**" if c.bold else text


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; bold as ``**x**``; caption above, notes below."""
    align = table.align or "l" * len(table.header)
    lines = []
    if table.caption:
        lines += [table.caption, ""]
    lines.append("| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |")
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell_md(c) for c in row) + " |")
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "±": r"$\pm$", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "\u2020": r"\textsuperscript{\dag}",
                  # OT1 (LaTeX's default font encoding) prints < > | as ¡ ¿ and an em dash
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


_NUMERIC_CELL = re.compile(r"^[+-]?\d[\d.]*( \[[+-]?[\d.]+, [+-]?[\d.]+\])?$")


def _is_number(text: str) -> bool:
    """Numbers, optionally with an interval: typeset in math mode so minus signs are minus signs."""
    return bool(_NUMERIC_CELL.match(text))


def _cell_latex(c: Cell) -> str:
    main = c.text
    if _is_number(main):
        body = rf"\mathbf{{{main}}}" if c.bold else main
        if c.spread:
            body += rf" \pm {c.spread}"
        return f"${body}$" + (f" {latex_escape(c.suffix)}" if c.suffix else "")
    text = latex_escape(main) + (rf" $\pm$ {c.spread}" if c.spread else "") + (
        f" {latex_escape(c.suffix)}" if c.suffix else "")
    return rf"\textbf{{{text}}}" if c.bold else text


def to_latex(table: Table, label: str = "", wide: bool | None = None) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); bold best values. ``wide`` uses
    ``table*`` (both columns of a two-column paper); default: when there are more than 6 columns."""
    align = table.align or "l" * len(table.header)
    ncol = len(table.header)
    env = "table*" if (wide if wide is not None else ncol > 6) else "table"
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\small"]
    if table.caption:
        lines.append(rf"\caption{{{latex_escape(table.caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(_cell_latex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        # below the tabular, as paragraphs of the float's width: a \multicolumn{N}{l} note never
        # wrapped, and a long one made the table pages wide
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright"]
        lines += [rf"{latex_escape(n)}\par" for n in table.notes]
        lines.append("}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"


def to_text(table: Table) -> str:
    """Plain aligned text for the terminal (no bold)."""
    cells = [table.header] + [[c.display() for c in row] for row in table.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.header))]
    align = table.align or "l" * len(widths)

    def line(r: list[str]) -> str:
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(r, widths, align)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    if table.caption:
        out.append(re.sub(r" Bold: [^.]*\.", "", table.caption))  # no bold in plain text
    out += table.notes
    return "\n".join(out) + "\n"


def _num(v) -> float:
    """A table value as float; NaN for missing (None, NaN, pandas' <NA>)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _jsonable(v):
    if v is pd.NA or v is None:
        return None
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isinf(f):  # a lossless decode's PSNR: not the same as a missing value (null)
            return "inf" if f > 0 else "-inf"
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


def to_json(frame: pd.DataFrame, aggregate: str = "mean", confidence: float = 0.95, **meta) -> str:
    """Records plus how they were aggregated; NaN becomes null, +-inf the strings "inf"/"-inf"."""
    rows = [{k: _jsonable(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]
    doc = {"aggregation": aggregate, "aggregation_note": aggregation_note(aggregate, confidence),
           "confidence": confidence, **meta, "rows": rows}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def format_terminal_table(df: pd.DataFrame, aggregate: Aggregate = "mean") -> str:
    """The per-codec, per-rate-point summary of a results frame as plain text (end of ``lcbench run``)."""
    df = _ensure_validated(df)
    if df.empty:
        return "no results\n"
    summ = summarize(df, aggregate=aggregate, spread=False)
    table = summary_table(summ, metrics=("bpp", "psnr_rgb", "psnr_y", "ssim", "ms_ssim_db", "enc_time_s",
                                         "dec_time_s"), spread=None, aggregate=aggregate)
    table.caption = aggregation_note(aggregate, spread=False)
    return to_text(table)
