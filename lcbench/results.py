"""Load ``results.csv`` files of one or more runs into one pandas DataFrame, checked.

Everything downstream (summary tables, BD-rate, plots, reports) reads the frame this
module returns, so the checks live here: required columns present, numbers numeric,
``ok`` set for rows without an error, and no job measured twice with different answers
when runs are merged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

RESULTS_FILE = "results.csv"
REQUIRED_COLUMNS = ("codec", "quality", "image", "bpp")
NUMERIC_COLUMNS = ("quality", "width", "height", "bytes", "bpp", "psnr_rgb", "psnr_y", "mse_rgb", "mse_y",
                   "ssim", "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s")
# One job is one (codec, rate point, image); merging two runs must not count a job twice. A rate
# point is (rate_param, quality): a grid point (jpeg2000 nominal_bpp=0.5) and a rate-matched one
# (target_bpp=0.5) of one codec are different jobs that may both live in one results.csv.
JOB_COLUMNS = ("codec", "rate_param", "quality", "image")
# A codec whose rows vary more than one rate parameter (its grid and `--target-bpp` rows in one run)
# has one curve per parameter: the grid keeps the codec label, the others are "<label>@<rate_param>".
CURVE_SEP = "@"
# the codec label the rows were run under, kept beside ``codec`` once split_rate_curves renamed a curve
CODEC_LABEL = "codec_label"


class ResultsError(ValueError):
    """A results file is missing, malformed or conflicts with another one; the message names it."""


def results_path(path: str | Path) -> Path:
    """A run directory or a CSV file -> the CSV file to read."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise ResultsError(f"no results file at {p} (give a run directory containing {RESULTS_FILE}, or a CSV file)")
    return p


def read_results(path: str | Path) -> pd.DataFrame:
    """Read one run's results, validated; adds ``run`` (the source path) and ``ok`` columns."""
    csv = results_path(path)
    try:
        df = pd.read_csv(csv, keep_default_na=True, dtype={"codec": str, "image": str, "error": str, "notes": str})
        # names are text as written: an image called NA or null is not a missing value
        names = [c for c in ("codec", "image", "rate_param", "codec_version", "dataset") if c in df.columns]
        if names and len(df):
            as_text = pd.read_csv(csv, usecols=names, dtype=str, keep_default_na=False)
            for col in names:
                df[col] = as_text[col].where(as_text[col] != "", df[col])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{csv}: cannot be read as CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:  # before the row check: a ';'-separated file is a column problem, not a short row
        raise ResultsError(f"{csv}: missing required column(s) {missing}; found {list(df.columns)}")
    _check_complete_rows(csv)
    df["run"] = str(csv.parent if csv.name == RESULTS_FILE else csv)
    return validate(df, source=str(csv))


def _check_complete_rows(path: Path) -> None:
    """A truncated copy (a half-written last row) must not be read as data: pandas fills the
    missing fields with NaN, and the verdict then depends on where the file was cut."""
    import csv as csv_module

    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text ({exc})") from exc
    import io

    rows = list(csv_module.reader(io.StringIO(text, newline="")))  # quoted fields may hold newlines
    if not rows:
        return
    header = rows[0]
    for number, row in enumerate(rows[1:], start=2):
        if row and len(row) != len(header):
            raise ResultsError(f"{path}: row {number} has {len(row)} fields, the header {len(header)} "
                               "(truncated or corrupt file?)")
    if not text.endswith(("\n", "\r")):  # complete rows, but the last may have lost the end of its last field
        import warnings

        warnings.warn(f"{path}: no final newline; its last row was read as complete (a copy cut inside that "
                      "row's last field would not be detected)", stacklevel=3)


