"""Read and write CompressAI's results JSON, to overlay published curves and to share results.

The format (``compressai/utils/eval_model``, ``bench``, ``results/image/kodak/*.json``)::

    {"name": "JPEG", "description": "...",
     "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...],
                 "encoding_time": [...], "decoding_time": [...]}}

Each list holds one value per rate point, averaged over the dataset's images. Older files
use "psnr" and "ms-ssim"; both are read. MS-SSIM in dB is derived from the averaged MS-SSIM
(as CompressAI's plot script does), which is not the mean of per-image dB values.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# lcbench column -> CompressAI key (written); reading also accepts the aliases below.
TO_COMPRESSAI = {"bpp": "bpp", "psnr_rgb": "psnr-rgb", "psnr_y": "psnr-y", "ms_ssim": "ms-ssim-rgb",
                 "ssim": "ssim-rgb", "enc_time_s": "encoding_time", "dec_time_s": "decoding_time"}
FROM_COMPRESSAI = {v: k for k, v in TO_COMPRESSAI.items()} | {"psnr": "psnr_rgb", "ms-ssim": "ms_ssim",
                                                             "ssim": "ssim", "psnr-y": "psnr_y"}


def aggregate_like_published(metric: str) -> str:
    """How a measured curve must be averaged to be compared with a CompressAI curve: CompressAI
    averages per-image PSNR and SSIM/MS-SSIM ("mean"), and its MS-SSIM dB is the dB of the mean
    MS-SSIM ("mse" in lcbench's terms). Compared with lcbench's default mean of per-image dB, a
    published MS-SSIM dB curve looked 0.4-0.5 dB worse, and BD-rates moved by 5-22 points."""
    return "mse" if metric == "ms_ssim_db" else "mean"


class CompressAIFormatError(ValueError):
    """A file is not CompressAI results JSON; the message names the file and the problem."""


@dataclass
class PublishedCurve:
    """One codec's average rate-distortion curve: ``curve`` has a ``bpp`` column and lcbench metric
    columns (``psnr_rgb``, ``ms_ssim``, ``ms_ssim_db`` ...), one row per rate point."""

    name: str
    description: str
    curve: pd.DataFrame
    extra: dict[str, list[Any]] = field(default_factory=dict)  # keys lcbench does not know, kept verbatim
    source: str = ""  # the file it was read from ("" when built in memory)


def _ms_ssim_db(ms: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -10 * np.log10(1 - ms.astype(float))


def _number(v: Any) -> float:
    """A JSON number (null -> NaN); booleans and strings are not numbers."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{v!r} ({type(v).__name__}) is not a number")
    return float(v)


def from_compressai_dict(doc: Any, source: str = "CompressAI JSON") -> PublishedCurve:
    """Parse an already loaded CompressAI results document; ``CompressAIFormatError`` (naming
    ``source``) for anything that is not a well-formed curve: lists of unequal length, values
    that are not JSON numbers (``true``, ``"0.5"``), two keys for one metric (``psnr`` and
    ``psnr-rgb``: which one was meant is unknown), MS-SSIM outside [0, 1] (dB given)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise CompressAIFormatError(f"{source}: expected an object with a 'results' object "
                                    '({"name", "description", "results": {"bpp": [...], ...}})')
    results = doc["results"]
    if "bpp" not in results:
        raise CompressAIFormatError(f"{source}: 'results' has no 'bpp' list (keys: {sorted(results)})")
    if not isinstance(results["bpp"], list):
        raise CompressAIFormatError(f"{source}: results['bpp'] must be a list of values, one per rate point "
                                    f"(got {type(results['bpp']).__name__})")
    n = len(results["bpp"])
    by_col: dict[str, list[str]] = {}
    for key in results:
        if key in FROM_COMPRESSAI:
            by_col.setdefault(FROM_COMPRESSAI[key], []).append(key)
    ambiguous = {col: keys for col, keys in by_col.items() if len(keys) > 1}
    if ambiguous:
        col, keys = next(iter(ambiguous.items()))
        raise CompressAIFormatError(f"{source}: results has both {' and '.join(map(repr, keys))}, which are the same "
                                    f"metric ({col}); ambiguous, keep only one")
    columns: dict[str, list[float]] = {}
    extra: dict[str, list[Any]] = {}
    for key, values in results.items():
        if not isinstance(values, list):
            raise CompressAIFormatError(f"{source}: results[{key!r}] must be a list of {n} values like 'bpp' "
                                        f"(got {type(values).__name__})")
        if len(values) != n:
            raise CompressAIFormatError(f"{source}: results[{key!r}] must be a list of {n} values like 'bpp' "
                                        f"(has {len(values)})")
        col = FROM_COMPRESSAI.get(key)
        if col is None:
            extra[key] = values
            continue
        try:
            columns[col] = [_number(v) for v in values]
        except TypeError as exc:
            raise CompressAIFormatError(f"{source}: results[{key!r}] has a non-numeric value: {exc}") from exc
        if col == "ms_ssim":
            bad = [v for v in columns[col] if math.isfinite(v) and not 0.0 <= v <= 1.0]
            if bad:
                raise CompressAIFormatError(f"{source}: results[{key!r}]: MS-SSIM values must be in [0, 1] "
                                            f"(dB given?), got {bad[0]:g}")
    curve = pd.DataFrame(columns)
    if "ms_ssim" in curve.columns:
        curve["ms_ssim_db"] = _ms_ssim_db(curve["ms_ssim"])
    name = str(doc.get("name") or Path(source).stem)
    return PublishedCurve(name, str(doc.get("description", "")), curve, extra, source)


def read_compressai_json(path: str | Path) -> PublishedCurve:
    """Read one CompressAI results JSON file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressAIFormatError(f"{p}: not valid JSON: {exc}") from exc
    return from_compressai_dict(doc, str(p))


