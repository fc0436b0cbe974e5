"""Compare a candidate run against a baseline run: the regression verdict CI acts on.

Each side is a run directory, a ``results.csv`` or a CompressAI-style JSON (a file, or a folder
of them). For each codec of the baseline (or each ``--pair old:new``) and each metric; a baseline
codec the candidate has no rows for is bad input, a codec only the candidate has is noted. A codec's
grid rows and its rate-matched rows are two curves, ``jpeg`` and ``jpeg@target_bpp``
(``lcbench.results.split_rate_curves``), each compared with the same curve of the other side:

- BD-rate of the candidate against the baseline on the average curves (``lcbench.bdrate.bd_rate``
  over ``lcbench.summary.rd_curve`` of the images both sides have complete), and per image with a
  bootstrap 95% interval over images (``lcbench.bdrate.bd_per_image``);
- per-rate-point deltas (mean bpp and metric at each rate point both sides measured);
- encode/decode time ratios (geometric mean over images of per-image total time ratios, with a
  bootstrap interval on the log ratios).

The decisive BD-rate is the per-image mean when both sides have per-image rows (it is what the
interval is about), else the average-curve value. ``fail_on="significant"`` fails a check only
when the whole interval lies above the threshold (so noise across images cannot flake a
release), ``"point"`` when the estimate alone does. The interval is the expanded percentile
bootstrap, Student's t below 5 images (``lcbench.bdrate.bootstrap_mean_ci``); one image has none,
and the estimate decides. A BD-rate check also fails when any image
has no per-image BD value (e.g. its curve is not monotonic on one side): a mean over the other
images would hide exactly that image. Images whose metric is undefined at every point on both
sides (MS-SSIM of images with a short side of 160 px or less) are left out and named instead.
A passing check whose worst image exceeds the threshold names that image and its BD-rate.

An image both sides have rows for but without a usable curve on one (every job of it failed) has
no per-image BD value, so it fails the check like any image without one.

Inputs that cannot be compared fairly (an image, job or baseline codec missing on one side, different rate
points on the two sides, different datasets or image sizes, fewer than 4 rate points, no codec
in common, a metric name that is not a quality metric column, a non-positive bootstrap count)
raise ``CompareInputError`` naming what is wrong; the CLI maps it to exit code 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from .bdrate import MIN_POINTS, MIN_VALUES_FOR_INTERVAL, BDResult, PerImageBD, bd_metric, bd_per_image, bd_rate, bootstrap_mean_ci, \
    complete_images

FailOn = Literal["significant", "point"]
FAIL_ON: tuple[str, ...] = ("significant", "point")
DEFAULT_METRICS = ("psnr_rgb", "ms_ssim_db")
Status = Literal["pass", "fail", "error"]
# Internal codec labels of the two sides once a pair is put into one frame for lcbench.bdrate.
_BASE, _CAND = "baseline", "candidate"
_SAME_TOL = 0.005  # |BD-rate| below this (percent) prints as 0.00: call it "no change"


class CompareInputError(ValueError):
    """The two sides cannot be compared fairly; the message names the side, codec and images."""


# ---------------------------------------------------------------- loading

@dataclass
class Side:
    """One side of a comparison: per-image results, or published average curves only."""

    role: str                         # "baseline" or "candidate"
    source: str                       # the path given
    frame: pd.DataFrame | None = None  # validated results (lcbench.results) when per-image data exists
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # codec -> average curve (CompressAI JSON)
    run_dir: Path | None = None       # where bitstreams/ and decoded/ may be found

    @property
    def codecs(self) -> list[str]:
        if self.frame is not None:
            from .results import codecs_in_order

            return codecs_in_order(self.frame)
        return list(self.curves)

    @property
    def datasets(self) -> list[str]:
        from .results import datasets

        return datasets(self.frame) if self.frame is not None else []


def _read_curves(files: Sequence[Path], role: str) -> dict[str, pd.DataFrame]:
    from .compressai_json import CompressAIFormatError, read_compressai_json

    curves: dict[str, pd.DataFrame] = {}
    for f in files:
        try:
            pc = read_compressai_json(f)
        except (CompressAIFormatError, OSError) as exc:
            raise CompareInputError(f"{role} {f}: {exc}") from exc
        if pc.name in curves:
            raise CompareInputError(f"{role}: two CompressAI files are both named {pc.name!r} (one is {f})")
        curve = pc.curve.copy()
        q = pc.extra.get("quality")
        if q is not None and len(q) == len(curve):
            curve["quality"] = [float(v) for v in q]
        curves[pc.name] = curve
    return curves


def load_side(path: str | Path, role: str = "baseline") -> Side:
    """A run directory, a results CSV, a CompressAI JSON file, or a folder of CompressAI JSON files."""
    from .results import RESULTS_FILE, ResultsError, read_results

    p = Path(path)
    if not p.exists():
        raise CompareInputError(f"{role} {p}: no such file or directory")
    if p.is_dir() and not (p / RESULTS_FILE).is_file():
        files = sorted(p.glob("*.json"))
        files = [f for f in files if f.name != "run.json"]
        if not files:
            raise CompareInputError(f"{role} {p}: a folder without {RESULTS_FILE} or CompressAI *.json files")
        return Side(role, str(p), curves=_read_curves(files, role))
    if p.is_file() and p.suffix.lower() == ".json":
        return Side(role, str(p), curves=_read_curves([p], role))
    try:
        frame = read_results(p)
    except ResultsError as exc:
        raise CompareInputError(f"{role}: {exc}") from exc
    run_dir = p if p.is_dir() else p.parent
    return Side(role, str(p), frame=_split(frame, role, str(p)), run_dir=run_dir)


def _split(frame: pd.DataFrame, role: str, source: str) -> pd.DataFrame:
    """A codec's grid rows and its rate-matched rows are separate curves (``jpeg``, ``jpeg@target_bpp``),
    compared separately: one curve through both would mix two samplings of the codec."""
    from .results import ResultsError, split_rate_curves

    try:
        return split_rate_curves(frame)
    except ResultsError as exc:
        raise CompareInputError(f"{role} {source}: {exc}") from exc


def side_from_frame(frame: pd.DataFrame, role: str, source: str, run_dir: Path | None = None) -> Side:
    """A side from an in-memory results frame (e.g. the frame ``lcbench.runner.execute`` returns)."""
    from .results import ResultsError, validate

    try:
        return Side(role, source, frame=_split(validate(frame, source=source), role, source), run_dir=run_dir)
    except ResultsError as exc:
        raise CompareInputError(f"{role}: {exc}") from exc


# ---------------------------------------------------------------- result model

@dataclass(frozen=True)
class Thresholds:
    max_bd_rate: float = 0.0           # percent of rate increase allowed
    max_slowdown: float | None = None  # candidate/baseline time ratio allowed (encode and decode)
    fail_on: FailOn = "significant"

    def __post_init__(self) -> None:
        if self.fail_on not in FAIL_ON:
            raise CompareInputError(f"fail_on must be one of {FAIL_ON}, got {self.fail_on!r}")
        if not math.isfinite(self.max_bd_rate):
            raise CompareInputError(f"max_bd_rate must be a finite percentage, got {self.max_bd_rate}")
        if self.max_slowdown is not None and not (self.max_slowdown > 0 and math.isfinite(self.max_slowdown)):
            raise CompareInputError(f"max_slowdown must be a positive ratio, got {self.max_slowdown}")


@dataclass
class PointDelta:
    """One rate point both sides measured: mean over the images both have."""

    rate_param: str
    quality: float
    n_images: int
    bpp_baseline: float
    bpp_candidate: float
    metric_baseline: float
    metric_candidate: float

    @property
    def bpp_change_pct(self) -> float:
        return 100.0 * (self.bpp_candidate / self.bpp_baseline - 1.0) if self.bpp_baseline > 0 else math.nan

    @property
    def metric_delta(self) -> float:
        return self.metric_candidate - self.metric_baseline


@dataclass
class MetricComparison:
    metric: str
    bd_rate: BDResult                 # average curves
    bd_metric: BDResult               # average curves, metric units (informational)
    per_image: PerImageBD | None      # None when a side has no per-image data
    points: list[PointDelta]
    n_images: int                     # images in the average curves (NaN-free on both sides)
    # images left out of the per-image BD because the metric is undefined (NaN) for them at every
    # rate point on both sides (e.g. MS-SSIM on images with a short side <= 160 px)
    undefined_images: list[str] = field(default_factory=list)

    @property
    def images_without_bd(self) -> dict[str, str]:
        """Images compared per image whose BD-rate could not be computed -> the reason."""
        if self.per_image is None:
            return {}
        return {img: r.reason or "not computable" for img, r in self.per_image.per_image.items() if not r.ok}

    @property
    def worst_image(self) -> tuple[str, float] | None:
        """The image with the highest (worst) per-image BD-rate, when per-image values exist."""
        if self.per_image is None:
            return None
        vals = [(img, r.value) for img, r in self.per_image.per_image.items() if r.ok]
        return max(vals, key=lambda t: t[1]) if vals else None

    @property
    def estimate(self) -> float:
        """The decisive BD-rate: per-image mean when available, else the average-curve value."""
        if self.per_image is not None and self.per_image.ok:
            return self.per_image.mean
        return self.bd_rate.value if self.bd_rate.ok else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        if self.per_image is not None and self.per_image.ok:
            return self.per_image.ci_low, self.per_image.ci_high
        return math.nan, math.nan


@dataclass
class TimeRatio:
    """Candidate/baseline time: geometric mean over images of per-image total-time ratios."""

    kind: str                  # "encode" or "decode"
    ratio: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n_images: int = 0
    baseline_s: float = math.nan   # mean seconds per job
    candidate_s: float = math.nan


@dataclass
class Check:
    """One pass/fail line of the verdict: a JUnit test case, a row of the Markdown table."""

    name: str                  # e.g. "jpeg: BD-rate psnr_rgb"
    group: str                 # the candidate codec (JUnit classname suffix)
    kind: str                  # bd_rate | encode_time | decode_time | jobs | bitstream_compat | determinism
    status: Status
    summary: str               # one line, for humans
    outcome: str = ""          # better | no change | within threshold | worse (not significant) | regression | ...
    value: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    threshold: float = math.nan
    unit: str = ""
    details: str = ""          # longer text (failure body)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class PairComparison:
    baseline_codec: str
    candidate_codec: str
    images: list[str]
    metrics: dict[str, MetricComparison]
    times: dict[str, TimeRatio]
    failed_jobs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        b, c = self.baseline_codec, self.candidate_codec
        return c if b == c else f"{b} -> {c}"


@dataclass
class Verdict:
    baseline: str
    candidate: str
    thresholds: Thresholds
    method: str
    pairs: list[PairComparison] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None   # bad input: nothing was compared

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    @property
    def exit_code(self) -> int:
        """0 every check passed, 1 a check failed or could not be computed, 2 bad input."""
        return {"pass": 0, "fail": 1, "error": 2}[self.status]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "status": self.status, "exit_code": self.exit_code, "error": self.error,
            "baseline": self.baseline, "candidate": self.candidate, "method": self.method,
            "thresholds": {"max_bd_rate": self.thresholds.max_bd_rate, "max_slowdown": self.thresholds.max_slowdown,
                           "fail_on": self.thresholds.fail_on},
            "checks": [{k: getattr(c, k) for k in ("name", "group", "kind", "status", "outcome", "summary", "value",
                                                    "ci_low", "ci_high", "threshold", "unit", "details", "data")}
                       for c in self.checks],
            "pairs": [_pair_dict(p) for p in self.pairs],
            "notes": self.notes,
        })


def _bd_dict(r: BDResult) -> dict[str, Any]:
    return {"value": r.value, "reason": r.reason, "overlap": r.overlap}


def _pair_dict(p: PairComparison) -> dict[str, Any]:
    metrics = {}
    for m, mc in p.metrics.items():
        pi = mc.per_image
        metrics[m] = {
            "bd_rate": _bd_dict(mc.bd_rate), "bd_metric": _bd_dict(mc.bd_metric), "n_images": mc.n_images,
            "estimate": mc.estimate,
            "per_image": None if pi is None else {
                "mean": pi.mean, "ci_low": pi.ci_low, "ci_high": pi.ci_high, "n_valid": pi.n_valid,
                "n_images": pi.n_images, "reason": pi.reason,
                "values": {img: r.value for img, r in pi.per_image.items()}},
            "points": [{"rate_param": d.rate_param, "quality": d.quality, "n_images": d.n_images,
                        "bpp_baseline": d.bpp_baseline, "bpp_candidate": d.bpp_candidate,
                        "bpp_change_pct": d.bpp_change_pct, "metric_baseline": d.metric_baseline,
                        "metric_candidate": d.metric_candidate, "metric_delta": d.metric_delta}
                       for d in mc.points],
        }
    return {"baseline_codec": p.baseline_codec, "candidate_codec": p.candidate_codec, "images": p.images,
            "failed_jobs": p.failed_jobs, "notes": p.notes, "metrics": metrics,
            "times": {k: vars(t) for k, t in p.times.items()}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


# ---------------------------------------------------------------- input checks

def _names(items: Sequence[str], limit: int = 12) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def _curve_keys(side: Side) -> dict[str, tuple[str, str]]:
    """Curve label -> (codec label it ran under, rate_param), for sides with per-image rows."""
    from .results import CODEC_LABEL

    if side.frame is None:
        return {}
    f = side.frame
    run_label = f[CODEC_LABEL] if CODEC_LABEL in f.columns else f["codec"]
    firsts = pd.DataFrame({"codec": f["codec"], "run": run_label, "rp": f["rate_param"]}).drop_duplicates("codec")
    return {str(c): (str(r), str(p)) for c, r, p in zip(firsts["codec"], firsts["run"], firsts["rp"])}


def resolve_pairs(baseline: Side, candidate: Side, pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Explicit pairs checked against both sides, or every codec (curve) label of the baseline paired
    with the candidate's. Without pairs, a baseline codec the candidate has no rows for is bad input
    (``CompareInputError`` naming it), as a missing image is: a gate must not pass on the codecs that
    happen to be left. A codec's rate-matched curve (``jpeg@target_bpp``) pairs with the curve of the
    same codec and rate parameter on the other side."""
    bc, cc = baseline.codecs, candidate.codecs
    if pairs:
        for b, c in pairs:
            if b not in bc:
                raise CompareInputError(f"--pair {b}:{c}: baseline {baseline.source} has no codec {b!r}; it has {bc}")
            if c not in cc:
                raise CompareInputError(f"--pair {b}:{c}: candidate {candidate.source} has no codec {c!r}; it has {cc}")
        return list(pairs)
    kb, kc = _curve_keys(baseline), _curve_keys(candidate)
    by_key = {k: c for c, k in kc.items()}
    out, missing, claimed = [], [], set()
    for b in bc:
        # same codec and rate parameter first (one side split into jpeg/jpeg@target_bpp, the other not),
        # else the same label (a grid parameter renamed between releases: BD over the overlap, with a note)
        c = by_key.get(kb[b]) if b in kb else None
        if c is None and b in cc and b not in claimed:
            # ... unless the candidate's curve of that label is another baseline curve's exact match
            exact_elsewhere = b in kc and kc[b] != kb.get(b) and kc[b] in kb.values()
            c = None if exact_elsewhere else b
        if c is None:
            missing.append(b)
            continue
        claimed.add(c)
        out.append((b, c))
    if not out:
        raise CompareInputError(f"no codec is on both sides: baseline {baseline.source} has {bc}, candidate "
                                f"{candidate.source} has {cc}; name the pairs with --pair OLD:NEW")
    if missing:
        raise CompareInputError(
            f"candidate {candidate.source} has no rows for {len(missing)} codec(s) the baseline {baseline.source} "
            f"has: {_names(missing)} (candidate has {cc}); run them in the candidate too, or compare only some "
            "codecs with --pair OLD:NEW (baseline.pairs in lcbench check)")
    return out


