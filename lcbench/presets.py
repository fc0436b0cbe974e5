"""Evaluation presets: codec specs and rate grids of a published protocol, and its table layout.

``rescale-jpeg`` / ``rescale-webp`` follow the image-rescaling papers (IRN, SAIN, AAAI 2023):
shrink by S = 2 and 4, code the small image with JPEG (or WebP) at quality factors
30, 50, 70, 80, 90, enlarge again, and report PSNR/SSIM on the BT.601 Y channel with an
S-pixel border cropped (lcbench.sr_metrics: columns ``psnr_y_sr`` and ``ssim_y_sr``, which
every rescaling pipeline records through ``Codec.extra_metrics``). The baseline rescaler is
bicubic; a learned rescaler registered as a step ``NAME-xS`` joins with ``rescalers=``.

Differences from the papers' scripts, stated so that numbers are compared knowingly:
- the papers shrink with MATLAB ``imresize`` (or use the supplied LRbicxS images) and mod-crop
  the ground truth before processing; lcbench shrinks with Pillow bicubic (same kernel and
  antialiasing, different border handling, see lcbench.resample) and pads instead of
  cropping, then mod-crops only for the metric;
- the SAIN WebP test qualities are not documented; the WebP preset reuses 30..90.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

SR_SCALES = (2, 4)
SR_QUALITIES = (30.0, 50.0, 70.0, 80.0, 90.0)
SR_METRICS = ("psnr_y_sr", "ssim_y_sr")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    codecs: tuple[str, ...]
    rates: dict[str, tuple[float, ...]] = field(default_factory=dict)  # codec spec -> rate grid


def _rescale_preset(name: str, codec: str, rescalers: Sequence[str]) -> Preset:
    specs = tuple(f"{r}-x{s}+{codec}" for r in rescalers for s in SR_SCALES)
    return Preset(name, f"rescaling protocol (SAIN/IRN): {', '.join(rescalers)} x{'/x'.join(map(str, SR_SCALES))} "
                        f"around {codec} at quality {', '.join(f'{q:g}' for q in SR_QUALITIES)}; "
                        f"PSNR/SSIM on Y with an S-pixel border (psnr_y_sr, ssim_y_sr)",
                  specs, {s: SR_QUALITIES for s in specs})


PRESET_CODECS = {"rescale-jpeg": "jpeg", "rescale-webp": "webp"}


def preset_names() -> list[str]:
    return sorted(PRESET_CODECS)


def rescaler_names() -> list[str]:
    """Step families usable as ``rescalers=``: registered steps ``NAME-xS`` for every scale of SR_SCALES."""
    from .pipeline import steps

    names = set(steps.names())
    suffix = f"-x{SR_SCALES[0]}"
    return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix)
                  and all(f"{n[: -len(suffix)]}-x{s}" in names for s in SR_SCALES))


def get_preset(name: str, rescalers: str | Sequence[str] = ("bicubic",)) -> Preset:
    """The preset's codec specs and rate grids; ``rescalers`` names step families (``bicubic``, ``lanczos``, ...):
    one name or a sequence of names, each registered as steps ``NAME-x2`` and ``NAME-x4`` (a learned
    rescaler's plugin must be loaded first)."""
    from .pipeline import steps

    if name not in PRESET_CODECS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    if isinstance(rescalers, str):  # one rescaler, not its letters
        rescalers = (rescalers,)
    rescalers = tuple(rescalers)
    if not rescalers:
        raise ValueError(f"preset {name!r}: give at least one rescaler")
    for r in rescalers:
        if not isinstance(r, str) or not r.strip():
            raise ValueError(f"preset {name!r}: a rescaler is a step family name such as 'bicubic', got {r!r}")
        missing = [f"{r}-x{s}" for s in SR_SCALES if f"{r}-x{s}" not in steps]
        if missing:
            raise ValueError(f"preset {name!r}: unknown rescaler {r!r}: no step {', '.join(map(repr, missing))} "
                             f"(rescalers with steps -x{'/-x'.join(map(str, SR_SCALES))}: "
                             f"{', '.join(rescaler_names())}; load a learned rescaler's plugin first)")
    return _rescale_preset(name, PRESET_CODECS[name], rescalers)


def _step_scale(name: str) -> int | None:
    """The registered step's scale (``comcnn`` -> 2); for a step not registered in this Python,
    the ``-xS`` suffix of its name, else None (unknown)."""
    try:
        from .pipeline import steps

        return int(steps.get(name).scale)
    except Exception:  # unknown step (plugin not loaded here) or one that fails to import
        base, dash, s = name.rpartition("-x")
        return int(s) if dash and base and s.isdigit() else None


def split_rescale_label(label: str) -> tuple[str, int | None, str]:
    """``"bicubic-x2+jpeg"`` -> ("bicubic", 2, "jpeg"); ``"comcnn+jpeg"`` -> ("comcnn", 2, "jpeg").

    The scale is the product of the steps' scales, i.e. the border S the pipeline's
    ``psnr_y_sr``/``ssim_y_sr`` were computed with (``Pipeline.multiple``); None when a step is
    not registered here and its name has no ``-xS`` suffix. Labels without steps ->
    (label, None, "")."""
    head, plus, codec = label.rpartition("+")
    if not plus:
        return label, None, ""
    names = [part.split(":", 1)[0].strip() for part in head.split("+")]
    scales = [_step_scale(n) for n in names]
    scale = math.prod(scales) if all(s is not None for s in scales) else None  # type: ignore[arg-type]
    method, dash, suffix = head.rpartition("-x")
    if dash and suffix.isdigit() and "+" not in method and ":" not in suffix:
        return method, scale, codec
    return head, scale, codec


def _left_out_reason(row, metric: str, metrics: Sequence[str], scale: int | None) -> str:
    """Why one job's ``metric`` is not in its cell's mean."""
    err = str(row.get("error") or "")
    if err and err.lower() != "nan":
        return f"failed job ({err.splitlines()[0][:80]})"
    if all(_isnan(row.get(m)) for m in metrics):
        border = f"{scale}-pixel" if scale else "scale-pixel"
        return f"no SR metrics (image too small for the {border} border crop)"
    if metric.startswith("ssim"):
        return "SSIM undefined: region under 11 px after the border crop"
    return f"{metric} undefined (NaN)"


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return v is None


def sr_table(frame, metrics: Sequence[str] = SR_METRICS):
    """Mean PSNR/SSIM per (dataset, method, scale, codec) x rate point: the papers' layout.

    ``frame``: lcbench results (one row per job) of rescaling pipelines (other codecs are
    ignored). Each metric is averaged over the jobs that have a value for it, so a NaN SSIM
    (region under 11 px) does not drop the image's PSNR. Columns: the means, ``<metric>_n``
    (how many images each mean is over), ``n_images`` (N: the images of the table row, i.e.
    of that dataset/method/scale/codec at any quality), ``left_out`` (``image: why`` for each
    image of the row missing from a mean: failed job, undefined metric, no result) and ``bpp``
    (mean over the successful jobs). ``scale`` is the border S the metrics were computed with
    (0 when unknown: a step not registered here), ``n_off_target`` (rate-matched rows: images more
    than 10% off the target). A rate point is (``rate_param``, ``quality``):
    rows of different rate parameters (a grid's ``quality`` or ``nominal_bpp``, a rate-matched
    ``target_bpp``) with the same number are different rate points, never averaged together.
    """
    import pandas as pd

    from .codec import MATCHED_RATE_PARAM

    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"results have no {', '.join(missing)} column(s): run rescaling pipelines "
                         f"(e.g. --preset rescale-jpeg) to get the SR-convention metrics")
    df = frame.copy()
    parts = {c: split_rescale_label(str(c)) for c in df["codec"].unique()}
    has_value = df[list(metrics)].notna().any(axis=1)
    with_values = set(df.loc[has_value, "codec"])
    # rescaling pipelines only: a border S > 1 (pipelines with S = 1 and plain codecs record no SR metrics)
    keep = {c for c, (_, s, inner) in parts.items() if inner and (s is None and c in with_values or (s or 0) > 1)}
    df = df[df["codec"].isin(keep)].copy()
    if df.empty or not (df[list(metrics)].notna().any(axis=1)).any():
        raise ValueError("no successful rescaling jobs with SR metrics in the results")
    df["method"] = [parts[c][0] for c in df["codec"]]
    df["scale"] = [parts[c][1] or 0 for c in df["codec"]]
    df["inner"] = [parts[c][2] for c in df["codec"]]
    if "dataset" not in df.columns:
        df["dataset"] = ""
    df["dataset"] = df["dataset"].fillna("")
    err = df["error"].fillna("").astype(str) if "error" in df.columns else pd.Series("", index=df.index)
    failed = err != ""
    for m in metrics:  # a failed job's value (if any) is not a measurement
        df.loc[failed, m] = float("nan")
    if "rate_param" not in df.columns:  # results written before the column existed: a quality grid
        df["rate_param"] = "quality"
    df["rate_param"] = df["rate_param"].fillna("quality").astype(str)
    row_keys = ["dataset", "method", "scale", "inner"]
    rate_keys = ["rate_param", "quality"]
    row_images = {k: sorted(set(map(str, g["image"]))) for k, g in df.groupby(row_keys, sort=False)}
    out = []
    for key, g in df.groupby(row_keys + rate_keys, sort=False):
        n_row = len(row_images[key[:4]])
        rec = dict(zip(row_keys + rate_keys, key))
        why: dict[str, list[str]] = {}
        present = set(map(str, g["image"]))
        for img in row_images[key[:4]]:
            if img not in present:
                why.setdefault(img, []).append(f"no result at this {key[4]}")
        for m in metrics:
            v = g[m].astype(float)
            rec[m] = float(v.mean()) if v.notna().any() else float("nan")
            rec[f"{m}_n"] = int(v.notna().sum())
            for _, r in g.loc[v.isna()].iterrows():
                reason = _left_out_reason(r, m, metrics, key[2] or None)
                lst = why.setdefault(str(r["image"]), [])
                if reason.startswith(("failed", "no SR")):
                    if reason not in lst:
                        lst.append(reason)
                else:
                    lst.append(f"{m}: {reason}")
        rec["n_images"] = n_row
        ok_bpp = g.loc[~failed.loc[g.index], "bpp"] if "bpp" in g.columns else pd.Series(dtype=float)
        rec["bpp"] = float(ok_bpp.mean()) if ok_bpp.notna().any() else float("nan")
        rec["n_off_target"] = 0
        if key[4] == MATCHED_RATE_PARAM:  # images whose matched bitstream missed the target by > 10%
            from .jobs import OFF_TARGET

            target = float(key[5])
            rec["n_off_target"] = int((~((ok_bpp - target).abs() <= OFF_TARGET * target)).sum())
        rec["left_out"] = "; ".join(f"{img}: {', '.join(w)}" for img, w in why.items())
        out.append(rec)
    agg = pd.DataFrame(out)
    # datasets in the order the results list them (e.g. set5 before set14, as in the papers)
    order = {d: i for i, d in enumerate(dict.fromkeys(df["dataset"]))}
    agg["_order"] = agg["dataset"].map(order)
    agg["_grid"] = agg["rate_param"] != "quality"  # quality columns first, as in the papers
    agg = agg.sort_values(["_order", "inner", "method", "scale", "_grid", "rate_param", "quality"]).drop(
        columns=["_order", "_grid"])
    cols = row_keys + rate_keys + [c for m in metrics for c in (m, f"{m}_n")] + ["n_images", "bpp", "n_off_target",
                                                                                  "left_out"]
    return agg[cols].reset_index(drop=True)