def validate(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check columns and types; coerce numbers; derive ``ok`` and ``ms_ssim_db`` where missing.

    Returns a new frame. Raises ``ResultsError`` naming ``source`` on a missing column or a
    non-numeric value in a numeric column.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{source}: missing required column(s) {missing}; found {list(df.columns)}")
    df = df.copy()
    for col in NUMERIC_COLUMNS:
        if col not in df.columns:
            continue
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            example = df.loc[bad, col].iloc[0]
            raise ResultsError(f"{source}: column {col!r} has non-numeric value {example!r} "
                               f"(row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} of the CSV)")
        df[col] = numeric.astype(float)
    for col in ("codec", "image", "quality"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            raise ResultsError(f"{source}: row {int(np.flatnonzero(empty.to_numpy())[0]) + 2} of the CSV has no "
                               f"{col!r} (truncated or corrupt file?)")
    df["codec"] = df["codec"].astype(str)
    df["image"] = df["image"].astype(str)
    if "rate_param" not in df.columns:
        df["rate_param"] = "quality"
    df["rate_param"] = df["rate_param"].fillna("quality").astype(str)
    df = _rename_legacy_jpeg2000_grid(df)
    if "error" in df.columns:
        error = df["error"].map(lambda v: "" if pd.isna(v) else str(v).strip())
    else:
        error = pd.Series("", index=df.index)
    df["error"] = error
    # A row is usable when it has no error and a finite positive rate; metrics may still be NaN
    # (e.g. MS-SSIM on small images), which the aggregations handle per column.
    df["ok"] = (error == "") & np.isfinite(df["bpp"]) & (df["bpp"] > 0)
    if "ms_ssim_db" not in df.columns and "ms_ssim" in df.columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            df["ms_ssim_db"] = -10 * np.log10(1 - df["ms_ssim"])
    return df


def load_results(paths: str | Path | Sequence[str | Path],
                 on_duplicate: Literal["error", "first", "last"] = "error") -> pd.DataFrame:
    """Load and merge the results of one or more runs (run directories or CSV files).

    A job (codec, rate point (rate_param and value), image) present in two runs is an error by default, because
    averaging both would weight that image twice; ``on_duplicate="first"``/``"last"`` keeps
    one of them (in the order given).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ResultsError("no run directories or results files given")
    frames = [read_results(p) for p in paths]
    df = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    dup = df.duplicated(list(JOB_COLUMNS), keep=False)
    if dup.any():
        if on_duplicate == "error":
            first = df.loc[dup].iloc[0]
            runs = sorted(set(df.loc[dup, "run"]))
            raise ResultsError(
                f"{int(dup.sum())} rows measure the same job more than once, e.g. codec {first['codec']!r} "
                f"at {first['rate_param']}={first['quality']:g} on image {first['image']!r} (in {', '.join(runs)}); "
                "give each run once, or choose which to keep (--on-duplicate first|last)")
        df = df.drop_duplicates(list(JOB_COLUMNS), keep=on_duplicate).reset_index(drop=True)
    return df


def _rename_legacy_jpeg2000_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Results written before jpeg2000's grid parameter was renamed: its grid rows said
    ``target_bpp``, the name rate-matched rows have now, so an old baseline's grid would be paired
    with a new run's rate-matched curve. Such rows (a jpeg2000 codec, possibly inside a pipeline,
    and no ``matched_rate``, which every rate-matched success carries) are grid rows: nominal_bpp."""
    inner = df["codec"].str.split("+").str[-1].str.split(":").str[0]
    matched = df["matched_rate"].notna() if "matched_rate" in df.columns else pd.Series(False, index=df.index)
    legacy = (df["rate_param"] == "target_bpp") & (inner == "jpeg2000") & ~matched
    if legacy.any():
        df.loc[legacy, "rate_param"] = "nominal_bpp"
    return df


def split_rate_curves(df: pd.DataFrame) -> pd.DataFrame:
    """One curve label per (codec, rate_param): a codec whose rows vary one rate parameter keeps its
    label (the frame is returned as it is); one with several (its grid rows and its rate-matched
    ``target_bpp`` rows in one run, or a grid parameter renamed between merged runs) keeps its label
    for its grid (the first parameter in row order other than ``target_bpp``) and gets
    ``<label>@<rate_param>`` for each other parameter, e.g. ``jpeg2000`` (nominal_bpp) and
    ``jpeg2000@target_bpp``. Renamed rows keep the label they ran under in ``codec_label``.
    Idempotent: a split frame has one rate parameter per label."""
    if df.empty or "rate_param" not in df.columns:
        return df
    per_codec = df.groupby("codec", sort=False)["rate_param"].unique()
    mixed = {c: list(p) for c, p in per_codec.items() if len(p) > 1}
    if not mixed:
        return df
    out = df.copy()
    if CODEC_LABEL not in out.columns:
        out[CODEC_LABEL] = out["codec"]
    taken = set(per_codec.index)
    for codec, params in mixed.items():
        grid = next((p for p in params if p != "target_bpp"), params[0])
        for p in params:
            if p == grid:
                continue
            label = f"{codec}{CURVE_SEP}{p}"
            if label in taken:
                raise ResultsError(f"codec {codec!r} has rows at {p} and a codec is already labelled {label!r}: "
                                   "cannot tell their curves apart")
            taken.add(label)
            out.loc[(out["codec"] == codec) & (out["rate_param"] == p), "codec"] = label
    return out


def codecs_in_order(df: pd.DataFrame) -> list[str]:
    """Codec labels in order of first appearance (the order of the run's --codecs); a codec split
    into curves (split_rate_curves) lists its grid first, then its other curves, so the default
    anchor is a grid even when the rate-matched rows were run first."""
    labels = list(dict.fromkeys(df["codec"]))
    if CODEC_LABEL not in df.columns:
        return labels
    origin = dict(zip(df["codec"], df[CODEC_LABEL].where(df[CODEC_LABEL].notna(), df["codec"])))
    first = {o: i for i, o in reversed(list(enumerate(origin.get(l, l) for l in labels)))}
    return sorted(labels, key=lambda l: (first[origin.get(l, l)], l != origin.get(l, l), labels.index(l)))


def datasets(df: pd.DataFrame) -> list[str]:
    """Distinct dataset names (empty when the column is absent)."""
    if "dataset" not in df.columns:
        return []
    return sorted({str(d) for d in df["dataset"].dropna()})


def failed_jobs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose job failed (an error message or no usable rate)."""
    return df.loc[~df["ok"]]


def select_codecs(df: pd.DataFrame, codecs: Iterable[str] | None) -> pd.DataFrame:
    """Rows of the given codec labels; raises naming the known labels when one is absent."""
    if codecs is None:
        return df
    wanted = list(codecs)
    known = codecs_in_order(df)
    # a codec label split into curves (split_rate_curves) selects all of them
    ran = list(dict.fromkeys(df[CODEC_LABEL])) if CODEC_LABEL in df.columns else []
    unknown = [c for c in wanted if c not in known and c not in ran]
    if unknown:
        raise ResultsError(f"codec(s) {unknown} not in the results; they have {known}")
    keep = df["codec"].isin(wanted)
    if ran:
        keep |= df[CODEC_LABEL].isin(wanted)
    return df.loc[keep]
