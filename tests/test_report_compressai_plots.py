"""CompressAI JSON round trip, and the figures' files: fonts, resolution, formats."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lcbench.compressai_json import (CompressAIFormatError, curve_from_results, curve_from_summary,
                                     read_compressai_json, write_compressai_json)
from lcbench.plots import codec_styles, plot_all, plot_rd
from lcbench.results import load_results
from lcbench.summary import summarize

DATA = Path(__file__).parent / "data" / "kodak4_results.csv"
# CompressAI's published JPEG-on-Kodak format: older keys "psnr"/"ms-ssim" and extra lists.
PUBLISHED = {"name": "JPEG (published)", "description": "Pillow 7.1.2",
             "results": {"bpp": [0.2212, 0.3266, 0.4231, 0.5084, 0.5879],
                         "psnr": [23.78, 26.58, 28.04, 29.04, 29.78],
                         "ms-ssim": [0.8031, 0.8899, 0.9236, 0.9427, 0.9533],
                         "encoding_time": [0.011, 0.011, 0.012, 0.013, 0.012]}}


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return load_results(DATA)


def test_exported_curve_uses_one_image_set_in_every_column(results, tmp_path):
    """The report's export took summarize rows: bpp over every image beside MS-SSIM over the images
    large enough for it, and a rate point with a failed job averaged fewer images, so the file
    re-imported with --with gave another BD-rate than the measured curve (-16 % against -31 %)."""
    df = results.copy()
    small = (df.codec == "webp") & (df.image == "kodim05")
    df.loc[small, ["ms_ssim", "ms_ssim_db"]] = np.nan  # as for an image too small for MS-SSIM
    failed = (df.codec == "webp") & (df.image == "kodim15") & (df.quality == 90)
    df.loc[failed, "error"], df.loc[failed, "ok"] = "webp: crashed", False
    curve = curve_from_results(df, "webp", "mean", "test")
    kept = ["kodim01", "kodim23"]  # complete in every metric at every rate point
    ref = df[(df.codec == "webp") & df.image.isin(kept)].groupby("quality")
    assert curve.extra["n_images"] == [2] * 8 and curve.extra["quality"] == sorted(ref.groups)
    for col in ("bpp", "psnr_rgb", "ms_ssim", "ssim"):
        assert curve.curve[col].to_numpy() == pytest.approx(ref[col].mean().to_numpy(), rel=1e-12), col
    assert "2 of 4 images" in curve.description and "kodim05" in curve.description and "kodim15" in curve.description
    back = read_compressai_json(write_compressai_json(tmp_path / "webp.json", curve))
    assert back.curve["bpp"].to_numpy() == pytest.approx(curve.curve["bpp"].to_numpy())
    # lossless: PSNR is inf at every point on every image, which leaves the image set alone
    full = curve_from_results(results, "webp")
    assert full.extra["n_images"] == [4] * 8


def test_compressai_round_trip(results, tmp_path):
    s = summarize(results)
    curve = curve_from_summary(s, "webp", "WebP method 6, 4 Kodak images")
    path = write_compressai_json(tmp_path / "webp.json", curve)
    doc = json.loads(path.read_text())
    assert set(doc) == {"name", "description", "results"}
    assert doc["results"]["bpp"] == pytest.approx(s[s.codec == "webp"].bpp.tolist())
    assert doc["results"]["psnr-rgb"] == pytest.approx(s[s.codec == "webp"].psnr_rgb.tolist())
    assert doc["results"]["ms-ssim-rgb"] == pytest.approx(s[s.codec == "webp"].ms_ssim.tolist())
    back = read_compressai_json(path)
    assert back.name == "webp" and back.description == curve.description
    for col in ("bpp", "psnr_rgb", "psnr_y", "ms_ssim", "ssim", "enc_time_s", "dec_time_s"):
        assert back.curve[col].to_numpy() == pytest.approx(curve.curve[col].to_numpy(), rel=1e-15)
    assert back.extra["quality"] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0, 90.0]
    write_compressai_json(tmp_path / "again.json", back)
    assert json.loads((tmp_path / "again.json").read_text()) == doc


def test_reads_published_compressai_keys(tmp_path):
    (tmp_path / "jpeg.json").write_text(json.dumps(PUBLISHED))
    p = read_compressai_json(tmp_path / "jpeg.json")
    assert p.curve.psnr_rgb.tolist() == PUBLISHED["results"]["psnr"]
    assert p.curve.enc_time_s.tolist() == PUBLISHED["results"]["encoding_time"]
    # dB of the averaged MS-SSIM, as CompressAI's plot does.
    assert p.curve.ms_ssim_db.iloc[0] == pytest.approx(-10 * np.log10(1 - 0.8031))


@pytest.mark.parametrize("doc,fragment", [
    ({"name": "x"}, "'results'"),
    ({"results": {"psnr-rgb": [1, 2]}}, "no 'bpp'"),
    ({"results": {"bpp": [1, 2], "psnr-rgb": [1]}}, "list of 2"),
    ({"results": {"bpp": [1, 2], "psnr-rgb": [1, "x"]}}, "non-numeric"),
])
def test_malformed_compressai_json(tmp_path, doc, fragment):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(CompressAIFormatError, match=fragment):
        read_compressai_json(f)
    f.write_text("{not json")
    with pytest.raises(CompressAIFormatError, match="not valid JSON"):
        read_compressai_json(f)


@pytest.mark.parametrize("res,fragment", [
    # MS-SSIM in dB under the [0, 1] keys: refused, not turned into a nonsense dB curve
    ({"bpp": [0.2, 0.4], "ms-ssim-rgb": [10.0, 13.0]}, r"ms-ssim-rgb'\]: MS-SSIM values must be in \[0, 1\] \(dB given\?\)"),
    ({"bpp": [0.2, 0.4], "ms-ssim": [0.9, 13.0]}, r"MS-SSIM values must be in \[0, 1\] \(dB given\?\), got 13"),
    # two keys for one metric: ambiguous, whichever came first used to win silently
    ({"bpp": [0.2, 0.4], "psnr": [1, 2], "psnr-rgb": [27, 30]}, "both 'psnr' and 'psnr-rgb'.*ambiguous"),
    ({"bpp": [0.2, 0.4], "ms-ssim": [0.9, 0.95], "ms-ssim-rgb": [0.9, 0.95]}, "both 'ms-ssim' and 'ms-ssim-rgb'"),
    ({"bpp": [0.2, 0.4], "ssim": [0.9, 0.95], "ssim-rgb": [0.9, 0.95]}, "both 'ssim' and 'ssim-rgb'"),
    # booleans and strings are not JSON numbers (float(True) == 1.0 made true a bpp of 1)
    ({"bpp": [True, 0.4], "psnr-rgb": [27, 30]}, r"results\['bpp'\] has a non-numeric value: True \(bool\)"),
    ({"bpp": [0.2, 0.4], "psnr-rgb": [27, "30"]}, r"non-numeric value: '30' \(str\)"),
    # not a list: no "list of -1 values"
    ({"bpp": 0.5, "psnr-rgb": 30}, r"results\['bpp'\] must be a list of values, one per rate point \(got float\)"),
    ({"bpp": [0.2, 0.4], "psnr-rgb": 30}, r"results\['psnr-rgb'\] must be a list of 2 values like 'bpp' \(got int\)"),
])
def test_compressai_values_checked(tmp_path, res, fragment):
    f = tmp_path / "pub.json"
    f.write_text(json.dumps({"name": "x", "results": res}))
    with pytest.raises(CompressAIFormatError, match=fragment) as info:
        read_compressai_json(f)
    assert str(info.value).startswith(f"{f}: ")
    assert "list of -1" not in str(info.value)


def test_compressai_source_and_valid_bounds(tmp_path):
    f = tmp_path / "pub.json"
    f.write_text(json.dumps({"name": "x", "results": {"bpp": [0.2, 0.4], "ms-ssim-rgb": [0.0, 1.0],
                                                      "psnr": [27, None]}}))
    c = read_compressai_json(f)
    assert c.source == str(f) and c.curve.ms_ssim.tolist() == [0.0, 1.0]
    assert c.curve.psnr_rgb.iloc[0] == 27.0 and np.isnan(c.curve.psnr_rgb.iloc[1])


def fonts_in_pdf(data: bytes) -> tuple[int, int]:
    """(embedded TrueType font programs, Type 3 fonts) in a PDF's bytes."""
    return len(re.findall(rb"/FontFile2", data)), len(re.findall(rb"/Subtype\s*/Type3", data))


