"""One self-contained HTML report: tables, figures embedded as base64, sortable per-image results.

No external files, scripts or fonts: the page opens offline and can be attached to a pull
request or an e-mail. Sorting is a few lines of inline JavaScript (click a column header;
the filter box keeps rows containing the text).
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from lcbench.summary import DISPLAY, Table

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.2rem .6rem;border-bottom:1px solid #eee;white-space:nowrap}
th{border-bottom:2px solid #999;text-align:left;background:#fafafa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#bbb}
td.best{font-weight:700}td.win{background:#e7f4ea}td.lose{background:#fbe9e7}td.err{color:#b00020}
.caption{color:#555;font-size:.85rem;max-width:60rem}.notes{color:#555;font-size:.8rem}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs figure{margin:0;width:calc(50% - .5rem);min-width:320px}
.figs img{width:100%}figcaption{font-size:.8rem;color:#555}.meta{font-size:.8rem;color:#555}
input.filter{margin:.3rem 0;padding:.2rem .4rem;width:20rem}
"""

_JS = """
function sortTable(th){
  const table=th.closest('table'), body=table.tBodies[0], i=[...th.parentNode.children].indexOf(th);
  const asc=th.dataset.dir!=='asc'; th.parentNode.querySelectorAll('th').forEach(h=>delete h.dataset.dir);
  th.dataset.dir=asc?'asc':'desc';
  const key=r=>{const c=r.children[i], v=c.dataset.v!==undefined?c.dataset.v:c.textContent.trim();
    const n=parseFloat(v); return isNaN(n)?v.toLowerCase():n;};
  const rows=[...body.rows].sort((a,b)=>{const x=key(a), y=key(b);
    if(typeof x!==typeof y) return typeof x==='number'?-1:1; return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(r=>body.appendChild(r));
}
function filterTable(input,id){
  const q=input.value.toLowerCase();
  document.getElementById(id).tBodies[0].querySelectorAll('tr').forEach(
    r=>{r.style.display=r.textContent.toLowerCase().includes(q)?'':'none';});
}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table, sortable: bool = False, table_id: str = "") -> str:
    """A ``lcbench.summary.Table`` as HTML; best values bold, numbers right-aligned."""
    align = table.align or "l" * len(table.header)
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{_e(table_id)}"' if table_id else ""
    out = []
    if table.caption:
        out.append(f'<p class="caption">{_e(table.caption)}</p>')
    out.append(f"<table{cls}{tid}><thead><tr>")
    out += [f'<th class="{"num" if a == "r" else ""}">{_e(h)}</th>' for h, a in zip(table.header, align)]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>")
        for c, a in zip(row, align):
            classes = " ".join(k for k, on in (("num", a == "r"), ("best", c.bold)) if on)
            text = c.display()
            v = f' data-v="{float(c.value)!r}"' if math.isfinite(c.value) else ""
            out.append(f'<td class="{classes}"{v}>{_e(text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    if table.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(out)


def _fmt(v: object, decimals: int, scale: float = 1.0) -> tuple[str, str]:
    """(display text, sort value) for a number."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v), ""
    if math.isnan(f):
        return "n/a", ""
    if math.isinf(f):  # lossless PSNR: sorts above every finite value
        return ("inf" if f > 0 else "-inf"), ("1e308" if f > 0 else "-1e308")
    return f"{f * scale:.{decimals}f}", repr(f)