def to_compressai_dict(curve: PublishedCurve) -> dict[str, Any]:
    """The CompressAI document of a curve (``ms_ssim_db`` is not written: it is derived on reading)."""
    results: dict[str, list[Any]] = {}
    for col, key in TO_COMPRESSAI.items():
        if col in curve.curve.columns:
            results[key] = [None if not math.isfinite(v) else float(v) for v in curve.curve[col].astype(float)]
    results.update(curve.extra)
    return {"name": curve.name, "description": curve.description, "results": results}


def write_compressai_json(path: str | Path, curve: PublishedCurve) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_compressai_dict(curve), indent=2) + "\n", encoding="utf-8")
    return p


def curve_from_summary(summary: pd.DataFrame, codec: str, description: str = "") -> PublishedCurve:
    """One codec's rows of ``lcbench.summary.summarize`` as a CompressAI curve, ordered by bpp."""
    rows = summary.loc[summary["codec"] == codec].sort_values("bpp")
    if rows.empty:
        raise ValueError(f"codec {codec!r} not in the summary; it has {sorted(set(summary['codec']))}")
    cols = [c for c in TO_COMPRESSAI if c in rows.columns]
    curve = rows[cols].reset_index(drop=True)
    extra = {"quality": [float(q) for q in rows["quality"]]} if "quality" in rows.columns else {}
    return PublishedCurve(codec, description, curve, extra)


def curve_from_results(df: pd.DataFrame, codec: str, aggregate: str = "mean",
                       description: str = "") -> PublishedCurve:
    """One codec's results as a CompressAI curve over ONE image set at every rate point and in
    every column, which the format cannot say otherwise (one ``bpp`` list for all metrics).

    The images are those complete for the codec (a successful job with a finite value at every
    rate point) in every exported quality metric; a metric complete on no image (PSNR of a
    lossless codec, inf everywhere) does not narrow the set. Exporting ``summarize`` rows instead
    mixed sets: bpp over 5 images beside MS-SSIM over 4 (one too small for it), or a rate point
    with a failed job, and the re-imported curve gave another BD-rate than the measured one
    (-16 % against -31 %). The images used and left out are written in the description and as
    ``n_images`` per point."""
    from lcbench.bdrate import image_completeness
    from lcbench.results import split_rate_curves
    from lcbench.summary import _pooled

    df = split_rate_curves(df)
    rows = df.loc[df["codec"] == codec]
    if rows.empty:
        raise ValueError(f"codec {codec!r} not in the results; they have {sorted(set(df['codec']))}")
    metrics = [c for c in TO_COMPRESSAI if c not in ("bpp", "enc_time_s", "dec_time_s") and c in rows.columns]
    images = set(map(str, rows.loc[rows["ok"], "image"]))
    left_out: dict[str, str] = {}
    for metric in metrics:
        complete, why = image_completeness(rows, [codec], metric)
        if complete:  # a metric defined on no image leaves the set as it is
            images &= set(complete)
            left_out.update({k: v for k, v in why.items() if k not in left_out})
    ok = rows.loc[rows["ok"] & rows["image"].astype(str).isin(images)]
    points = []
    for (_, quality), g in ok.groupby(["rate_param", "quality"], sort=False):
        point = {"quality": float(quality), "bpp": float(g["bpp"].mean()), "n_images": len(g)}
        for metric in metrics:
            point[metric] = _pooled(g, metric, aggregate)
        for col in ("enc_time_s", "dec_time_s"):
            if col in g.columns:
                point[col] = float(g[col].mean())
        points.append(point)
    table = pd.DataFrame(points).sort_values("bpp", kind="stable").reset_index(drop=True) if points else pd.DataFrame()
    cols = [c for c in TO_COMPRESSAI if c in table.columns]
    all_images = sorted(set(map(str, rows["image"])))
    note = f"{len(images)} of {len(all_images)} images at every rate point"
    if left_out:
        note += "; left out: " + "; ".join(f"{k}: {v}" for k, v in sorted(left_out.items()))
    extra: dict[str, Any] = {}
    if not table.empty:
        extra = {"quality": [float(q) for q in table["quality"]], "n_images": [int(n) for n in table["n_images"]]}
    text = f"{description}; {note}" if description else note
    return PublishedCurve(codec, text, table[cols] if not table.empty else pd.DataFrame(columns=["bpp"]), extra)