def test_figures_pdf_truetype_png_300dpi_svg(results, tmp_path):
    (tmp_path / "pub.json").write_text(json.dumps(PUBLISHED))
    pub = read_compressai_json(tmp_path / "pub.json")
    written = plot_all(results, tmp_path, published=[pub], ci=True)
    assert set(written) == {"psnr_rgb", "psnr_y", "ms_ssim_db", "ssim"}
    for metric, paths in written.items():
        pdf, png, svg = (tmp_path / f"rd_{metric}.{ext}" for ext in ("pdf", "png", "svg"))
        assert paths == [pdf, png, svg]
        truetype, type3 = fonts_in_pdf(pdf.read_bytes())
        assert truetype >= 1 and type3 == 0
        with Image.open(png) as im:
            assert im.info["dpi"] == pytest.approx((300, 300), abs=0.5)
            # paper style: 3.5 in wide before the tight crop, at 300 dpi
            assert 800 < im.width <= 1100
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_consistent_styles_and_published_overlay(results, tmp_path):
    (tmp_path / "pub.json").write_text(json.dumps(PUBLISHED))
    pub = read_compressai_json(tmp_path / "pub.json")
    styles = codec_styles(["jpeg", "webp", "avif", "jpeg2000", pub.name])
    assert len({c for c, _ in styles.values()}) == 5 and len({m for _, m in styles.values()}) == 5
    lines = {}
    for metric in ("psnr_rgb", "ms_ssim_db"):
        fig = plot_rd(results, metric, published=[pub], styles=styles)
        ax = fig.axes[0]
        lines[metric] = {l.get_label(): (l.get_color(), l.get_marker(), l.get_linestyle()) for l in ax.get_lines()}
        assert ax.get_xlabel() == "Rate [bpp]"
    assert lines["psnr_rgb"] == lines["ms_ssim_db"]  # same look for each codec in every figure
    assert lines["psnr_rgb"]["JPEG (published)"][2] == "--"
    assert lines["psnr_rgb"]["webp"][:2] == styles["webp"]
    # The drawn points are the averages over images.
    fig = plot_rd(results, "psnr_rgb", codecs=["jpeg"])
    x, y = fig.axes[0].get_lines()[0].get_data()
    g = pd.read_csv(DATA).query("codec == 'jpeg'").groupby("quality")[["bpp", "psnr_rgb"]].mean().sort_values("bpp")
    assert np.allclose(x, g.bpp) and np.allclose(y, g.psnr_rgb)