def per_image_results_html(df: pd.DataFrame, table_id: str = "per-image") -> str:
    """Every job's row, sortable and filterable."""
    metrics = [m for m in ("bpp", "psnr_rgb", "psnr_y", "ssim", "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s")
               if m in df.columns]
    head = ["Codec", "Rate point", "Image"] + [DISPLAY[m][0] for m in metrics] + ["Error"]
    out = [f'<input class="filter" placeholder="filter rows (codec, image, ...)" '
           f'oninput="filterTable(this, \'{table_id}\')">',
           f'<table class="sortable" id="{table_id}"><thead><tr>']
    out += [f'<th class="{"num" if 3 <= i < 3 + len(metrics) else ""}">{_e(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for r in df.itertuples(index=False):
        rec = r._asdict()
        cells = [f"<td>{_e(rec['codec'])}</td>",
                 f'<td data-v="{_e(rec["quality"])}">{_e(rec["rate_param"])}={float(rec["quality"]):g}</td>',
                 f"<td>{_e(rec['image'])}</td>"]
        for m in metrics:
            _, dec, scale = DISPLAY[m]
            text, v = _fmt(rec[m], dec, scale)
            cells.append(f'<td class="num" data-v="{v}">{_e(text)}</td>' if v else f'<td class="num">{_e(text)}</td>')
        err = rec.get("error", "") or ""
        cells.append(f'<td class="err">{_e(err)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def per_image_bd_html(long: pd.DataFrame, table_id: str = "per-image-bd") -> str:
    """Images x codecs table of per-image BD values (from ``bdrate.per_image_bd_frame``): green
    where the codec beats the anchor, red where it loses."""
    if long.empty:
        return "<p>No per-image BD values.</p>"
    kind = long["kind"].iloc[0]
    wide = long.pivot(index="image", columns="codec", values="value")
    reasons = long.pivot(index="image", columns="codec", values="reason")
    codecs = list(dict.fromkeys(long["codec"]))
    out = [f'<table class="sortable" id="{table_id}"><thead><tr><th>Image</th>']
    out += [f'<th class="num">{_e(c)}</th>' for c in codecs]
    out.append("</tr></thead><tbody>")
    for image in wide.index:
        out.append(f"<tr><td>{_e(image)}</td>")
        for c in codecs:
            v = float(wide.at[image, c]) if c in wide.columns else math.nan
            if math.isfinite(v):
                better = v < 0 if kind == "rate" else v > 0
                out.append(f'<td class="num {"win" if better else "lose"}" data-v="{v!r}">{v:+.2f}</td>')
            else:
                reason = reasons.at[image, c] if c in reasons.columns else ""
                out.append(f'<td class="num" title="{_e(reason)}">n/a</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def figure_html(path: str | Path, caption: str = "") -> str:
    """A PNG or SVG file embedded as a base64 data URI."""
    p = Path(path)
    mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(p.suffix.lower())
    if mime is None:
        raise ValueError(f"{p}: only PNG and SVG figures can be embedded in HTML")
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(caption or p.stem)}" src="data:{mime};base64,{data}">{cap}</figure>'


def build_html_report(df: pd.DataFrame, *, summary_tables: Sequence[Table] = (), bd_tables: Sequence[Table] = (),
                      figures: Mapping[str, str | Path] | None = None, per_image_bd: pd.DataFrame | None = None,
                      title: str = "lcbench report", meta: Mapping[str, str] | None = None) -> str:
    """The whole report as one HTML string. ``figures`` maps a caption to a PNG/SVG file."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    if meta:
        parts.append('<p class="meta">' + "<br>".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in meta.items()) + "</p>")
    if figures:
        parts.append('<h2>Rate-distortion curves</h2><div class="figs">')
        parts += [figure_html(p, cap) for cap, p in figures.items()]
        parts.append("</div>")
    if bd_tables:
        parts.append("<h2>Bjøntegaard deltas</h2>")
        parts += [table_html(t) for t in bd_tables]
    if per_image_bd is not None and not per_image_bd.empty:
        for i, (metric, one) in enumerate(per_image_bd.groupby("metric", sort=False)):  # a table per metric
            r = one.iloc[0]
            what = "BD-rate [%]" if r["kind"] == "rate" else "BD-metric"
            parts.append(f"<h2>Per-image {_e(what)} on {_e(metric)} against {_e(r['anchor'])}</h2>")
            parts.append('<p class="caption">Green: the codec beats the anchor on that image; red: it loses. '
                         "Click a header to sort.</p>")
            parts.append(per_image_bd_html(one, table_id="per-image-bd" if i == 0 else f"per-image-bd-{i}"))
    for i, t in enumerate(summary_tables):
        parts.append("<h2>Results per codec and rate point</h2>" if i == 0 else "")
        parts.append(table_html(t, sortable=True, table_id=f"summary-{i}"))
    parts.append("<h2>Per-image results</h2>")
    parts.append(per_image_results_html(df))
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def write_html_report(path: str | Path, df: pd.DataFrame, **kwargs) -> Path:
    """Write ``build_html_report`` to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(build_html_report(df, **kwargs), encoding="utf-8")
    return p
