"""Summary aggregation and table formats, against values computed here with plain numpy."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lcbench.bdrate import bd_table
from lcbench.results import ResultsError, load_results, validate
from lcbench.summary import (bd_display_table, format_terminal_table, rd_curve, summarize, summary_table, to_json,
                             to_latex, to_markdown, to_text)

DATA = Path(__file__).parent / "data" / "kodak4_results.csv"


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return load_results(DATA)


def test_mean_aggregation_and_spread(results):
    s = summarize(results)
    row = s[(s.codec == "webp") & (s.quality == 50)].iloc[0]
    raw = pd.read_csv(DATA)
    g = raw[(raw.codec == "webp") & (raw.quality == 50)]
    assert row.n_images == 4 and row.n_failed == 0
    assert row.psnr_rgb == pytest.approx(g.psnr_rgb.mean())
    assert row.bpp == pytest.approx(g.bpp.mean())
    sd = np.std(g.psnr_rgb.to_numpy(), ddof=1)
    assert row.psnr_rgb_std == pytest.approx(sd)
    assert row.psnr_rgb_ci == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2)
    # Rows ordered by codec (order of appearance) then rate.
    assert list(dict.fromkeys(s.codec)) == ["jpeg", "webp", "avif", "jpeg2000"]
    assert (np.diff(s[s.codec == "jpeg"].bpp) > 0).all()


def test_psnr_from_mean_mse(results):
    s = summarize(results, aggregate="mse")
    raw = pd.read_csv(DATA)
    g = raw[(raw.codec == "jpeg") & (raw.quality == 30)]
    row = s[(s.codec == "jpeg") & (s.quality == 30)].iloc[0]
    assert row.psnr_rgb == pytest.approx(10 * np.log10(255 ** 2 / g.mse_rgb.mean()))
    assert row.psnr_y == pytest.approx(10 * np.log10(255 ** 2 / g.mse_y.mean()))
    assert row.ms_ssim_db == pytest.approx(-10 * np.log10(1 - g.ms_ssim.mean()))
    # PSNR of the mean MSE is never above the mean PSNR (Jensen), and differs here.
    mean_row = summarize(results).query("codec == 'jpeg' and quality == 30").iloc[0]
    assert row.psnr_rgb < mean_row.psnr_rgb - 0.1
    with pytest.raises(ValueError, match="aggregation"):
        summarize(results, aggregate="median")


def test_failed_jobs_are_counted_and_excluded(results):
    df = results.copy()
    bad = (df.codec == "avif") & (df.quality == 50) & (df.image == "kodim15")
    df.loc[bad, ["error"]] = "avif: encoder crashed"
    df.loc[bad, ["psnr_rgb", "bpp"]] = np.nan
    df = validate(df.drop(columns="ok"))
    row = summarize(df).query("codec == 'avif' and quality == 50").iloc[0]
    assert row.n_images == 3 and row.n_failed == 1
    raw = pd.read_csv(DATA)
    keep = raw[(raw.codec == "avif") & (raw.quality == 50) & (raw.image != "kodim15")]
    assert row.psnr_rgb == pytest.approx(keep.psnr_rgb.mean())
    assert "1 failed" in to_markdown(summary_table(summarize(df)))


def test_rd_curve_restricted_to_images(results):
    c = rd_curve(results, "jpeg", "psnr_rgb", images=["kodim01", "kodim05"])
    raw = pd.read_csv(DATA)
    g = raw[(raw.codec == "jpeg") & raw.image.isin(["kodim01", "kodim05"])].groupby("quality").mean(numeric_only=True)
    assert c.psnr_rgb.to_numpy() == pytest.approx(g.sort_values("bpp").psnr_rgb.to_numpy())
    assert (c.n_images == 2).all()


def test_rate_matched_points_bold_best_in_markdown_and_latex(results):
    # Two codecs at the same target bpp: the better PSNR at each point is bold.
    df = results[results.codec.isin(["jpeg", "webp"])].copy()
    df["rate_param"] = "target_bpp"
    df["quality"] = df.quality.map(
        {10: 0.25, 20: 0.5, 30: 0.75, 40: 1.0, 50: 1.25, 60: 1.5, 75: 1.75, 90: 2.0})
    df["bpp"] = df["quality"]  # rate-matched: every job at its target
    s = summarize(df)
    md = to_markdown(summary_table(s, spread=None))
    tex = to_latex(summary_table(s, spread=None))
    for target in (0.25, 1.0):
        rows = s[s.quality == target]
        best = rows.psnr_rgb.max()
        worst = rows.psnr_rgb.min()
        assert f"**{best:.2f}**" in md and f"**{worst:.2f}**" not in md
        assert rf"$\mathbf{{{best:.2f}}}$" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert "Bold: best among codecs at the same rate point" in md


def test_codec_that_missed_the_target_is_not_bold(results):
    """PNG at target 0.25 bpp sits at 13 bpp: it was bold for SSIM 1.0 "at 0.25 bpp" and hid the
    best codec that was really at that rate."""
    df = results[results.codec.isin(["jpeg", "webp"])].copy()
    df["rate_param"], df["quality"], df["bpp"] = "target_bpp", 0.5, 0.5
    df = df[df.quality == 0.5].drop_duplicates(["codec", "image"])
    lossless = df[df.codec == "jpeg"].assign(codec="png", bpp=13.2, psnr_rgb=np.inf, ssim=1.0, ms_ssim=1.0)
    md = to_markdown(summary_table(summarize(pd.concat([df, lossless], ignore_index=True)), spread=None))
    best = summarize(df).set_index("codec").ssim.max()
    assert f"**{best:.4f}**" in md and "**1.0000**" not in md
    assert ("More than 10% off the target rate for some or all images, so not in any bold comparison (results.csv's "
            "notes say which images): png target_bpp=0.5 (4 of 4 images off, mean 13.2 bpp).") in md


def test_misses_in_opposite_directions_do_not_make_a_row_on_target(results):
    """Judged on the mean bpp, two images at -14% and +14% averaged exactly the target: the row
    took part in the bold comparison although no image was at that rate."""
    df = results[results.codec.isin(["jpeg", "webp"])].copy()
    df = df[df.quality == 50].drop_duplicates(["codec", "image"]).copy()
    df["rate_param"], df["quality"], df["bpp"] = "target_bpp", 0.3, 0.3
    images = sorted(df.image.unique())
    off = df.codec == "webp"
    df.loc[off, "bpp"] = [0.259 if i % 2 == 0 else 0.341 for i in range(int(off.sum()))]
    df.loc[off, "ssim"] = 0.999  # would be bold if compared
    s = summarize(df)
    row = s.set_index("codec").loc["webp"]
    assert row["bpp"] == pytest.approx(0.3) and row["n_off_target"] == len(images)
    md = to_markdown(summary_table(s, spread=None))
    assert "**0.9990**" not in md
    assert f"webp target_bpp=0.3 ({len(images)} of {len(images)} images off, mean 0.3 bpp)" in md


def test_quality_grids_are_not_compared_row_by_row(results):
    # quality=50 of JPEG and of WebP are different rates: no bold in the per-rate-point table.
    assert "**" not in to_markdown(summary_table(summarize(results)))


def test_bd_table_bold_best_and_nan_reason(results):
    bd = bd_table(results, "jpeg", metrics=["psnr_rgb", "ssim"], n_boot=200)
    t = bd_display_table(bd)
    md, tex = to_markdown(t), to_latex(t)
    best = bd[bd.metric == "psnr_rgb"].bd_rate.min()
    assert best == bd[(bd.codec == "avif") & (bd.metric == "psnr_rgb")].bd_rate.iloc[0]
    assert f"**{best:+.2f}**" in md
    assert rf"$\mathbf{{{best:+.2f}}}$" in tex
    # A codec whose curve is too short gets n/a with the reason as a note, in every format.
    short = results[~((results.codec == "webp") & (results.quality >= 40))]
    t2 = bd_display_table(bd_table(short, "jpeg", metrics=["psnr_rgb"], n_boot=100))
    for text in (to_markdown(t2), to_latex(t2), to_text(t2)):
        assert "n/a [1]" in text and "at least 4" in text


def test_published_curve_is_marked_never_bold_and_not_counted(results):
    """A published curve at half of avif's rates is the best BD-rate, but is not bold: avif (best
    measured) is; its name and average values carry a dagger with a footnote naming the file, and
    bd_table gives it no image counts and a 'published: FILE' source."""
    avif = rd_curve(results, "avif", "psnr_rgb")
    pub = pd.DataFrame({"bpp": avif.bpp * 0.5, "psnr_rgb": avif.psnr_rgb})
    bd = bd_table(results, "jpeg", metrics=["psnr_rgb"], n_boot=100, extra_curves={"Better": pub},
                  extra_sources={"Better": "pub/better.json"})
    rows = bd.set_index("codec")
    a = rows.loc["avif", "bd_rate"]
    # halving every rate of the same curve: exp(mean ln ratio) halves, so 1 + BD/100 halves
    assert rows.loc["Better", "bd_rate"] == pytest.approx(100 * ((1 + a / 100) * 0.5 - 1), abs=1e-9)
    assert rows.loc["Better", "source"] == "published: pub/better.json" and rows.loc["avif", "source"] == "measured"
    assert set(bd.anchor_source) == {"measured"}
    for col in ("n_images", "n_images_left_out", "bd_rate_img_n", "bd_rate_img_of"):
        assert pd.isna(rows.loc["Better", col]), col
    assert rows.loc["avif", "n_images"] == 4 and rows.loc["avif", "n_images_left_out"] == 0
    t = bd_display_table(bd)
    md, tex, txt = to_markdown(t), to_latex(t), to_text(t)
    better = f"{rows.loc['Better', 'bd_rate']:+.2f}"
    assert f"| Better \u2020 | {better} \u2020 |" in md and f"**{better}" not in md
    assert f"**{a:+.2f}**" in md and "Bold: best per column among measured codecs." in md
    assert "\u2020 Better: published curve, not measured by lcbench (pub/better.json)" in md
    assert "\u2020 Better: published curve, not measured by lcbench" in txt
    assert rf"Better \textsuperscript{{\dag}} & ${better}$ \textsuperscript{{\dag}}" in tex
    assert rf"\mathbf{{{better}}}" not in tex
    # JSON: the counts are null, not 0 or a number of the run's images
    doc = json.loads(to_json(bd))
    prow = next(r for r in doc["rows"] if r["codec"] == "Better")
    assert prow["n_images"] is None and prow["source"] == "published: pub/better.json"


def test_published_anchor_is_marked(results):
    jpeg = rd_curve(results, "jpeg", "psnr_rgb")
    bd = bd_table(results.loc[results.codec != "jpeg"], "JPEG-pub", metrics=["psnr_rgb"], n_boot=50,
                  extra_curves={"JPEG-pub": jpeg[["bpp", "psnr_rgb"]]}, extra_sources={"JPEG-pub": "j.json"})
    assert set(bd.anchor_source) == {"published: j.json"} and set(bd.source) == {"measured"}
    md = to_markdown(bd_display_table(bd))
    assert "against JPEG-pub\u2020," in md
    assert "\u2020 JPEG-pub (the anchor): published curve, not measured by lcbench (j.json)" in md


def test_latex_escapes_codec_labels():
    from lcbench.summary import Cell, Table

    tex = to_latex(Table(["Codec", "x"], [[Cell("bicubic_x2+jpeg:q=50%"), Cell("1.00", 1.0)]]))
    assert r"bicubic\_x2+jpeg:q=50\%" in tex and "$1.00$" in tex



def test_latex_escapes_angle_brackets_and_bar(results):
    """< > | in codec labels and image ids: OT1 would print them as inverted marks and a dash."""
    from lcbench.summary import Cell, Table, latex_escape

    assert latex_escape("a<b>|c") == r"a\textless{}b\textgreater{}\textbar{}c"
    assert latex_escape("x_1 & 50% ~ ^ $ # {} \\") == (r"x\_1 \& 50\% \textasciitilde{} \textasciicircum{} \$ \# "
                                                   r"\{\} \textbackslash{}")
    tex = to_latex(Table(["Codec", "x"], [[Cell("jpeg:tag=<v2>"), Cell("1.00", 1.0, suffix="(n=3)")]],
                         notes=["image <kodim|01> left out"]))
    assert r"jpeg:tag=\textless{}v2\textgreater{}" in tex and r"image \textless{}kodim\textbar{}01\textgreater{}" in tex
    assert "<" not in tex and ">" not in tex and "|" not in tex
    # end to end: a codec label with <> in summary.tex
    df = results.copy()
    df.loc[df.codec == "webp", "codec"] = "webp<m6>"
    tex = to_latex(summary_table(summarize(df)))
    assert r"webp\textless{}m6\textgreater{}" in tex and "<" not in tex


def test_json_and_csv_outputs(results, tmp_path):
    s = summarize(results)
    doc = json.loads(to_json(s, aggregate="mean"))
    assert doc["aggregation"] == "mean" and len(doc["rows"]) == len(s)
    assert doc["rows"][0]["psnr_rgb"] == pytest.approx(s.psnr_rgb.iloc[0])
    s.to_csv(tmp_path / "s.csv", index=False)
    back = pd.read_csv(tmp_path / "s.csv")
    assert back.psnr_rgb.to_numpy() == pytest.approx(s.psnr_rgb.to_numpy())


def test_terminal_table(results):
    text = format_terminal_table(pd.read_csv(DATA))  # works on a raw frame as the runner has it
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Codec", "Rate", "point", "N"]
    assert len([l for l in lines if l.startswith("jpeg ")]) == 8
    row = next(l for l in lines if l.startswith("webp") and "quality=50" in l)
    expected = pd.read_csv(DATA).query("codec == 'webp' and quality == 50").psnr_rgb.mean()
    assert f"{expected:.2f}" in row.split()
    assert "mean over images" in text


def test_load_results_merges_and_rejects_duplicates(results, tmp_path):
    raw = pd.read_csv(DATA)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    raw[raw.codec == "jpeg"].to_csv(tmp_path / "a" / "results.csv", index=False)
    raw[raw.codec != "jpeg"].to_csv(tmp_path / "b" / "results.csv", index=False)
    merged = load_results([tmp_path / "a", tmp_path / "b"])
    assert len(merged) == len(raw) and set(merged.run) == {str(tmp_path / "a"), str(tmp_path / "b")}
    with pytest.raises(ResultsError, match="same job"):
        load_results([tmp_path / "a", tmp_path / "a" / "results.csv"])
    assert len(load_results([tmp_path / "a", tmp_path / "a"], on_duplicate="last")) == (raw.codec == "jpeg").sum()
    with pytest.raises(ResultsError, match="no results file"):
        load_results(tmp_path / "missing")
    raw.drop(columns="bpp").to_csv(tmp_path / "nobpp.csv", index=False)
    with pytest.raises(ResultsError, match="bpp"):
        load_results(tmp_path / "nobpp.csv")
    bad = raw.copy()
    bad["psnr_rgb"] = bad["psnr_rgb"].astype(object)
    bad.loc[3, "psnr_rgb"] = "thirty"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ResultsError, match="thirty"):
        load_results(tmp_path / "bad.csv")


def test_summary_without_spread_has_the_same_values_and_no_spread_columns(results):
    full, lean = summarize(results), summarize(results, spread=False)
    assert not [c for c in lean.columns if c.endswith(("_std", "_ci"))]
    pd.testing.assert_frame_equal(lean, full[list(lean.columns)])
    assert "psnr_rgb_ci" in full.columns


def test_end_of_run_table_caption_does_not_promise_a_spread_it_does_not_show(results):
    text = format_terminal_table(results)
    assert "Aggregation: mean over images of each per-image value." in text
    assert "spread" not in text.lower() and "±" not in text


def test_metric_over_fewer_images_than_n_is_marked_and_explained(results):
    """MS-SSIM NaN for kodim23 (as for a small image): the mean is over 3 images while N says 4; the
    per-metric count and a note make that visible in every format, and the value is the 3-image mean."""
    df = results.copy()
    df.loc[df.image == "kodim23", ["ms_ssim", "ms_ssim_db"]] = np.nan
    s = summarize(df)
    row = s.query("codec == 'jpeg' and quality == 10").iloc[0]
    raw = pd.read_csv(DATA).query("codec == 'jpeg' and quality == 10 and image != 'kodim23'")
    assert row.n_images == 4 and row.ms_ssim_db_n == 3 and row.psnr_rgb_n == 4
    assert row.ms_ssim_db == pytest.approx(raw.ms_ssim_db.mean())
    assert row.ms_ssim_db_std == pytest.approx(np.std(raw.ms_ssim_db.to_numpy(), ddof=1))
    cell = f"{raw.ms_ssim_db.mean():.2f} ± {np.std(raw.ms_ssim_db.to_numpy(), ddof=1):.2f} (n=3)"
    t = summary_table(s)
    md, tex, txt = to_markdown(t), to_latex(t), to_text(t)
    assert cell in md and cell in txt
    assert "(n=3)" in tex
    for text in (md, txt):
        assert "MS-SSIM [dB]: mean over fewer images than N where marked (n=...): jpeg quality=10: 3 of 4" in text
        assert "short side of 160 px or less" in text
    assert "PSNR-RGB [dB]: mean over fewer" not in md
    term = format_terminal_table(df)
    assert f"{raw.ms_ssim_db.mean():.2f} (n=3)" in term and "MS-SSIM [dB]: mean over fewer images" in term
    # nothing marked when every image has the metric
    assert "(n=" not in to_markdown(summary_table(summarize(results)))


def test_infinite_value_gives_inf_without_a_spread(results):
    """A lossless decode (PSNR inf) makes the mean inf; a spread over the other images beside it is
    meaningless, so none is shown (NaN in the CSV)."""
    df = results.copy()
    df.loc[(df.codec == "jpeg") & (df.quality == 90) & (df.image == "kodim01"), "psnr_rgb"] = np.inf
    s = summarize(df)
    row = s.query("codec == 'jpeg' and quality == 90").iloc[0]
    assert math.isinf(row.psnr_rgb) and math.isnan(row.psnr_rgb_std) and math.isnan(row.psnr_rgb_ci)
    line = next(l for l in to_markdown(summary_table(s)).splitlines() if "| jpeg | quality=90 |" in l)
    assert "| inf |" in line and "inf ±" not in line


def test_batched_codec_times_have_no_fake_spread():
    """A batched learned codec's per-image time is its batch's time / N, identical for every image:
    '226.8 ± 0.0' was a spread that never existed. No spread for its times, with a note; other
    columns and other codecs keep theirs."""
    raw = pd.read_csv(DATA)
    jpeg = raw[raw.codec == "jpeg"].copy()
    learned = jpeg.copy()
    learned["codec"] = "learned"
    learned["enc_time_s"] = 0.2268  # per quality: one batch of the 4 images, 4 x 0.2268 s in all
    learned["dec_time_s"] = learned["quality"] / 1000
    learned["notes"] = "time is the mean over a batch of 4"
    df = validate(pd.concat([jpeg, learned], ignore_index=True))
    s = summarize(df, metrics=("bpp", "psnr_rgb", "enc_time_s", "dec_time_s"))
    lr = s[(s.codec == "learned") & (s.quality == 50)].iloc[0]
    assert lr.enc_time_s == pytest.approx(0.2268) and math.isnan(lr.enc_time_s_std) and math.isnan(lr.dec_time_s_ci)
    assert lr.time_note == "per-image time = batch time / batch size (batched codec)"
    g = jpeg[jpeg.quality == 50]
    assert lr.psnr_rgb_std == pytest.approx(np.std(g.psnr_rgb, ddof=1))  # quality metrics keep their spread
    jr = s[(s.codec == "jpeg") & (s.quality == 50)].iloc[0]
    assert jr.enc_time_s_std == pytest.approx(np.std(g.enc_time_s, ddof=1)) and jr.time_note == ""
    md = to_markdown(summary_table(s, metrics=("bpp", "psnr_rgb", "enc_time_s", "dec_time_s")))
    row = next(line for line in md.splitlines() if line.startswith("| learned | quality=50 |"))
    assert row.endswith("| 226.8 | 50.0 |") and "± 0.0" not in md
    assert ("- Enc./Dec. times of learned: per-image time = batch time / batch size (batched codec), so no spread "
            "across images is shown.") in md
    jrow = next(line for line in md.splitlines() if line.startswith("| jpeg | quality=50 |"))
    assert jrow.count("±") == 3  # psnr, enc, dec


def test_identical_times_without_batch_note_have_no_spread():
    raw = pd.read_csv(DATA)
    other = raw[raw.codec == "webp"].copy()
    other["enc_time_s"] = 0.5
    s = summarize(validate(other), metrics=("psnr_rgb", "enc_time_s"))
    assert s.time_note.eq("the same time for every image").all() and s.enc_time_s_std.isna().all()
    md = to_markdown(summary_table(s, metrics=("psnr_rgb", "enc_time_s")))
    assert "500.0 ±" not in md and "Enc. times of webp: the same time for every image" in md


def test_two_published_curves_give_their_bd_rate(results):
    # a published anchor against another published curve (the usual paper setup) was NaN:
    # "no image has a usable value at every rate point of " (no measured side to complete)
    avif = rd_curve(results, "avif", "psnr_rgb")
    ref = pd.DataFrame({"bpp": avif.bpp, "psnr_rgb": avif.psnr_rgb})
    half = pd.DataFrame({"bpp": avif.bpp * 0.5, "psnr_rgb": avif.psnr_rgb})
    bd = bd_table(results, "Ref", metrics=["psnr_rgb"], n_boot=100, extra_curves={"Ref": ref, "Half": half},
                  extra_sources={"Ref": "ref.json", "Half": "half.json"})
    assert bd.set_index("codec").loc["Half", "bd_rate"] == pytest.approx(-50.0, abs=1e-9)


def grid_and_matched(raw: pd.DataFrame, factor: float = 1.02) -> pd.DataFrame:
    """jpeg2000's grid rows (nominal_bpp, at the same numbers as its targets, bitstreams ``factor``
    times larger) and its rate-matched rows (target_bpp) in one results file, as `lcbench run -q ...`
    then `--target-bpp ...` into one run directory write them."""
    # the fixture's jpeg2000 rows as rate-matched rows: those carry matched_rate (without it they
    # read as grid rows of the old name, see test_legacy_jpeg2000_grid_rows_are_read_as_nominal_bpp)
    matched = raw.loc[raw.codec == "jpeg2000"].assign(rate_param="target_bpp", matched_rate=lambda d: d.quality)
    grid = matched.assign(rate_param="nominal_bpp", bpp=matched.bpp * factor, bytes=matched.bytes * factor)
    return pd.concat([raw.loc[raw.codec == "jpeg"], grid, matched], ignore_index=True)


def test_grid_and_rate_matched_rows_are_different_jobs(tmp_path):
    raw = pd.read_csv(DATA)
    mixed = grid_and_matched(raw)
    mixed.to_csv(tmp_path / "results.csv", index=False)
    df = load_results(tmp_path)  # used to stop: "32 rows measure the same job more than once"
    assert len(df) == len(mixed) == 96
    # the same run twice: now every row is a duplicate, and keeping one copy keeps both kinds
    twice = load_results([tmp_path, tmp_path], on_duplicate="last")
    assert sorted(twice.groupby("rate_param").size().items()) == [("nominal_bpp", 32), ("quality", 32),
                                                                  ("target_bpp", 32)]
    with pytest.raises(ResultsError, match="192 rows measure the same job more than once"):
        load_results([tmp_path, tmp_path])


def test_grid_and_rate_matched_rows_are_two_curves_in_tables(tmp_path):
    raw = pd.read_csv(DATA)
    df = validate(grid_and_matched(raw))
    s = summarize(df)
    assert list(dict.fromkeys(s.codec)) == ["jpeg", "jpeg2000", "jpeg2000@target_bpp"]
    matched = s[s.codec == "jpeg2000@target_bpp"]
    grid = s[s.codec == "jpeg2000"]
    assert set(matched.rate_param) == {"target_bpp"} and set(grid.rate_param) == {"nominal_bpp"}
    g = raw[raw.codec == "jpeg2000"].groupby("quality")[["bpp", "psnr_rgb"]].mean()
    assert np.allclose(matched.set_index("quality").loc[g.index, "bpp"], g.bpp)
    assert np.allclose(matched.set_index("quality").loc[g.index, "psnr_rgb"], g.psnr_rgb)
    assert np.allclose(grid.set_index("quality").loc[g.index, "bpp"], 1.02 * g.bpp)
    # one average curve per kind, 8 points each (used to be one curve of 8 points mixing both)
    for codec, scale in (("jpeg2000", 1.02), ("jpeg2000@target_bpp", 1.0)):
        c = rd_curve(df, codec, "psnr_rgb")
        assert len(c) == 8 and np.allclose(c.bpp, scale * g.sort_values("bpp").bpp)
    assert "jpeg2000@target_bpp  target_bpp=0.5" in format_terminal_table(df)
    # one kind of rows: labels as before
    assert list(dict.fromkeys(summarize(validate(raw)).codec)) == ["jpeg", "webp", "avif", "jpeg2000"]


def test_infinite_values_stay_infinite_in_json_and_html(results):
    """A lossless codec's PSNR is inf: summary.json wrote null (as for a missing value, beside
    psnr_rgb_n = 4) and the HTML per-image table wrote n/a."""
    import json as json_module

    from lcbench.html_report import per_image_results_html
    from lcbench.summary import to_json

    lossless = results[results.codec == "jpeg"].assign(codec="png", psnr_rgb=np.inf, mse_rgb=0.0)
    s = summarize(lossless)
    rows = json_module.loads(to_json(s))["rows"]
    assert rows[0]["psnr_rgb"] == "inf" and rows[0]["psnr_rgb_n"] == 4
    html = per_image_results_html(lossless)
    assert ">inf<" in html and 'data-v="1e308"' in html


def test_latex_notes_wrap_below_the_tabular(results, tmp_path):
    """Notes were \\multicolumn{N}{l} rows, which never wrap: a long note made the table thousands
    of points wide (overfull hbox). They are now paragraphs below the tabular, of the float's width."""
    import shutil
    import subprocess

    df = results.copy()
    df.loc[(df.codec == "webp") & (df.image == "kodim05"), "ms_ssim"] = np.nan  # a note about fewer images
    tex = to_latex(summary_table(summarize(df), spread=None))
    body, _, after = tex.partition(r"\end{tabular}")
    assert r"\multicolumn" not in tex and "fewer images" in after and "fewer images" not in body
    if shutil.which("pdflatex") is None:
        return  # the layout is checked where LaTeX is installed
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\\usepackage{booktabs}\\begin{document}\n" + tex
                   + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    widths = [float(w) for w in re.findall(r"Overfull \\hbox \((\d+\.?\d*)pt too wide\)", log)]
    assert all(w < 400 for w in widths), widths  # the tabular itself may be wide; the notes wrap


def test_latex_values_with_note_markers_keep_a_minus_sign(results):
    """A BD value with a note marker ("-44.17 [6]") or "(n=3/4)" failed the number test and was set
    in text mode, a hyphen, beside math minus signs in the same column."""
    df = results.copy()
    df.loc[(df.codec == "webp") & (df.image == "kodim05"), ["error", "ok"]] = ["x", False]
    bd = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=200)
    table = bd_display_table(bd, "rate")
    tex = to_latex(table)
    row = next(line for line in tex.splitlines() if line.startswith("webp"))
    v = bd.set_index("codec").loc["webp"]
    assert f"${v.bd_rate:+.2f}$ [" in row  # the value in math mode, its marker after it
    assert "(n=3/4)" in row and f"${v.bd_rate_img_mean:+.2f} [" in row
    assert to_markdown(table).count("[1]") >= 2  # the marker is still shown (cell and note)