def test_published_curve_legend_says_published(results):
    """A published curve named like a codec ("JPEG") must not read as measured in the legend."""
    doc = {**PUBLISHED, "name": "BPG"}
    from lcbench.compressai_json import from_compressai_dict

    pub = from_compressai_dict(doc, "bpg.json")
    fig = plot_rd(results, "psnr_rgb", codecs=["jpeg"], published=[pub])
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert labels == ["jpeg", "BPG (published)"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["jpeg", "BPG (published)"]
    # a name that already says so is not doubled
    fig = plot_rd(results, "psnr_rgb", codecs=["jpeg"], published=[from_compressai_dict(PUBLISHED, "j.json")])
    assert [l.get_label() for l in fig.axes[0].get_lines()] == ["jpeg", "JPEG (published)"]


def test_slides_style_and_figsize(results, tmp_path):
    fig = plot_rd(results, "ssim", style="slides")
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 4.8))
    fig = plot_rd(results, "ssim", figsize=(7.0, 3.0))
    assert tuple(fig.get_size_inches()) == pytest.approx((7.0, 3.0))
    with pytest.raises(ValueError, match="style"):
        plot_rd(results, "ssim", style="poster")


def test_rd_curves_drawn_over_one_image_set(results):
    """webp q90 measured on kodim15 only: both curves are kodim15's (computed by hand here), and the
    legends say 1/4 images. jpeg's curve was over all 4 images beside webp's over 1, so the figure
    compared different images while the BD table beside it compared kodim15 alone."""
    df = results[~((results.codec == "webp") & (results.quality == 90) & (results.image != "kodim15"))]
    fig = plot_rd(df, "psnr_rgb", codecs=["jpeg", "webp"])
    lines = {l.get_label(): l.get_data() for l in fig.axes[0].get_lines()}
    assert set(lines) == {"jpeg (1/4 images)", "webp (1/4 images)"}
    raw = pd.read_csv(DATA)
    for codec in ("jpeg", "webp"):
        g = raw.query(f"codec == '{codec}' and image == 'kodim15'").groupby("quality")[["bpp", "psnr_rgb"]].mean()
        x, y = lines[f"{codec} (1/4 images)"]
        assert np.allclose(x, g.sort_values("bpp").bpp) and np.allclose(y, g.sort_values("bpp").psnr_rgb)
    # alone, jpeg is over its 4 images
    alone = {l.get_label(): l.get_data() for l in plot_rd(df, "psnr_rgb", codecs=["jpeg"]).axes[0].get_lines()}
    j = raw.query("codec == 'jpeg'").groupby("quality")[["bpp", "psnr_rgb"]].mean().sort_values("bpp")
    assert np.allclose(alone["jpeg"][0], j.bpp)


