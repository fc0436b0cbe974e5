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


def get_preset(name: str, rescalers: Sequence[str] = ("bicubic",)) -> Preset:
    """The preset's codec specs and rate grids; ``rescalers`` names step families (``bicubic``, ``lanczos``, ...)."""
    if name not in PRESET_CODECS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    if not rescalers:
        raise ValueError(f"preset {name!r}: give at least one rescaler")
    return _rescale_preset(name, PRESET_CODECS[name], rescalers)


def split_rescale_label(label: str) -> tuple[str, int | None, str]:
    """``"bicubic-x2+jpeg"`` -> ("bicubic", 2, "jpeg"); other labels -> (label, None, "")."""
    head, plus, codec = label.rpartition("+")
    if not plus:
        return label, None, ""
    method, dash, scale = head.rpartition("-x")
    if dash and scale.isdigit() and "+" not in method:
        return method, int(scale), codec
    return head, None, codec


def sr_table(frame, metrics: Sequence[str] = SR_METRICS):
    """Mean PSNR/SSIM per (dataset, method, scale, codec) x quality: the papers' layout.

    ``frame``: lcbench results (one row per job). Failed jobs and rows without the SR
    columns are left out; ``n_images`` says how many images each row averages.
    """
    import pandas as pd

    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"results have no {', '.join(missing)} column(s): run rescaling pipelines "
                         f"(e.g. --preset rescale-jpeg) to get the SR-convention metrics")
    ok = frame[(frame["error"].fillna("") == "") & frame[list(metrics)].notna().all(axis=1)].copy()
    if ok.empty:
        raise ValueError("no successful rescaling jobs with SR metrics in the results")
    parts = ok["codec"].map(split_rescale_label)
    ok["method"] = [p[0] for p in parts]
    ok["scale"] = [p[1] if p[1] is not None else 0 for p in parts]
    ok["inner"] = [p[2] for p in parts]
    if "dataset" not in ok.columns:
        ok["dataset"] = ""
    keys = ["dataset", "method", "scale", "inner", "quality"]
    agg = ok.groupby(keys, sort=False).agg(**{m: (m, "mean") for m in metrics}, n_images=("image", "nunique"),
                                           bpp=("bpp", "mean")).reset_index()
    # datasets in the order the results list them (e.g. set5 before set14, as in the papers)
    order = {d: i for i, d in enumerate(dict.fromkeys(ok["dataset"]))}
    agg["_order"] = agg["dataset"].map(order)
    agg = agg.sort_values(["_order", "inner", "method", "scale", "quality"]).drop(columns="_order")
    return agg.reset_index(drop=True)


def format_sr_table(frame, metrics: Sequence[str] = SR_METRICS, style: str = "markdown") -> str:
    """The papers' table: one row per dataset/method/scale, one column per quality, cells PSNR/SSIM."""
    table = sr_table(frame, metrics)
    qualities = sorted(table["quality"].unique())
    header = ["dataset", "method", "scale", "codec"] + [f"q={q:g}" for q in qualities] + ["images"]
    rows = []
    for (dataset, method, scale, inner), g in table.groupby(["dataset", "method", "scale", "inner"], sort=False):
        by_q = {q: r for q, r in zip(g["quality"], g.itertuples())}
        cells = []
        for q in qualities:
            r = by_q.get(q)
            if r is None:
                cells.append("-")
                continue
            psnr, ssim = getattr(r, metrics[0]), getattr(r, metrics[1]) if len(metrics) > 1 else None
            ssim_text = f"/{ssim:.4f}".replace("/0.", "/.") if ssim is not None else ""
            cells.append(f"{psnr:.2f}{ssim_text}")
        rows.append([str(dataset), str(method), f"x{scale}" if scale else "-", str(inner)] + cells
                    + [str(int(g["n_images"].max()))])
    title = f"{' / '.join(metrics)} (mean over images; Y = BT.601, border = scale)"
    if style == "markdown":
        lines = [f"| {' | '.join(header)} |", "|" + "|".join("---" for _ in header) + "|"]
        lines += [f"| {' | '.join(r)} |" for r in rows]
        return title + "\n\n" + "\n".join(lines)
    if style == "text":
        widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
        fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
        return "\n".join([title, fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
    raise ValueError(f"unknown table style {style!r} (markdown or text)")