def parse_pair(text: str) -> tuple[str, str]:
    """``old:new`` -> (old, new). Labels may carry options (``jpeg:subsampling=444``): the separator
    is the one ':' whose next token has no '=' (``jpeg:subsampling=444:jpeg`` works); ``OLD=>NEW``
    is always unambiguous."""
    if "=>" in text:
        b, _, c = text.partition("=>")
    else:
        tokens = text.split(":")
        cuts = [i for i in range(1, len(tokens)) if "=" not in tokens[i]]
        if len(cuts) != 1:
            raise CompareInputError(f"--pair {text!r}: expected OLD:NEW (two codec labels); "
                                    "write OLD=>NEW when labels carry options")
        b, c = ":".join(tokens[:cuts[0]]), ":".join(tokens[cuts[0]:])
    b, c = b.strip(), c.strip()
    if not b or not c:
        raise CompareInputError(f"--pair {text!r}: expected OLD:NEW (two codec labels)")
    return b, c


def check_datasets(baseline: Side, candidate: Side) -> None:
    bd, cd = baseline.datasets, candidate.datasets
    if bd and cd and set(bd) != set(cd):
        raise CompareInputError(f"different datasets: baseline {baseline.source} is on {', '.join(bd)}, "
                                f"candidate {candidate.source} on {', '.join(cd)}")


