"""Bjontegaard delta rate and delta metric, on average curves and per image.

Conventions (checked against the ``bjontegaard`` package in the tests):
- ``pchip`` (default): piecewise cubic Hermite interpolation (monotone, no overshoot) as the
  AV1/AV2 CTC (``CalcBDRate.py``), AWCY and the JVET/JCTVC-L1100 spreadsheet use, integrated
  exactly over the overlapping interval.
- ``cubic``: VCEG-M33, a least-squares cubic polynomial through the points.
- BD-rate interpolates log(rate) as a function of the metric over the overlapping metric
  range: BD-rate = 100 * (exp(mean(ln R_test - ln R_anchor)) - 1), in percent; negative
  means the test codec needs fewer bits for the same quality.
- BD-metric (BD-PSNR for PSNR) interpolates the metric as a function of log(rate) over the
  overlapping log-rate range: mean(metric_test - metric_anchor), in the metric's unit.

A result that cannot be trusted is NaN with a reason, never a silent number: fewer than 4
points, non-finite or non-positive values, curves that are not strictly monotonic (quality
must rise with rate), or curves that do not overlap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

Method = Literal["pchip", "cubic"]
METHODS: tuple[str, ...] = ("pchip", "cubic")
MIN_POINTS = 4
DEFAULT_METRICS = ("psnr_rgb", "psnr_y", "ms_ssim_db", "ssim")


@dataclass(frozen=True)
class BDResult:
    """One Bjontegaard delta: ``value`` (percent for BD-rate, metric units for BD-metric), or
    NaN with ``reason`` saying why it could not be computed."""

    value: float
    reason: str | None = None
    overlap: float = math.nan  # overlapping / union interval length, 0..1 (AWCY warns below ~0.75)

    @property
    def ok(self) -> bool:
        return self.reason is None and math.isfinite(self.value)

    @classmethod
    def nan(cls, reason: str, overlap: float = math.nan) -> "BDResult":
        return cls(math.nan, reason, overlap)


def _curve(rate: Sequence[float], metric: Sequence[float], who: str) -> tuple[np.ndarray, np.ndarray] | str:
    """Sorted (log rate, metric) arrays, or the reason the curve is unusable."""
    r = np.asarray(rate, dtype=float).ravel()
    m = np.asarray(metric, dtype=float).ravel()
    if r.shape != m.shape:
        return f"{who} has {r.size} rates but {m.size} metric values"
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(m))):
        return f"{who} has non-finite values (failed jobs or undefined metric)"
    if np.any(r <= 0):
        return f"{who} has a rate <= 0"
    if r.size < MIN_POINTS:
        return f"{who} has {r.size} rate points; BD needs at least {MIN_POINTS}"
    order = np.argsort(r, kind="stable")
    r, m = r[order], m[order]
    if np.any(np.diff(r) <= 0):
        return f"{who} has two points with the same rate ({r[np.flatnonzero(np.diff(r) <= 0)[0]]:g})"
    if np.any(np.diff(m) <= 0):
        i = int(np.flatnonzero(np.diff(m) <= 0)[0])
        return (f"{who} is not monotonic: quality falls from {m[i]:.4g} to {m[i + 1]:.4g} "
                f"while rate rises from {r[i]:.4g} to {r[i + 1]:.4g}")
    return np.log(r), m


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Integral over [lo, hi] of the curve through (x, y), x increasing."""
    if method == "pchip":
        return float(PchipInterpolator(x, y, extrapolate=False).integrate(lo, hi))
    if method == "cubic":
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    raise ValueError(f"unknown BD method {method!r}; choose one of {METHODS}")


def _delta(ax: np.ndarray, ay: np.ndarray, tx: np.ndarray, ty: np.ndarray, method: str,
           axis_name: str) -> tuple[float, float] | BDResult:
    """Mean of (test - anchor) of y over the overlap of x; (mean, overlap) or a NaN result."""
    lo, hi = max(ax[0], tx[0]), min(ax[-1], tx[-1])
    union = max(ax[-1], tx[-1]) - min(ax[0], tx[0])
    if hi <= lo:
        return BDResult.nan(f"curves do not overlap in {axis_name} (anchor {ax[0]:.4g}..{ax[-1]:.4g}, "
                            f"test {tx[0]:.4g}..{tx[-1]:.4g})", 0.0)
    mean = (_integral(tx, ty, lo, hi, method) - _integral(ax, ay, lo, hi, method)) / (hi - lo)
    return mean, (hi - lo) / union


