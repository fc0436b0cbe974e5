"""``lcbench report`` and ``lcbench bd`` end to end on the real Kodak results fixture."""
from __future__ import annotations

import io
import json
import re
import shutil
import warnings
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
import pytest

from lcbench.cli import main
from lcbench.compressai_json import read_compressai_json

DATA = Path(__file__).parent / "data" / "kodak4_results.csv"
PUBLISHED = {"name": "JPEG (published)", "description": "CompressAI-style curve",
             "results": {"bpp": [0.33, 0.52, 0.70, 0.86, 1.00], "psnr-rgb": [26.0, 28.5, 30.0, 31.1, 31.9],
                         "ms-ssim-rgb": [0.90, 0.945, 0.963, 0.973, 0.978]}}


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(DATA, d / "results.csv")
    return d


def mean_curve(raw: pd.DataFrame, codec: str, metric: str):
    g = raw[raw.codec == codec].groupby("quality")[["bpp", metric]].mean().sort_values("bpp")
    return g.bpp.to_numpy(), g[metric].to_numpy()


def test_report_writes_every_format(run_dir, tmp_path, capsys):
    pub = tmp_path / "published.json"
    pub.write_text(json.dumps(PUBLISHED))
    out = tmp_path / "out"
    assert main(["report", str(run_dir), "--out", str(out), "--with", str(pub), "--ci", "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "webp" in printed and "quality=50" in printed and "BD-rate" in printed
    for name in ("summary.md", "summary.csv", "summary.json", "summary.tex", "bd.md", "bd.csv", "bd.json", "bd.tex",
                 "bd_per_image.csv", "report.html"):
        assert (out / name).stat().st_size > 0, name
    for metric in ("psnr_rgb", "psnr_y", "ms_ssim_db", "ssim"):
        for ext in ("pdf", "png", "svg"):
            assert (out / f"rd_{metric}.{ext}").stat().st_size > 0
        assert b"/FontFile2" in (out / f"rd_{metric}.pdf").read_bytes()
    # BD-rate of webp against jpeg on PSNR-RGB: the independent package agrees to 0.1 points.
    bd = pd.read_csv(out / "bd.csv")
    raw = pd.read_csv(DATA)
    row = bd[(bd.codec == "webp") & (bd.metric == "psnr_rgb")].iloc[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = bjontegaard.bd_rate(*mean_curve(raw, "jpeg", "psnr_rgb"), *mean_curve(raw, "webp", "psnr_rgb"),
                                  "pchip", require_matching_points=False)
        # The published curve takes part in the BD table with its average curve.
        pub_ref = bjontegaard.bd_rate(*mean_curve(raw, "jpeg", "psnr_rgb"), PUBLISHED["results"]["bpp"],
                                      PUBLISHED["results"]["psnr-rgb"], "pchip", require_matching_points=False)
    assert abs(row.bd_rate - ref) < 0.1
    prow = bd[(bd.codec == "JPEG (published)") & (bd.metric == "psnr_rgb")].iloc[0]
    assert abs(prow.bd_rate - pub_ref) < 0.1
    assert "no per-image data" in prow.bd_rate_img_reason
    # marked as published everywhere, with no image counts of the run
    assert prow.source == f"published: {pub}" and pd.isna(prow.n_images) and pd.isna(prow.n_images_left_out)
    assert set(bd[bd.codec != "JPEG (published)"].source) == {"measured"}
    from lcbench.summary import latex_escape

    for name, path in (("bd.md", str(pub)), ("bd.tex", latex_escape(str(pub))), ("report.html", str(pub))):
        text = (out / name).read_text()
        assert "published curve, not measured by lcbench" in text and path in text, name
    assert "| JPEG (published) \u2020 |" in (out / "bd.md").read_text()
    # CompressAI export of each codec reads back to the summary's values.
    back = read_compressai_json(out / "compressai" / "webp.json")
    summ = pd.read_csv(out / "summary.csv")
    assert back.curve.psnr_rgb.tolist() == pytest.approx(summ[summ.codec == "webp"].psnr_rgb.tolist())
    # The HTML report is self-contained and has every job's row.
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert page.count("<tr>") >= len(raw) + 1
    tex = (out / "summary.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\bottomrule" in tex


def test_report_default_out_and_merge(tmp_path):
    raw = pd.read_csv(DATA)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    raw[raw.codec.isin(["jpeg", "webp"])].to_csv(a / "results.csv", index=False)
    raw[raw.codec == "avif"].to_csv(b / "results.csv", index=False)
    assert main(["report", str(a), str(b), "--no-figures", "--no-html", "--bootstrap", "100"]) == 0
    bd = pd.read_csv(a / "report" / "bd.csv")
    assert set(bd.codec) == {"webp", "avif"}


def test_report_aggregate_mse_changes_psnr(run_dir, tmp_path):
    out = tmp_path / "o"
    assert main(["report", str(run_dir), "--out", str(out), "--aggregate", "mse", "--no-figures", "--no-html",
                 "--bootstrap", "100"]) == 0
    summ = pd.read_csv(out / "summary.csv")
    raw = pd.read_csv(DATA)
    g = raw[(raw.codec == "jpeg") & (raw.quality == 10)]
    import numpy as np

    assert summ[(summ.codec == "jpeg") & (summ.quality == 10)].psnr_rgb.iloc[0] == pytest.approx(
        10 * np.log10(255 ** 2 / g.mse_rgb.mean()))
    assert "PSNR from the mean MSE" in (out / "summary.md").read_text()


def test_bd_command_formats_and_exit_codes(run_dir, tmp_path, capsys):
    assert main(["bd", str(run_dir), "--anchor", "jpeg", "--metric", "psnr_rgb", "--format", "csv",
                 "--bootstrap", "100"]) == 0
    from io import StringIO

    table = pd.read_csv(StringIO(capsys.readouterr().out))
    assert set(table.codec) == {"webp", "avif", "jpeg2000"} and set(table.metric) == {"psnr_rgb"}
    assert main(["bd", str(run_dir), "--anchor", "webp", "--metric", "ssim", "--method", "cubic",
                 "--no-per-image", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["anchor"] == "webp" and doc["method"] == "cubic"
    assert {r["codec"] for r in doc["rows"]} == {"jpeg", "avif", "jpeg2000"}
    # Bad input: exit 2 with a message naming the problem.
    assert main(["bd", str(run_dir), "--anchor", "bpg"]) == 2
    assert "bpg" in capsys.readouterr().err
    assert main(["bd", str(tmp_path / "nowhere")]) == 2
    assert main(["bd", str(run_dir), "--metric", "vmaf"]) == 2
    # --strict: a NaN BD value (too few points) fails the check.
    raw = pd.read_csv(DATA)
    short = tmp_path / "short"
    short.mkdir()
    raw[~((raw.codec == "avif") & (raw.quality > 40))].to_csv(short / "results.csv", index=False)
    assert main(["bd", str(short), "--metric", "psnr_rgb", "--bootstrap", "100"]) == 0
    assert "at least 4" in capsys.readouterr().out
    assert main(["bd", str(short), "--metric", "psnr_rgb", "--strict", "--bootstrap", "100"]) == 1


def test_figsize_parsing():
    from lcbench.cli.report import parse_figsize

    assert parse_figsize("3.5,2.6") == (3.5, 2.6)
    assert parse_figsize("7x3") == (7.0, 3.0)
    assert parse_figsize("double") == (7.16, 3.2)
    with pytest.raises(Exception, match="WIDTH,HEIGHT"):
        parse_figsize("big")


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_html_report_script_is_valid_javascript(run_dir, tmp_path):
    import subprocess

    out = tmp_path / "o"
    assert main(["report", str(run_dir), "--out", str(out), "--no-figures", "--bootstrap", "100"]) == 0
    script = re.search(r"<script>(.*)</script>", (out / "report.html").read_text(), re.S).group(1)
    (tmp_path / "report.js").write_text(script)
    check = subprocess.run(["node", "--check", str(tmp_path / "report.js")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("argv, words", [
    (["bd", "{run}", "--metric", "codec"], "--metric: 'codec' is not a quality metric"),
    (["bd", "{run}", "--metric", "psnr_rgb,bpp"], "--metric: 'bpp' is not a quality metric"),
    (["report", "{run}", "--metrics", "nosuch", "--no-figures", "--no-html"], "--metrics: 'nosuch' is not"),
    (["report", "{run}", "--metrics", "codec", "--no-figures", "--no-html"], "--metrics: 'codec' is not"),
])
def test_metric_names_are_checked_up_front(run_dir, capsys, argv, words):
    """A text column gave a TypeError traceback, an unknown name was silently dropped by report: now
    exit 2 with the valid names, before anything is written."""
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "valid: psnr_rgb, psnr_y, ssim, ms_ssim, ms_ssim_db" in err
    assert not (run_dir / "report").exists()


@pytest.mark.parametrize("argv, words", [
    (["report", "{run}", "--formats", "xyz"], "--formats: unknown figure format(s) xyz; choose from pdf, png, svg"),
    (["report", "{run}", "--with", "{run}/nosuch.json"], "--with {run}/nosuch.json: cannot read this CompressAI JSON: "
                                                          "No such file or directory"),
])
def test_report_options_are_named_in_errors_before_anything_is_written(run_dir, capsys, argv, words):
    """A bad --formats failed after the tables were written and without naming the option; a missing
    --with file was a bare '[Errno 2]'."""
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    assert main(argv) == 2
    assert words.replace("{run}", str(run_dir)) in capsys.readouterr().err
    assert not (run_dir / "report").exists()


def test_extra_numeric_metric_column_is_accepted(run_dir, tmp_path, capsys):
    """A codec's extra metric (e.g. a pipeline's psnr_y_sr) is a valid metric; rate/size/time columns are not."""
    raw = pd.read_csv(run_dir / "results.csv")
    raw["psnr_y_sr"] = raw["psnr_y"] - 0.5
    raw.to_csv(run_dir / "results.csv", index=False)
    assert main(["bd", str(run_dir), "--metric", "psnr_y_sr", "--no-per-image", "--format", "csv",
                 "--bootstrap", "100"]) == 0
    assert "psnr_y_sr" in capsys.readouterr().out
    for col in ("bytes", "enc_time_s", "mse_rgb", "quality"):
        assert main(["bd", str(run_dir), "--metric", col]) == 2


@pytest.mark.parametrize("cmd", [["bd"], ["report", "--no-figures", "--no-html"]])
@pytest.mark.parametrize("n", ["-5", "0", "1", "99"])
def test_non_positive_bootstrap_is_rejected(run_dir, capsys, cmd, n):
    assert main([cmd[0], str(run_dir), *cmd[1:], "--bootstrap", n]) == 2
    assert f"--bootstrap must be at least 100 resamples" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["jpeg", "JPEG", "Jpeg"])
def test_published_name_clash_ignores_case(run_dir, tmp_path, capsys, name):
    """A published "JPEG" beside the run's measured "jpeg" is refused (exit 2) naming the file."""
    pub = tmp_path / "pub.json"
    pub.write_text(json.dumps({**PUBLISHED, "name": name}))
    assert main(["bd", str(run_dir), "--with", str(pub), "--metric", "psnr_rgb", "--no-per-image"]) == 2
    err = capsys.readouterr().err
    assert f"{pub}: published curve name {name!r} clashes with measured codec 'jpeg'" in err
    assert "ignoring case" in err


def test_two_published_curves_with_one_name_are_refused(run_dir, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(PUBLISHED))
    b.write_text(json.dumps({**PUBLISHED, "name": PUBLISHED["name"].upper()}))
    assert main(["bd", str(run_dir), "--with", str(a), "--with", str(b), "--metric", "psnr_rgb"]) == 2
    assert f"{b}: published curve name 'JPEG (PUBLISHED)' clashes with the published curve" in capsys.readouterr().err


def test_report_and_bd_on_grid_and_rate_matched_rows_of_one_codec(tmp_path, capsys):
    """`lcbench run -q ... --out r` then `--target-bpp ... --out r`: both kinds in one results.csv. Report and
    bd used to stop ("rows measure the same job more than once"); --on-duplicate last dropped the grid."""
    raw = pd.read_csv(DATA)
    # the fixture's jpeg2000 rows as rate-matched rows: those carry matched_rate (without it they
    # read as grid rows of the old name, see test_legacy_jpeg2000_grid_rows_are_read_as_nominal_bpp)
    matched = raw.loc[raw.codec == "jpeg2000"].assign(rate_param="target_bpp", matched_rate=lambda d: d.quality)
    grid = matched.assign(rate_param="nominal_bpp", bpp=matched.bpp * 1.02, bytes=matched.bytes * 1.02)
    run = tmp_path / "r"
    run.mkdir()
    pd.concat([raw.loc[raw.codec == "jpeg"], grid, matched]).to_csv(run / "results.csv", index=False)
    out = tmp_path / "rep"
    assert main(["report", str(run), "--out", str(out), "--no-html", "--formats", "png",
                 "--metrics", "psnr_rgb", "--bootstrap", "200"]) == 0
    summ = pd.read_csv(out / "summary.csv")
    assert summ.groupby("codec", sort=False)["rate_param"].unique().map(list).to_dict() == {
        "jpeg": ["quality"], "jpeg2000": ["nominal_bpp"], "jpeg2000@target_bpp": ["target_bpp"]}
    bd = pd.read_csv(out / "bd.csv")
    assert list(bd.codec) == ["jpeg2000", "jpeg2000@target_bpp"]
    assert sorted(p.name for p in (out / "compressai").glob("*.json")) == [
        "jpeg.json", "jpeg2000.json", "jpeg2000_target_bpp.json"]
    capsys.readouterr()
    assert main(["bd", str(run), "--anchor", "jpeg2000@target_bpp", "--metric", "psnr_rgb", "--format", "csv",
                 "--bootstrap", "200"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("codec")
    assert rows.loc["jpeg2000", "bd_rate"] == pytest.approx(2.0, abs=1e-9)  # every grid bitstream 2% larger
    # --codecs with the codec's label selects both of its curves
    assert main(["bd", str(run), "--codecs", "jpeg2000", "--metric", "psnr_rgb", "--format", "csv",
                 "--no-per-image"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(rows.codec) == ["jpeg2000@target_bpp"] and list(rows.anchor) == ["jpeg2000"]


def test_report_html_keeps_its_figures_and_every_metrics_per_image_bd(run_dir, tmp_path):
    """--formats pdf wrote a report.html without RD figures, and bd_per_image.csv (and the HTML's
    per-image section) covered only the first metric."""
    out = tmp_path / "out"
    assert main(["report", str(run_dir), "--out", str(out), "--formats", "pdf", "--bootstrap", "200"]) == 0
    page = (out / "report.html").read_text()
    assert page.count("<figure><img") == 4 and "data:image/svg+xml;base64," in page
    assert sorted(p.name for p in out.glob("rd_*")) == [f"rd_{m}.pdf" for m in sorted(("psnr_rgb", "psnr_y",
                                                                                         "ms_ssim_db", "ssim"))]
    per_image = pd.read_csv(out / "bd_per_image.csv")
    assert set(per_image.metric) == {"psnr_rgb", "psnr_y", "ms_ssim_db", "ssim"}
    for metric in set(per_image.metric):
        assert f"Per-image BD-rate [%] on {metric} against jpeg" in page
    # each per-image value is that image's own BD-rate (webp vs jpeg, kodim15, SSIM), by the independent package
    raw = pd.read_csv(DATA)
    one = raw[raw.image == "kodim15"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = bjontegaard.bd_rate(*mean_curve(one, "jpeg", "ssim"), *mean_curve(one, "webp", "ssim"), "pchip",
                                  require_matching_points=False)
    got = per_image.query("codec == 'webp' and image == 'kodim15' and metric == 'ssim'").value.iloc[0]
    assert got == pytest.approx(ref, abs=0.1)


def test_report_summary_shows_extra_metrics(run_dir, tmp_path):
    """summary.* left out a pipeline's psnr_y_sr/ssim_y_sr (shown only by rescale-table and bd)."""
    raw = pd.read_csv(DATA)
    raw["psnr_y_sr"] = raw["psnr_y"] - 0.5 + 0.01 * raw.index
    raw["lpips_like"] = 1.0 / raw["psnr_y"]  # a plugin's metric whose direction lcbench does not know
    raw["kept_fraction"] = 0.5  # importance_map's diagnostic: not a metric
    raw.to_csv(run_dir / "results.csv", index=False)
    out = tmp_path / "out"
    assert main(["report", str(run_dir), "--out", str(out), "--no-figures", "--bootstrap", "200"]) == 0
    summ = pd.read_csv(out / "summary.csv")
    want = raw[raw.codec == "webp"].groupby("quality").psnr_y_sr.mean()
    got = summ[summ.codec == "webp"].set_index("quality").psnr_y_sr
    assert np.allclose(got.loc[want.index], want)
    md = (out / "summary.md").read_text()
    assert "PSNR-Y SR [dB]" in md and "lpips_like" in md
    assert "kept_fraction" not in md and not any(c.startswith("kept_fraction") for c in summ.columns)