def run_label(side: Side, codec: str) -> str:
    """The codec label a curve's rows ran under: ``jpeg`` for the curve ``jpeg@target_bpp`` (see
    ``lcbench.results.split_rate_curves``); the label itself otherwise."""
    from .results import CODEC_LABEL

    if side.frame is None or CODEC_LABEL not in side.frame.columns:
        return codec
    rows = _rows(side, codec)
    return str(rows[CODEC_LABEL].iloc[0]) if len(rows) else codec


def _rows(side: Side, codec: str) -> pd.DataFrame:
    assert side.frame is not None
    return side.frame.loc[side.frame["codec"] == codec]


def _check_jobs(side: Side, codec: str, rows: pd.DataFrame) -> None:
    """Every image of the codec at every rate point of that codec; at least MIN_POINTS points. A rate
    point is (rate_param, quality)."""
    rates = sorted(set(zip(rows["rate_param"], rows["quality"])))
    if len(rates) < MIN_POINTS:
        raise CompareInputError(
            f"too few rate points: {side.role} {codec!r} in {side.source} has {len(rates)} "
            f"({', '.join(f'{q:g}' for _, q in rates)}); BD-rate needs at least {MIN_POINTS}")
    have = set(zip(rows["image"], rows["rate_param"], rows["quality"]))
    missing = [f"{img}@{q:g}" for img in sorted(set(rows["image"])) for rp, q in rates if (img, rp, q) not in have]
    if missing:
        raise CompareInputError(f"{side.role} {codec!r} in {side.source} lacks {len(missing)} job(s) other rate "
                                f"points have: {_names(missing)}; finish the run (re-run resumes it)")