def _both_curves(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float],
                 test_metric: Sequence[float], method: str) -> tuple[tuple[np.ndarray, np.ndarray], ...] | BDResult:
    """((anchor log rate, metric), (test log rate, metric)), or the NaN result saying why not."""
    if method not in METHODS:
        raise ValueError(f"unknown BD method {method!r}; choose one of {METHODS}")
    a = _curve(anchor_rate, anchor_metric, "anchor")
    t = _curve(test_rate, test_metric, "test")
    for c in (a, t):
        if isinstance(c, str):
            return BDResult.nan(c)
    return a, t


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float],
            test_metric: Sequence[float], method: Method = "pchip") -> BDResult:
    """Bjontegaard delta rate of test against anchor, in percent (negative = test saves bits)."""
    curves = _both_curves(anchor_rate, anchor_metric, test_rate, test_metric, method)
    if isinstance(curves, BDResult):
        return curves
    (alr, am), (tlr, tm) = curves
    # Rate as a function of quality: x = metric, y = log rate.
    d = _delta(am, alr, tm, tlr, method, "quality")
    if isinstance(d, BDResult):
        return d
    mean_log_ratio, overlap = d
    return BDResult(100.0 * math.expm1(mean_log_ratio), None, overlap)


def bd_metric(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float],
              test_metric: Sequence[float], method: Method = "pchip") -> BDResult:
    """Bjontegaard delta metric (BD-PSNR for PSNR): mean quality gain at equal rate, metric units."""
    curves = _both_curves(anchor_rate, anchor_metric, test_rate, test_metric, method)
    if isinstance(curves, BDResult):
        return curves
    (alr, am), (tlr, tm) = curves
    d = _delta(alr, am, tlr, tm, method, "log rate")
    if isinstance(d, BDResult):
        return d
    mean, overlap = d
    return BDResult(float(mean), None, overlap)


@dataclass(frozen=True)
class PerImageBD:
    """BD computed image by image: mean over the images where it is defined, with a bootstrap
    confidence interval over images."""

    mean: float
    ci_low: float
    ci_high: float
    n_images: int  # images with rows for both codecs
    n_valid: int  # images with a finite BD value (the mean and interval use only these)
    per_image: dict[str, BDResult] = field(default_factory=dict)
    reason: str | None = None  # why ``mean`` is NaN

    @property
    def ok(self) -> bool:
        return self.reason is None and math.isfinite(self.mean)