def test_a_codec_without_a_complete_image_is_named_not_dropped(results):
    df = results.copy()
    df.loc[(df.codec == "webp") & (df.quality == 90), "psnr_rgb"] = np.nan  # webp q90 failed everywhere
    fig = plot_rd(df, "psnr_rgb", codecs=["jpeg", "webp"])
    ax = fig.axes[0]
    assert [l.get_label() for l in ax.get_lines()] == ["jpeg"]
    note = fig.get_supxlabel().replace("\n", " ")
    assert "not drawn" in note and "webp" in note


def test_grid_and_rate_matched_rows_are_two_lines(results):
    """jpeg2000 grid (nominal_bpp) and rate-matched (target_bpp) rows of one run: two curves, not one
    zig-zag through both."""
    raw = pd.read_csv(DATA)
    # the fixture's jpeg2000 rows as rate-matched rows: those carry matched_rate (without it they
    # read as grid rows of the old name, see test_legacy_jpeg2000_grid_rows_are_read_as_nominal_bpp)
    matched = raw.loc[raw.codec == "jpeg2000"].assign(rate_param="target_bpp", matched_rate=lambda d: d.quality)
    grid = matched.assign(rate_param="nominal_bpp", bpp=matched.bpp * 1.1, bytes=matched.bytes * 1.1)
    from lcbench.results import validate

    fig = plot_rd(validate(pd.concat([grid, matched], ignore_index=True)), "psnr_rgb")
    lines = {l.get_label(): l.get_data() for l in fig.axes[0].get_lines()}
    assert sorted(lines) == ["jpeg2000", "jpeg2000@target_bpp"]
    g = matched.groupby("quality")[["bpp", "psnr_rgb"]].mean().sort_values("bpp")
    assert np.allclose(lines["jpeg2000@target_bpp"][0], g.bpp) and np.allclose(lines["jpeg2000"][0], 1.1 * g.bpp)
    assert np.allclose(lines["jpeg2000"][1], g.psnr_rgb)


def test_measured_curves_are_averaged_like_a_published_curve(results):
    """A published MS-SSIM dB curve is the dB of the mean MS-SSIM (CompressAI's convention); the
    measured side used the mean of per-image dB, so lcbench's own webp re-imported as a published
    curve gave -3 % where the measured webp gave -25 %."""
    from lcbench.bdrate import bd_table

    pub = curve_from_results(results, "webp", "mean")  # what `lcbench report` exports
    from_file = {"webp (published)": pub.curve.assign(ms_ssim_db=-10 * np.log10(1 - pub.curve.ms_ssim))}
    table = bd_table(results, "jpeg", metrics=["ms_ssim_db", "psnr_rgb"], extra_curves=from_file,
                     per_image=False).set_index(["codec", "metric"])
    like = bd_table(results, "jpeg", metrics=["ms_ssim_db"], aggregate="mse", per_image=False).set_index(["codec", "metric"])
    mean = bd_table(results, "jpeg", metrics=["psnr_rgb"], per_image=False).set_index(["codec", "metric"])
    assert table.loc[("webp (published)", "ms_ssim_db"), "bd_rate"] == pytest.approx(
        like.loc[("webp", "ms_ssim_db"), "bd_rate"], abs=1e-9)
    assert table.loc[("webp (published)", "psnr_rgb"), "bd_rate"] == pytest.approx(
        mean.loc[("webp", "psnr_rgb"), "bd_rate"], abs=1e-9)
    assert table.loc[("webp", "ms_ssim_db"), "aggregate"] == "mean"  # measured against measured: as asked
    import dataclasses

    fig = plot_rd(results, "ms_ssim_db", published=[dataclasses.replace(pub, curve=from_file["webp (published)"])])
    assert fig.axes[0].get_ylabel().endswith("(of the mean, as CompressAI)")