def _check_rate_points(baseline: Side, candidate: Side, b: str, c: str, rb: pd.DataFrame, rc: pd.DataFrame,
                       notes: list[str]) -> None:
    """Both sides must measure the same rate points: BD over different sets of points covers a different
    range of the curves (a baseline with q10..90 against a candidate without q90 is not the same test
    both ways round)."""
    pb, pc = set(zip(rb["rate_param"], rb["quality"])), set(zip(rc["rate_param"], rc["quality"]))
    if pb == pc:
        return
    params_b, params_c = {p for p, _ in pb}, {p for p, _ in pc}
    if not params_b & params_c and b == c:
        # one codec, two parameterisations: not the same grid (a results.csv without a rate_param
        # column is read as "quality"; it passed with a note and the time check found no timings)
        raise CompareInputError(
            f"different rate points: baseline {baseline.source} ({b!r}) varies {', '.join(sorted(params_b))}, "
            f"candidate {candidate.source} ({c!r}) varies {', '.join(sorted(params_c))} (a results file without "
            "a rate_param column is read as quality); run both with one rate parameter, or compare two codecs "
            "with --pair OLD:NEW")
    if not params_b & params_c:  # different parameterisations (--pair of two codecs): nothing to match
        notes.append(f"rate points not matched: baseline {b!r} varies {', '.join(sorted(params_b))}, candidate "
                     f"{c!r} varies {', '.join(sorted(params_c))}; BD-rate over their overlapping quality range")
        return
    if b != c:  # --pair of two codecs: their grids need not coincide (jpeg q20.. vs webp q25..)
        notes.append(f"rate points differ between {b!r} and {c!r} (two different codecs): BD-rate over their "
                     "overlapping quality range")
        return

    def fmt(points: set) -> str:
        return _names([f"{p}={q:g}" for p, q in sorted(points)])

    msgs = []
    if pb - pc:
        msgs.append(f"candidate {candidate.source} ({c!r}) lacks rate point(s) {fmt(pb - pc)} that baseline "
                    f"{baseline.source} ({b!r}) has")
    if pc - pb:
        msgs.append(f"baseline {baseline.source} ({b!r}) lacks rate point(s) {fmt(pc - pb)} that candidate "
                    f"{candidate.source} ({c!r}) has")
    raise CompareInputError("different rate points: " + "; ".join(msgs)
                            + " (BD-rate over different rate points is not the same comparison; run both on one grid)")


def _check_images(baseline: Side, candidate: Side, b: str, c: str, rb: pd.DataFrame, rc: pd.DataFrame) -> list[str]:
    ib, ic = set(rb["image"]), set(rc["image"])
    only_b, only_c = sorted(ib - ic), sorted(ic - ib)
    msgs = []
    if only_b:
        msgs.append(f"candidate {candidate.source} ({c}) is missing {len(only_b)} image(s) the baseline has: "
                    f"{_names(only_b)}")
    if only_c:
        msgs.append(f"baseline {baseline.source} ({b}) is missing {len(only_c)} image(s) the candidate has: "
                    f"{_names(only_c)}")
    if msgs:
        raise CompareInputError("; ".join(msgs) + " (compare the same images on both sides)")
    if {"width", "height"} <= set(rb.columns) and {"width", "height"} <= set(rc.columns):
        sb = rb.dropna(subset=["width", "height"]).groupby("image")[["width", "height"]].first()
        sc = rc.dropna(subset=["width", "height"]).groupby("image")[["width", "height"]].first()
        both = sb.merge(sc, left_index=True, right_index=True, suffixes=("_b", "_c"))
        bad = both.loc[(both["width_b"] != both["width_c"]) | (both["height_b"] != both["height_c"])]
        if len(bad):
            img = bad.index[0]
            r = bad.iloc[0]
            raise CompareInputError(
                f"different datasets: image {img!r} is {int(r['width_b'])}x{int(r['height_b'])} in the baseline and "
                f"{int(r['width_c'])}x{int(r['height_c'])} in the candidate ({len(bad)} image(s) differ in size)")
    return sorted(ib)