def rate_point_label(rate_param: str, value: float) -> str:
    """A table column's label: ``q=30`` for a quality, else ``<rate_param>=<value>`` (``target_bpp=0.3``)."""
    return f"{'q' if rate_param == 'quality' else rate_param}={value:g}"


def format_sr_table(frame, metrics: Sequence[str] = SR_METRICS, style: str = "markdown") -> str:
    """The papers' table: one row per dataset/method/scale, one column per rate point, cells PSNR/SSIM.

    Columns are labelled by their rate parameter: ``q=30`` (quality grid), ``nominal_bpp=0.5``
    (e.g. jpeg2000's grid), ``target_bpp=0.3`` (rate-matched, ``--target-bpp``); quality columns
    come first. ``images`` is the row's N; a cell whose mean is over fewer images says so, ``(n=2)``
    (or ``(n=3/2)``: PSNR over 3, SSIM over 2), and a note below names the images left out and why."""
    from .codec import MATCHED_RATE_PARAM

    table = sr_table(frame, metrics)
    points = list(dict.fromkeys(zip(table["rate_param"], table["quality"])))
    points.sort(key=lambda p: (p[0] != "quality", p[0], p[1]))
    header = ["dataset", "method", "scale", "codec"] + [rate_point_label(*p) for p in points] + ["images"]
    rows, notes, unknown_scale, off = [], [], [], []
    for (dataset, method, scale, inner), g in table.groupby(["dataset", "method", "scale", "inner"], sort=False):
        by_q = {(rp, q): r for rp, q, r in zip(g["rate_param"], g["quality"], g.to_dict("records"))}
        n_row = int(g["n_images"].iloc[0])
        scale_text = f"x{scale}" if scale else "?"
        if not scale:
            unknown_scale.append(f"{method}+{inner}")
        cells = []
        for point in points:
            r = by_q.get(point)
            if r is None:
                cells.append("-")
                continue
            texts = []
            for i, m in enumerate(metrics):
                v = r[m]
                if math.isnan(v):
                    t = "n/a"
                else:
                    t = f"{v:.2f}" if i == 0 else f"{v:.4f}".replace("0.", ".", 1) if 0 <= v < 1 else f"{v:.4f}"
                texts.append(t)
            cell = "/".join(texts)
            if r.get("n_off_target", 0):  # the column's rate is not this cell's: say so in the cell
                cell += f" [{r['bpp']:.3g} bpp]"
                off.append(f"{dataset or '-'} {method} {scale_text} {inner} {rate_point_label(*point)}: "
                           f"{int(r['n_off_target'])} of {n_row} image(s) more than 10% off; mean {r['bpp']:.4g} bpp")
            ns = [int(r[f"{m}_n"]) for m in metrics]
            if any(n != n_row for n in ns):
                cell += f" (n={ns[0]})" if len(set(ns)) == 1 else f" (n={'/'.join(map(str, ns))})"
                notes.append(f"{dataset or '-'} {method} {scale_text} {inner} {rate_point_label(*point)}: "
                             f"{r['left_out']}")
            cells.append(cell)
        rows.append([str(dataset), str(method), scale_text, str(inner)] + cells + [str(n_row)])
    title = f"{' / '.join(metrics)} (mean over images; Y = BT.601, border = scale)"
    foot = []
    if any(rp == MATCHED_RATE_PARAM for rp, _ in points):
        foot.append(f"{MATCHED_RATE_PARAM}=X: rate-matched (--target-bpp), per image the rate parameter whose "
                    f"bitstream is closest to X bpp; not a quality grid point")
    if off:
        foot.append("[X bpp]: a rate-matched cell whose images did not all reach the column's target (within 10%); "
                    "X is their mean bpp, so the cell is not at the column's rate:")
        foot += [f"- {n}" for n in off]
    if notes:
        foot.append("(n=...): the cell's mean is over fewer images than the row's N (images column)"
                    + (f"; n=a/b: {metrics[0]} over a images, {' / '.join(metrics[1:])} over b" if len(metrics) > 1
                       else "") + ". Left out:")
        foot += [f"- {n}" for n in notes]
    if unknown_scale:
        foot.append(f"scale ?: border unknown for {', '.join(dict.fromkeys(unknown_scale))} "
                    f"(a step not registered here; load its plugin: --plugin FILE.py)")
    if style == "markdown":
        lines = [f"| {' | '.join(header)} |", "|" + "|".join("---" for _ in header) + "|"]
        lines += [f"| {' | '.join(r)} |" for r in rows]
        return title + "\n\n" + "\n".join(lines) + ("\n\n" + "\n".join(foot) if foot else "")
    if style == "text":
        widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
        fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
        return "\n".join([title, fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows] + foot)
    raise ValueError(f"unknown table style {style!r} (markdown or text)")
