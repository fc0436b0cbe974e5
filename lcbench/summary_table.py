"""The per-codec, per-rate-point table `lcbench run` prints (means over images)."""
from __future__ import annotations

COLUMNS = ("bpp", "psnr_rgb", "psnr_y", "ssim", "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s")


def terminal_summary(df) -> str:
    """Mean over images of each per-image value, per codec and rate point; failed jobs excluded and counted."""
    if df is None or not len(df):
        return "(no results)"
    ok = df[df["error"].fillna("") == ""]
    if not len(ok):
        return "(every job failed)"
    g = ok.groupby(["codec", "quality"], sort=True)
    table = g[list(COLUMNS)].mean()
    table.insert(0, "images", g.size())
    failed = df[df["error"].fillna("") != ""].groupby(["codec", "quality"]).size()
    if len(failed):
        table["failed"] = failed.reindex(table.index).fillna(0).astype(int)
    fmt = {"bpp": "{:.4f}", "psnr_rgb": "{:.3f}", "psnr_y": "{:.3f}", "ssim": "{:.5f}", "ms_ssim": "{:.5f}",
           "ms_ssim_db": "{:.3f}", "enc_time_s": "{:.4f}", "dec_time_s": "{:.4f}"}
    shown = table.copy()
    for col, f in fmt.items():
        shown[col] = shown[col].map(lambda v, f=f: f.format(v) if v == v else "nan")
    shown = shown.reset_index()
    shown["quality"] = shown["quality"].map(lambda v: f"{v:g}")
    return "mean over images per codec and rate point\n" + shown.to_string(index=False)