# ---------------------------------------------------------------- computations

def _time_ratio(rb: pd.DataFrame, rc: pd.DataFrame, column: str, kind: str, n_boot: int, seed: int) -> TimeRatio:
    """Per image: total candidate time / total baseline time over the jobs (rate point) both did."""
    if column not in rb.columns or column not in rc.columns:
        return TimeRatio(kind, math.nan)
    keys = ["image", "rate_param", "quality"]
    b = rb.loc[rb["ok"], keys + [column]].dropna()
    c = rc.loc[rc["ok"], keys + [column]].dropna()
    joined = b.merge(c, on=keys, suffixes=("_b", "_c"))
    if joined.empty:
        return TimeRatio(kind, math.nan)
    per_image = joined.groupby("image")[[f"{column}_b", f"{column}_c"]].sum()
    per_image = per_image.loc[(per_image[f"{column}_b"] > 0) & (per_image[f"{column}_c"] > 0)]
    if per_image.empty:
        return TimeRatio(kind, math.nan)
    logs = np.log(per_image[f"{column}_c"].to_numpy() / per_image[f"{column}_b"].to_numpy())
    lo, hi = bootstrap_mean_ci(logs, n_boot=n_boot, seed=seed)
    return TimeRatio(kind, float(np.exp(logs.mean())), math.exp(lo) if math.isfinite(lo) else math.nan,
                     math.exp(hi) if math.isfinite(hi) else math.nan, len(per_image),
                     float(joined[f"{column}_b"].mean()), float(joined[f"{column}_c"].mean()))


def _points(rb: pd.DataFrame, rc: pd.DataFrame, metric: str) -> list[PointDelta]:
    keys = ["rate_param", "quality", "image"]
    cols = keys + ["bpp", metric]
    b = rb.loc[rb["ok"], cols]
    c = rc.loc[rc["ok"], cols]
    joined = b.merge(c, on=keys, suffixes=("_b", "_c"))
    joined = joined.loc[np.isfinite(joined[f"{metric}_b"]) & np.isfinite(joined[f"{metric}_c"])]
    out = []
    for (rp, q), g in joined.groupby(["rate_param", "quality"], sort=True):
        out.append(PointDelta(str(rp), float(q), len(g), float(g["bpp_b"].mean()), float(g["bpp_c"].mean()),
                              float(g[f"{metric}_b"].mean()), float(g[f"{metric}_c"].mean())))
    return out


def _curve_of(side: Side, codec: str, metric: str, images: Sequence[str] | None = None) -> pd.DataFrame:
    """(quality?, bpp, metric) average curve of a codec on one side."""
    if side.frame is not None:
        from .summary import rd_curve

        return rd_curve(side.frame, codec, metric, images=images)
    curve = side.curves[codec]
    if metric not in curve.columns:
        raise CompareInputError(f"{side.role} {side.source}: curve {codec!r} has no {metric!r} values "
                                f"(it has {[c for c in curve.columns if c != 'quality']})")
    c = curve.loc[np.isfinite(curve[metric]) & np.isfinite(curve["bpp"])]
    return c.sort_values("bpp").reset_index(drop=True)


def _compare_curves_only(baseline: Side, candidate: Side, b: str, c: str, metrics: Sequence[str],
                         method: str) -> PairComparison:
    """At least one side is a published average curve: BD on average curves only, no interval."""
    out: dict[str, MetricComparison] = {}
    for side, codec in ((baseline, b), (candidate, c)):
        if side.frame is None:
            n = len(side.curves[codec])
            if n < MIN_POINTS:
                raise CompareInputError(f"too few rate points: {side.role} curve {codec!r} in {side.source} has {n}; "
                                        f"BD-rate needs at least {MIN_POINTS}")
        else:
            _check_jobs(side, codec, _rows(side, codec))
    for metric in metrics:
        cb, cc = _curve_of(baseline, b, metric), _curve_of(candidate, c, metric)
        args = (cb["bpp"], cb[metric], cc["bpp"], cc[metric])
        points = []
        if "quality" in cb.columns and "quality" in cc.columns:
            merged = cb.merge(cc, on="quality", suffixes=("_b", "_c"))
            rp = "quality"
            if candidate.frame is not None and len(_rows(candidate, c)):
                rp = str(_rows(candidate, c)["rate_param"].iloc[0])
            points = [PointDelta(rp, float(r["quality"]), int(r.get("n_images_b", r.get("n_images_c", 0)) or 0),
                                 r["bpp_b"], r["bpp_c"], r[f"{metric}_b"], r[f"{metric}_c"])
                      for _, r in merged.sort_values("quality").iterrows()]
        out[metric] = MetricComparison(metric, bd_rate(*args, method=method), bd_metric(*args, method=method), None,
                                       points, 0)
    times = {}
    for col, kind in (("enc_time_s", "encode"), ("dec_time_s", "decode")):
        tb, tc = _mean_time(baseline, b, col), _mean_time(candidate, c, col)
        times[kind] = TimeRatio(kind, tc / tb if tb > 0 else math.nan, baseline_s=tb, candidate_s=tc)
    return PairComparison(b, c, [], out, times,
                          notes=["a side has only average curves (CompressAI JSON): no per-image interval, "
                                 "the average-curve BD-rate decides"])