# The bootstrap's resampled means cannot leave [min, max] of the values, and the mean lies outside
# the sample's range with probability 2 / 2**n (50% for n = 2, 12.5% for n = 4): below this many
# values the interval is Student's t instead (under normality exact, and wide where it must be).
BOOTSTRAP_MIN_VALUES = 5
MIN_VALUES_FOR_INTERVAL = 2  # one value has no interval: whoever gates on it falls back to the estimate


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """A confidence interval of the mean: the expanded percentile bootstrap from
    ``BOOTSTRAP_MIN_VALUES`` values on, Student's t interval below that; fixed seed so a report
    is reproducible. NaN with fewer than 2 values or ``n_boot`` < 1.

    The plain percentile interval is too narrow for small samples (about as wide as a z interval
    with the biased standard deviation: 37% narrower than Student's t at n = 5, 18% at n = 10),
    which over a handful of images turns noise into a "significant" regression. The expanded
    percentile interval (Hesterberg 2015, "What teachers should know about the bootstrap",
    Am. Stat. 69(4)) widens the nominal tail so that a normal sample gets Student's t width:
    alpha'/2 = Phi(-sqrt(n / (n - 1)) * t_{1 - alpha/2, n - 1}); it keeps the bootstrap's
    asymmetry for skewed values and converges to the plain interval for large n."""
    from scipy.special import ndtr, stdtrit  # scipy.stats would cost ~1 s at start-up

    v = np.asarray(values, dtype=float)
    if v.size < MIN_VALUES_FOR_INTERVAL or n_boot < 1:
        return math.nan, math.nan
    n = v.size
    t = float(stdtrit(n - 1, 1 - (1 - confidence) / 2))
    if n < BOOTSTRAP_MIN_VALUES:
        half = t * float(v.std(ddof=1)) / math.sqrt(n)
        return float(v.mean() - half), float(v.mean() + half)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = float(ndtr(-math.sqrt(n / (n - 1)) * t))
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _image_curves(df: pd.DataFrame, codec: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image -> (bpp, metric) of the successful jobs of one curve label (one rate parameter: the
    frame is split by ``split_rate_curves`` first)."""
    rows = df.loc[(df["codec"] == codec) & df["ok"], ["image", "bpp", metric]]
    return {str(img): (g["bpp"].to_numpy(), g[metric].to_numpy()) for img, g in rows.groupby("image", sort=True)}


def _images_with_rows(df: pd.DataFrame, codec: str) -> set[str]:
    """Images with any row of ``codec``, failed jobs included."""
    return set(map(str, df.loc[df["codec"] == codec, "image"]))


def bd_per_image(df: pd.DataFrame, anchor: str, test: str, metric: str = "psnr_rgb",
                 kind: Literal["rate", "metric"] = "rate", method: Method = "pchip",
                 confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> PerImageBD:
    """BD of ``test`` against ``anchor`` for each image of a results frame (see ``lcbench.results``),
    then the mean and a bootstrap interval over the images where it is defined."""
    if metric not in df.columns:
        raise ValueError(f"metric column {metric!r} not in the results; columns are {list(df.columns)}")
    from lcbench.results import split_rate_curves

    df = split_rate_curves(df)
    fn = bd_rate if kind == "rate" else bd_metric
    a, t = _image_curves(df, anchor, metric), _image_curves(df, test, metric)
    # Every image both codecs have rows for counts, also one whose jobs all failed on a side: it gets
    # a NaN value saying so, never silently fewer images (the mean over the others hides it).
    images = sorted(_images_with_rows(df, anchor) & _images_with_rows(df, test))
    per = {}
    for img in images:
        lacking = [name for name, curves in ((anchor, a), (test, t)) if img not in curves]
        per[img] = (BDResult.nan(f"no successful {' or '.join(map(repr, lacking))} job on this image")
                    if lacking else fn(*a[img], *t[img], method=method))
    vals = [r.value for r in per.values() if r.ok]
    if not images:
        return PerImageBD(math.nan, math.nan, math.nan, 0, 0, per,
                          f"no image has results for both {anchor!r} and {test!r}")
    if not vals:
        first = next(iter(per.values())).reason
        return PerImageBD(math.nan, math.nan, math.nan, len(images), 0, per, f"no image gives a value, e.g.: {first}")
    lo, hi = bootstrap_mean_ci(vals, confidence, n_boot, seed)
    return PerImageBD(float(np.mean(vals)), lo, hi, len(images), len(vals), per)


def image_completeness(df: pd.DataFrame, codecs: Sequence[str], metric: str) -> tuple[list[str], dict[str, str]]:
    """(complete images, {left-out image: why}) over the images any of ``codecs`` has rows for.

    An image is complete when, for every codec given, it has a successful job with a finite
    ``metric`` at every rate point that codec has for any image. Average curves over anything
    else would mix image sets across rate points (a rate point measured on 1 of 3 images pulls
    the curve towards that image)."""
    from lcbench.results import split_rate_curves

    df = split_rate_curves(df)
    sub = df.loc[df["codec"].isin(codecs)]
    good = sub["ok"] & np.isfinite(sub[metric].astype(float))
    all_images = sorted(set(map(str, sub["image"])))
    why: dict[str, str] = {}
    for codec in codecs:
        c = sub.loc[sub["codec"] == codec]
        g = good.loc[c.index]
        points = sorted(set(zip(c["rate_param"], c["quality"])))
        have = {(str(i), rp, q) for i, rp, q in zip(c.loc[g, "image"], c.loc[g, "rate_param"], c.loc[g, "quality"])}
        rows = {(str(i), rp, q) for i, rp, q in zip(c["image"], c["rate_param"], c["quality"])}
        for img in all_images:
            if img in why:
                continue
            lacking = [(rp, q) for rp, q in points if (img, rp, q) not in have]
            if not lacking:
                continue
            no_row = [f"{rp}={q:g}" for rp, q in lacking if (img, rp, q) not in rows]
            bad = [f"{rp}={q:g}" for rp, q in lacking if (img, rp, q) in rows]
            parts = []
            if no_row:
                parts.append(f"no {codec!r} job at {', '.join(no_row)}")
            if bad:
                parts.append(f"{codec!r} failed or {metric} not finite (NaN/inf) at {', '.join(bad)}")
            why[img] = "; ".join(parts)
    return [img for img in all_images if img not in why], why


def complete_images(df: pd.DataFrame, codecs: Sequence[str], metric: str) -> list[str]:
    """Images with a usable value of ``metric`` at every rate point of every codec given, so that
    average curves compare the codecs on the same images at every point (see ``image_completeness``)."""
    return image_completeness(df, codecs, metric)[0]


def bd_table(df: pd.DataFrame, anchor: str, metrics: Sequence[str] = DEFAULT_METRICS,
             method: Method = "pchip", aggregate: str = "mean", per_image: bool = True,
             extra_curves: Mapping[str, pd.DataFrame] | None = None, confidence: float = 0.95,
             n_boot: int = 2000, seed: int = 0, extra_sources: Mapping[str, str] | None = None) -> pd.DataFrame:
    """BD-rate and BD-metric of every codec against ``anchor``, for each metric.

    Average curves use only the images complete for both codecs (a usable value at every rate
    point of each; see ``image_completeness``), with ``n_images``, ``n_images_left_out`` and
    ``left_out`` (image: why) in the row, and the aggregation of ``lcbench.summary.rd_curve``.
    ``extra_curves`` adds codecs known only by their average curve (published results: columns
    ``bpp`` and metric names); they get no per-image values. ``extra_sources`` names the file
    of each (``source`` column: ``measured`` or ``published: FILE``; ``anchor_source`` likewise
    for the anchor). A published codec's row has no image counts (``n_images``,
    ``n_images_left_out`` and the per-image counts NaN): its curve was not measured on the run's
    images; ``left_out`` there lists the measured anchor's images left out of its curve.
    One row per (codec, metric); NaN values carry a ``*_reason``. Codec names are the curve labels of
    ``lcbench.results.split_rate_curves``: a codec with grid and rate-matched rows gives two rows
    (``jpeg2000``, ``jpeg2000@target_bpp``), and either may be the anchor.
    """
    from lcbench.compressai_json import aggregate_like_published
    from lcbench.results import codecs_in_order, split_rate_curves
    from lcbench.summary import pooled_as, rd_curve

    df = split_rate_curves(df)  # a codec's grid and rate-matched rows are two curves (jpeg, jpeg@target_bpp)
    extra = dict(extra_curves or {})
    sources = dict(extra_sources or {})

    def source_of(name: str) -> str:
        return f"published: {sources.get(name) or 'unknown file'}" if name in extra else "measured"
    measured = codecs_in_order(df)
    if anchor not in measured and anchor not in extra:
        raise ValueError(f"anchor {anchor!r} is not among the codecs {measured + list(extra)}")
    rows = []
    for codec in [c for c in measured + list(extra) if c != anchor]:
        for metric in metrics:
            both_measured = codec in measured and anchor in measured
            images, left_out = None, {}
            sides = [c for c in (anchor, codec) if c in measured]
            if metric in df.columns and sides:  # two published curves have no images to complete
                # a measured codec against a published curve: still only its complete images
                images, left_out = image_completeness(df, sides, metric)

            # against a published curve, the measured side is averaged the way the curve was
            how = aggregate_like_published(metric) if (anchor in extra) != (codec in extra) else aggregate

            def curve(name: str) -> tuple[np.ndarray, np.ndarray]:
                if name in extra:
                    c = extra[name]
                    if metric not in c.columns:
                        return np.array([]), np.array([])
                    c = c.loc[np.isfinite(c[metric])]
                    return c["bpp"].to_numpy(float), c[metric].to_numpy(float)
                if metric not in df.columns:
                    return np.array([]), np.array([])
                c = rd_curve(df, name, metric, aggregate=how, images=images)
                return c["bpp"].to_numpy(float), c[metric].to_numpy(float)


            (ar, am), (tr, tm) = curve(anchor), curve(codec)
            if images is not None and not images:
                rate_res = metric_res = BDResult.nan(
                    f"no image has a usable {metric} value at every rate point of "
                    f"{' and '.join(repr(c) for c in (anchor, codec) if c in measured)}")
            elif am.size == 0 or tm.size == 0:
                missing = anchor if am.size == 0 else codec
                rate_res = metric_res = BDResult.nan(f"no {metric} values for {missing!r}")
            else:
                rate_res = bd_rate(ar, am, tr, tm, method)
                metric_res = bd_metric(ar, am, tr, tm, method)
                matched = set(df.loc[df["codec"].isin([anchor, codec]), "rate_param"].astype(str)) == {"target_bpp"} \
                    if "rate_param" in df.columns else False
                if matched and "two points with the same rate" in (rate_res.reason or ""):
                    # rate-matched curves: two targets beyond what a codec reaches land on one bitstream
                    hint = (" (two --target-bpp targets the codec cannot reach landed on the same bitstream; "
                            "results.csv's notes say 'not reached')")
                    rate_res = BDResult.nan(rate_res.reason + hint)
                    metric_res = BDResult.nan((metric_res.reason or rate_res.reason) + hint)
            measured_row = codec in measured
            row = {"codec": codec, "anchor": anchor, "source": source_of(codec), "anchor_source": source_of(anchor),
                   "metric": metric, "method": method,
                   # what the curves really are: bd.csv said "mse" for psnr_y_sr, averaged per image
                   "aggregate": how if how != "mse" else pooled_as(metric, how),
                   "n_images": len(images) if images is not None and measured_row else math.nan,
                   "n_images_left_out": len(left_out) if measured_row else math.nan,
                   "left_out": "; ".join(f"{img}: {why}" for img, why in left_out.items()),
                   "bd_rate": rate_res.value, "bd_rate_reason": rate_res.reason or "",
                   "bd_rate_overlap": rate_res.overlap,
                   "bd_metric": metric_res.value, "bd_metric_reason": metric_res.reason or "",
                   "bd_metric_overlap": metric_res.overlap}
            if per_image:
                for kind in ("rate", "metric"):
                    if both_measured and metric in df.columns:
                        p = bd_per_image(df, anchor, codec, metric, kind, method, confidence, n_boot, seed)
                    else:
                        p = PerImageBD(math.nan, math.nan, math.nan, 0, 0, {}, "no per-image data (published curve)")
                    counted = both_measured and metric in df.columns
                    row.update({f"bd_{kind}_img_mean": p.mean, f"bd_{kind}_img_ci_low": p.ci_low,
                                f"bd_{kind}_img_ci_high": p.ci_high,
                                f"bd_{kind}_img_n": p.n_valid if counted else math.nan,
                                f"bd_{kind}_img_of": p.n_images if counted else math.nan,
                                f"bd_{kind}_img_reason": p.reason or ""})
            rows.append(row)
    out = pd.DataFrame(rows)
    # image counts as integers, empty (<NA>) where nothing was counted (a published curve)
    for col in ("n_images", "n_images_left_out", "bd_rate_img_n", "bd_rate_img_of", "bd_metric_img_n", "bd_metric_img_of"):
        if col in out.columns:
            out[col] = out[col].astype("Int64")
    return out


def per_image_bd_frame(df: pd.DataFrame, anchor: str, metric: str = "psnr_rgb",
                       kind: Literal["rate", "metric"] = "rate", method: Method = "pchip") -> pd.DataFrame:
    """Long table of per-image BD values against ``anchor``: columns codec, image, metric, kind,
    value, reason; shows on which images a codec wins or loses."""
    from lcbench.results import codecs_in_order, split_rate_curves

    df = split_rate_curves(df)
    rows = []
    for codec in codecs_in_order(df):
        if codec == anchor:
            continue
        p = bd_per_image(df, anchor, codec, metric, kind, method, n_boot=0)
        for image, r in p.per_image.items():
            rows.append({"codec": codec, "anchor": anchor, "image": image, "metric": metric, "kind": kind,
                         "method": method, "value": r.value, "reason": r.reason or ""})
    return pd.DataFrame(rows, columns=["codec", "anchor", "image", "metric", "kind", "method", "value", "reason"])