def _mean_time(side: Side, codec: str, col: str) -> float:
    if side.frame is not None:
        rows = _rows(side, codec)
        return float(rows.loc[rows["ok"], col].mean()) if col in rows.columns else math.nan
    curve = side.curves[codec]
    return float(curve[col].mean()) if col in curve.columns else math.nan


def compare_pair(baseline: Side, candidate: Side, b: str, c: str, metrics: Sequence[str], method: str = "pchip",
                 n_boot: int = 2000, seed: int = 0) -> PairComparison:
    """All numbers for one codec pair (no pass/fail yet)."""
    if baseline.frame is None or candidate.frame is None:
        return _compare_curves_only(baseline, candidate, b, c, metrics, method)
    rb, rc = _rows(baseline, b), _rows(candidate, c)
    images = _check_images(baseline, candidate, b, c, rb, rc)
    _check_jobs(baseline, b, rb)
    _check_jobs(candidate, c, rc)
    notes: list[str] = []
    _check_rate_points(baseline, candidate, b, c, rb, rc, notes)
    both = pd.concat([rb.assign(codec=_BASE), rc.assign(codec=_CAND)], ignore_index=True, sort=False)
    out: dict[str, MetricComparison] = {}
    for metric in metrics:
        for side, rows in ((baseline, rb), (candidate, rc)):
            if metric not in rows.columns or not np.isfinite(rows[metric]).any():
                raise CompareInputError(f"{side.role} {side.source}: no {metric!r} values for codec "
                                        f"{rows['codec'].iloc[0]!r}")
        imgs = complete_images(both, [_BASE, _CAND], metric)
        cb, cc = _curve_of(_side_of(both), _BASE, metric, imgs), _curve_of(_side_of(both), _CAND, metric, imgs)
        args = (cb["bpp"], cb[metric], cc["bpp"], cc[metric])
        # An image whose metric is undefined at every point on both sides (MS-SSIM of a small image) says
        # nothing about the candidate: it is left out of the per-image BD and named; any other image
        # without a BD value fails the check (see _bd_check).
        # (only an image both sides measured: one whose jobs all failed on a side is not "undefined", it
        # gets no BD value and fails the check)
        ok_rows = both.loc[both["ok"]]
        finite = ok_rows.assign(_f=np.isfinite(ok_rows[metric])).groupby("image")["_f"].any()
        sides = ok_rows.groupby("image")["codec"].nunique()
        undefined = sorted(str(i) for i in finite.index[~finite.to_numpy()] if sides.get(i, 0) == 2)
        per_frame = both.loc[~both["image"].isin(undefined)] if undefined else both
        # A rate point where the metric is not finite on both sides (PSNR inf: lossless on both) is
        # the same outcome on both sides: it leaves that image's curve, and an image with too few
        # finite points left is left out and named like an undefined one. Non-finite on one side
        # only is a real difference and still fails.
        per_frame, short = _drop_shared_nonfinite(per_frame, metric)
        undefined = sorted(set(undefined) | set(short))
        per_frame = per_frame.loc[~per_frame["image"].isin(short)] if short else per_frame
        per = bd_per_image(per_frame, _BASE, _CAND, metric, "rate", method, n_boot=n_boot, seed=seed)
        if imgs:
            avg_rate, avg_metric = bd_rate(*args, method=method), bd_metric(*args, method=method)
        else:  # otherwise the reason would read "anchor has 0 rate points" whichever side failed
            why = "no image has a usable value at every rate point on both sides (failed jobs?)"
            avg_rate = avg_metric = BDResult(math.nan, why)
        out[metric] = MetricComparison(metric, avg_rate, avg_metric, per,
                                       _points(rb, rc, metric), len(imgs), undefined)
    times = {kind: _time_ratio(rb, rc, col, kind, n_boot, seed)
             for col, kind in (("enc_time_s", "encode"), ("dec_time_s", "decode"))}
    failed_b = int((~rb["ok"]).sum())
    if failed_b:
        notes.append(f"{failed_b} baseline job(s) of {b!r} failed; their images are left out where needed")
    return PairComparison(b, c, images, out, times, failed_jobs=int((~rc["ok"]).sum()), notes=notes)


def _drop_shared_nonfinite(frame: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """(frame without the rows of rate points where ``metric`` is non-finite on both sides, images
    left with fewer than MIN_POINTS finite points on a side)."""
    from .bdrate import MIN_POINTS

    ok = frame.loc[frame["ok"]]
    nonfinite = ok.assign(_nf=~np.isfinite(ok[metric].astype(float)))
    per_point = nonfinite.groupby(["image", "rate_param", "quality"]).agg(nf=("_nf", "all"), sides=("codec", "nunique"))
    shared = per_point.index[(per_point["nf"] & (per_point["sides"] == 2)).to_numpy()]
    if not len(shared):
        return frame, []
    keys = pd.MultiIndex.from_frame(frame[["image", "rate_param", "quality"]])
    kept = frame.loc[~keys.isin(shared)]
    images = {str(i) for i, _, _ in shared}
    counts = kept.loc[kept["image"].astype(str).isin(images) & kept["ok"]].groupby(["image", "codec"]).size()
    short = sorted(i for i in images if any(counts.get((i, side), 0) < MIN_POINTS for side in (_BASE, _CAND)))
    return kept, short


def _side_of(frame: pd.DataFrame) -> Side:
    return Side("both", "", frame=frame)


# ---------------------------------------------------------------- verdict

def _fmt_pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.2f}%"


def _too_few_for_interval(n: int) -> str:
    return f" (n={n} image: no 95% interval, so the estimate decides)"


def _bd_check(pair: PairComparison, mc: MetricComparison, th: Thresholds) -> Check:
    name = f"{pair.name}: BD-rate {mc.metric}"
    est = mc.estimate
    lo, hi = mc.interval
    common = dict(name=name, group=pair.candidate_codec, kind="bd_rate", value=est, ci_low=lo, ci_high=hi,
                  threshold=th.max_bd_rate, unit="%",
                  data={"metric": mc.metric, "bd_rate_average_curves": mc.bd_rate.value,
                        "overlap": mc.bd_rate.overlap, "baseline_codec": pair.baseline_codec,
                        "candidate_codec": pair.candidate_codec})
    pi = mc.per_image
    if pi is not None:
        common["data"].update({"n_valid": pi.n_valid, "n_images": pi.n_images,
                               "undefined_images": list(mc.undefined_images)})
    if not math.isfinite(est):
        reason = mc.bd_rate.reason or (mc.per_image.reason if mc.per_image else None) or "not computable"
        return Check(status="error", outcome="not computable",
                     summary=f"BD-rate on {mc.metric} could not be computed: {reason}", details=reason, **common)
    undefined_note = ""
    if mc.undefined_images:
        n_all = (pi.n_images if pi is not None else 0) + len(mc.undefined_images)
        undefined_note = (f" ({mc.metric} undefined or infinite on both sides for {len(mc.undefined_images)} of {n_all} image(s): "
                          f"{_names(mc.undefined_images, 5)}; left out)")
    missing = mc.images_without_bd
    if pi is not None and missing:
        # A mean over the images that happen to give a value hides exactly the images where something
        # went wrong (a curve that stopped rising, a point that collapsed): fail, and say which.
        lo_hi = f" [95% CI {lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        listed = "; ".join(f"{img}: {why}" for img, why in list(missing.items())[:5])
        more = f" ... ({len(missing)} in all)" if len(missing) > 5 else ""
        summary = (f"BD-rate {mc.metric} {_fmt_pct(est)}{lo_hi} over only n={pi.n_valid}/{pi.n_images} images: "
                   f"{len(missing)} image(s) have no per-image BD value ({listed}{more}){undefined_note}")
        details = (f"{pair.candidate_codec} vs baseline {pair.baseline_codec} on {mc.metric}: {len(missing)} of "
                   f"{pi.n_images} image(s) have no per-image BD-rate, so the estimate over the other "
                   f"{pi.n_valid} cannot clear the candidate:\n" + "\n".join(f"{img}: {why}" for img, why in missing.items()))
        return Check(status="fail", outcome=f"no BD value for {len(missing)}/{pi.n_images} images", summary=summary,
                     details=details, **common)
    has_ci = math.isfinite(lo) and math.isfinite(hi)
    significant = th.fail_on == "significant" and has_ci
    ci_text = f" [95% CI {lo:+.2f}, {hi:+.2f}]" if has_ci else ""
    avg = f"; average curves {_fmt_pct(mc.bd_rate.value)}" if mc.per_image is not None else ""
    if significant:
        failed = lo > th.max_bd_rate
        better = hi < 0
    else:
        failed = est > th.max_bd_rate
        better = est < -_SAME_TOL
    if failed:
        outcome = "regression"
    elif better:
        outcome = "better"
    elif abs(est) < _SAME_TOL:
        outcome = "no change"
    elif est > th.max_bd_rate:
        outcome = "worse (not significant)"
    elif est < 0:
        outcome = "better (not significant)"
    else:
        outcome = "within threshold"
    text = f"BD-rate {mc.metric} {_fmt_pct(est)}{ci_text}{avg}: {outcome}{undefined_note}"
    if th.fail_on == "significant" and not has_ci and pi is not None and pi.n_valid < MIN_VALUES_FOR_INTERVAL:
        text += _too_few_for_interval(pi.n_valid)
    worst = mc.worst_image
    if worst is not None and worst[1] > th.max_bd_rate and pi is not None and pi.n_valid > 1:
        # the mean (and its interval) may hide one image that got much worse: show it
        text += f"; worst image {worst[0]} {_fmt_pct(worst[1])}"
        common["data"]["worst_image"] = {"image": worst[0], "bd_rate": worst[1]}
    if failed:
        rule = ("the whole 95% interval is above" if significant else "the estimate is above")
        details = (f"{pair.candidate_codec} needs {est:+.2f}% rate for the same {mc.metric} as baseline "
                   f"{pair.baseline_codec}{ci_text}; {rule} the allowed {th.max_bd_rate:+.2f}%")
        if th.fail_on == "significant" and not has_ci:
            details += " (no per-image interval available, so the estimate decides)"
        return Check(status="fail", outcome=outcome, summary=text, details=details, **common)
    return Check(status="pass", outcome=outcome, summary=text, **common)


def _time_check(pair: PairComparison, t: TimeRatio, th: Thresholds) -> Check:
    assert th.max_slowdown is not None
    name = f"{pair.name}: {t.kind} time"
    common = dict(name=name, group=pair.candidate_codec, kind=f"{t.kind}_time", value=t.ratio, ci_low=t.ci_low,
                  ci_high=t.ci_high, threshold=th.max_slowdown, unit="x",
                  data={"baseline_s": t.baseline_s, "candidate_s": t.candidate_s, "n_images": t.n_images})
    if not math.isfinite(t.ratio):
        return Check(status="error", outcome="not computable", summary=f"{t.kind} time ratio: no timings",
                     details="no matching jobs with timings on both sides", **common)
    has_ci = math.isfinite(t.ci_low)
    ci_text = f" [95% CI {t.ci_low:.2f}, {t.ci_high:.2f}]" if has_ci else ""
    failed = (t.ci_low if th.fail_on == "significant" and has_ci else t.ratio) > th.max_slowdown
    outcome = "slower than allowed" if failed else ("faster" if t.ratio < 1 else "within threshold")
    text = f"{t.kind} time x{t.ratio:.2f}{ci_text} (allowed x{th.max_slowdown:g}): {outcome}"
    if th.fail_on == "significant" and not has_ci and t.n_images < MIN_VALUES_FOR_INTERVAL:
        text += _too_few_for_interval(t.n_images)
    details = (f"{pair.candidate_codec} {t.kind}s in {t.candidate_s:.4g} s per job vs {t.baseline_s:.4g} s for "
               f"{pair.baseline_codec}: x{t.ratio:.3f}{ci_text} > allowed x{th.max_slowdown:g}") if failed else ""
    return Check(status="fail" if failed else "pass", outcome=outcome, summary=text, details=details, **common)


def verdict_checks(pair: PairComparison, th: Thresholds, candidate: Side | None = None) -> list[Check]:
    checks = [_bd_check(pair, mc, th) for mc in pair.metrics.values()]
    if th.max_slowdown is not None:
        checks += [_time_check(pair, t, th) for t in pair.times.values()]
    if pair.failed_jobs:
        errs: list[str] = []
        if candidate is not None and candidate.frame is not None:
            rc = _rows(candidate, pair.candidate_codec)
            errs = list(dict.fromkeys(rc.loc[~rc["ok"], "error"].astype(str)))[:5]
        checks.append(Check(name=f"{pair.name}: jobs", group=pair.candidate_codec, kind="jobs", status="fail",
                            outcome="failed jobs", summary=f"{pair.failed_jobs} candidate job(s) failed",
                            details="\n".join(errs), value=float(pair.failed_jobs)))
    return checks


# Fewer resamples than this make the percentile interval meaningless (1 gives a zero-width one,
# which turns every nonzero mean into a 'significant' regression).
MIN_BOOTSTRAP = 100

def compare_sides(baseline: Side, candidate: Side, metrics: Sequence[str] | None = None,
                  pairs: Sequence[tuple[str, str]] | None = None, thresholds: Thresholds = Thresholds(),
                  method: str = "pchip", n_boot: int = 2000, seed: int = 0) -> Verdict:
    """The full comparison; raises ``CompareInputError`` on inputs that cannot be compared."""
    if method not in ("pchip", "cubic"):
        raise CompareInputError(f"unknown BD method {method!r}; use pchip or cubic")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < MIN_BOOTSTRAP:
        raise CompareInputError(f"--bootstrap must be at least {MIN_BOOTSTRAP} resamples (a 95% interval from fewer "
                                f"is noise; 1 gives a zero-width one), got {n_boot!r}")
    check_datasets(baseline, candidate)
    resolved = resolve_pairs(baseline, candidate, pairs)
    v = Verdict(baseline.source, candidate.source, thresholds, method)
    if metrics:
        metrics = _check_metrics(metrics, baseline, candidate, resolved)
    else:  # the defaults that both sides measured (MS-SSIM is undefined on images under 161 px)
        metrics, dropped = [], []
        for m in DEFAULT_METRICS:
            have = all(_has_metric(baseline, b, m) and _has_metric(candidate, c, m) for b, c in resolved)
            (metrics if have else dropped).append(m)
        if not metrics:
            raise CompareInputError(f"none of the default metrics {list(DEFAULT_METRICS)} has values on both sides; "
                                    "choose one with --metric")
        if dropped:
            v.notes.append(f"default metric(s) {dropped} left out: not measured on both sides")
    paired = {c for _, c in resolved}
    unpaired = [c for c in candidate.codecs if c not in paired]
    if unpaired:  # a new codec has nothing to compare against; it is named, not hidden
        v.notes.append(f"candidate codec(s) {_names(unpaired)} " + ("are in no --pair (pairs in lcbench check)"
                       if pairs else "have no counterpart in the baseline") + ": not compared")
    if baseline.frame is None or candidate.frame is None:
        v.notes.append("datasets cannot be checked against a CompressAI JSON side: make sure both are on the same images")
    for b, c in resolved:
        pair = compare_pair(baseline, candidate, b, c, metrics, method, n_boot, seed)
        v.pairs.append(pair)
        v.checks += verdict_checks(pair, thresholds, candidate)
    return v


def _check_metrics(metrics: Sequence[str], baseline: Side, candidate: Side,
                   pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The metric names, each a quality metric column on both sides (not bpp, not a text column)."""
    from .summary import check_metric_names

    for side, codecs in ((baseline, [b for b, _ in pairs]), (candidate, [c for _, c in pairs])):
        tables = [_rows(side, c) for c in codecs] if side.frame is not None else [side.curves[c] for c in codecs]
        try:
            check_metric_names(list(metrics), *tables)
        except ValueError as exc:
            raise CompareInputError(f"{exc} ({side.role} {side.source})") from exc
    return list(metrics)


def _has_metric(side: Side, codec: str, metric: str) -> bool:
    table = _rows(side, codec) if side.frame is not None else side.curves[codec]
    return metric in table.columns and bool(np.isfinite(table[metric].astype(float)).any())


def compare(baseline: str | Path, candidate: str | Path, metrics: Sequence[str] | None = None,
            pairs: Sequence[tuple[str, str]] | None = None, thresholds: Thresholds = Thresholds(),
            method: str = "pchip", n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Load both sides (run dir, results.csv, CompressAI JSON) and compare them."""
    return compare_sides(load_side(baseline, "baseline"), load_side(candidate, "candidate"), metrics, pairs,
                         thresholds, method, n_boot, seed)


def error_verdict(baseline: str, candidate: str, message: str, thresholds: Thresholds | None = None,
                  method: str = "pchip") -> Verdict:
    """A verdict for bad input, so CI reports can still say what went wrong."""
    return Verdict(str(baseline), str(candidate), thresholds or Thresholds(), method, error=message)
