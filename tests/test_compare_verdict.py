"""``lcbench compare`` on real results (tests/data/kodak4_results.csv: jpeg/webp/jpeg2000/avif on 4 Kodak
images), with candidates derived by hand so the expected BD-rates are known exactly: scaling every
bitstream of an image by f shifts its log-rate curve by log f, so its BD-rate is 100 (f - 1)."""
from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
import pytest

from lcbench.cli import main
from lcbench.compare import CompareInputError, Thresholds, compare, parse_pair

DATA = Path(__file__).parent / "data" / "kodak4_results.csv"
IMAGES = ["kodim01", "kodim05", "kodim15", "kodim23"]
CODECS = ["jpeg", "webp", "avif", "jpeg2000"]


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return pd.read_csv(DATA)


IMAGES6 = sorted(IMAGES + ["kodim01b", "kodim15b"])


@pytest.fixture(scope="module")
def base6(base) -> pd.DataFrame:
    """Six images (two of them renamed copies): enough for a per-image 95% interval, which
    four images are not (``lcbench.bdrate.MIN_VALUES_FOR_INTERVAL``)."""
    copies = [base[base["image"] == img].assign(image=img + "b") for img in ("kodim01", "kodim15")]
    return pd.concat([base, *copies], ignore_index=True)


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def scaled(df: pd.DataFrame, factors: dict[str, float] | float) -> pd.DataFrame:
    """The same run with every bitstream of an image ``factor`` times larger (bytes and bpp)."""
    out = df.copy()
    f = out["image"].map(factors) if isinstance(factors, dict) else factors
    out["bytes"] = out["bytes"] * f
    out["bpp"] = out["bpp"] * f
    return out


def run_cli(*args: str | Path) -> int:
    return main(["compare", *map(str, args)])


def test_run_compared_with_itself_passes(base6, tmp_path, capsys):
    a = write(base6, tmp_path / "a.csv")
    out = tmp_path / "out"
    code = run_cli(a, a, "--markdown", out / "s.md", "--junit", out / "j.xml", "--json", out / "v.json")
    assert code == 0
    v = json.loads((out / "v.json").read_text())
    assert v["status"] == "pass" and v["exit_code"] == 0
    bd = [c for c in v["checks"] if c["kind"] == "bd_rate"]
    assert len(bd) == len(CODECS) * 2  # default metrics psnr_rgb, ms_ssim_db
    for c in bd:
        assert c["value"] == 0.0 and c["ci_low"] == 0.0 and c["ci_high"] == 0.0
        assert c["outcome"] == "no change"
    assert "✅ lcbench regression check: passed" in (out / "s.md").read_text()
    assert "PASS: 8/8 checks passed" in capsys.readouterr().out


def test_bitstreams_five_percent_larger_fail_with_plus_five(base6, tmp_path):
    a, w = write(base6, tmp_path / "a.csv"), write(scaled(base6, 1.05), tmp_path / "w.csv")
    out = tmp_path / "out"
    code = run_cli(a, w, "--metric", "psnr_rgb,ms_ssim_db", "--markdown", out / "s.md", "--junit", out / "j.xml",
                   "--json", out / "v.json")
    assert code == 1
    v = json.loads((out / "v.json").read_text())
    assert v["status"] == "fail"
    bd = [c for c in v["checks"] if c["kind"] == "bd_rate"]
    assert {c["status"] for c in bd} == {"fail"}
    for c in bd:
        assert c["value"] == pytest.approx(5.0, abs=1e-6)          # per-image mean
        assert c["data"]["bd_rate_average_curves"] == pytest.approx(5.0, abs=1e-6)
        assert c["ci_low"] == pytest.approx(5.0, abs=1e-6)
        assert c["outcome"] == "regression"
    for pair in v["pairs"]:  # every rate point 5% more bits, same quality
        for m in pair["metrics"].values():
            assert [p["bpp_change_pct"] for p in m["points"]] == pytest.approx([5.0] * 8)
            assert [p["metric_delta"] for p in m["points"]] == pytest.approx([0.0] * 8)
    md = (out / "s.md").read_text()
    assert "❌ lcbench regression check: failed (8 of 8 checks)" in md
    assert "| ❌ | jpeg | BD-rate psnr_rgb | +5.00% | [+5.00, +5.00] | ≤ +0.00% | regression |" in md

    # JUnit: valid XML, one testcase per codec x metric, the failing ones carry <failure>
    root = ET.parse(out / "j.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (f"lcbench.{codec}", f"{codec}: BD-rate {m}") for codec in CODECS for m in ("psnr_rgb", "ms_ssim_db")]
    assert suite.get("tests") == "8" and suite.get("failures") == "8" and suite.get("errors") == "0"
    for c in cases:
        (f,) = c.findall("failure")
        assert "+5.00%" in f.get("message") and f.get("type") == "regression"
        assert "above the allowed +0.00%" in f.text


def test_threshold_above_the_loss_passes(base, tmp_path):
    a, w = write(base, tmp_path / "a.csv"), write(scaled(base, 1.05), tmp_path / "w.csv")
    assert run_cli(a, w, "--max-bd-rate", "5.5") == 0
    assert run_cli(a, w, "--max-bd-rate", "4.5") == 1


def test_better_candidate_passes_and_says_so(base6, tmp_path, capsys):
    a, b = write(base6, tmp_path / "a.csv"), write(scaled(base6, 0.9), tmp_path / "b.csv")
    md = tmp_path / "s.md"
    assert run_cli(a, b, "--markdown", md) == 0
    out = capsys.readouterr().out
    assert "BD-rate psnr_rgb -10.00% [95% CI -10.00, -10.00]; average curves -10.00%: better" in out
    text = md.read_text()
    assert "The candidate is **better** on 8 of 8 BD-rate checks." in text


def test_missing_images_are_bad_input_and_named(base, tmp_path, capsys):
    a = write(base, tmp_path / "a.csv")
    m = write(base[~base["image"].isin(["kodim05", "kodim23"])], tmp_path / "m.csv")
    junit, js = tmp_path / "j.xml", tmp_path / "v.json"
    assert run_cli(a, m, "--junit", junit, "--json", js) == 2
    err = capsys.readouterr().err
    assert "is missing 2 image(s) the baseline has: kodim05, kodim23" in err
    v = json.loads(js.read_text())
    assert v["status"] == "error" and v["exit_code"] == 2 and "kodim05, kodim23" in v["error"]
    root = ET.parse(junit).getroot()
    (case,) = root.iter("testcase")
    (e,) = case.findall("error")
    assert "kodim05" in e.get("message") and root.get("errors") == "1"
    # the other way round names the baseline as the side lacking them
    assert run_cli(m, a) == 2
    assert "baseline" in capsys.readouterr().err


def test_missing_rate_point_of_one_image_is_bad_input(base, tmp_path, capsys):
    a = write(base, tmp_path / "a.csv")
    drop = (base["codec"] == "webp") & (base["image"] == "kodim15") & (base["quality"] == 40)
    assert run_cli(a, write(base[~drop], tmp_path / "m.csv")) == 2
    assert "lacks 1 job(s) other rate points have: kodim15@40" in capsys.readouterr().err


def test_different_datasets_are_bad_input(base, tmp_path, capsys):
    a = write(base, tmp_path / "a.csv")
    assert run_cli(a, write(base.assign(dataset="clic"), tmp_path / "c.csv")) == 2
    err = capsys.readouterr().err
    assert "different datasets: baseline" in err and "is on kodak, candidate" in err and "on clic" in err
    other = base.copy()
    other.loc[other["image"] == "kodim01", "width"] = 512
    assert run_cli(a, write(other, tmp_path / "d.csv")) == 2
    assert "image 'kodim01' is 768x512 in the baseline and 512x512" in capsys.readouterr().err


def test_too_few_rate_points_is_bad_input(base, tmp_path, capsys):
    a = write(base, tmp_path / "a.csv")
    few = base[base["quality"].isin([10, 20, 30, 0.15, 0.25, 0.35, 40, 50])]  # jpeg2000 keeps 3 points
    assert run_cli(a, write(few, tmp_path / "f.csv"), "--pair", "jpeg2000:jpeg2000") == 2
    assert "too few rate points: candidate 'jpeg2000'" in capsys.readouterr().err


def test_no_common_codec_and_unknown_pair_are_bad_input(base, tmp_path, capsys):
    a = write(base[base["codec"] == "jpeg"], tmp_path / "a.csv")
    b = write(base[base["codec"] == "webp"], tmp_path / "b.csv")
    assert run_cli(a, b) == 2
    assert "no codec is on both sides" in capsys.readouterr().err
    assert run_cli(a, b, "--pair", "jpeg:avif") == 2
    assert "has no codec 'avif'" in capsys.readouterr().err


def test_pair_compares_different_labels_against_bjontegaard(base6, tmp_path):
    """jpeg (baseline) vs webp (candidate): average-curve BD equals the independent package's value."""
    a = write(base6[base6["codec"] == "jpeg"], tmp_path / "a.csv")
    b = write(base6[base6["codec"] == "webp"], tmp_path / "b.csv")
    v = compare(a, b, ["psnr_rgb"], [("jpeg", "webp")], n_boot=500)
    (mc,) = v.pairs[0].metrics.values()

    def curve(codec):
        g = base6[base6.codec == codec].groupby("quality")[["bpp", "psnr_rgb"]].mean().sort_values("bpp")
        return g["bpp"].to_numpy(), g["psnr_rgb"].to_numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = bjontegaard.bd_rate(*curve("jpeg"), *curve("webp"), "pchip", require_matching_points=False)
    assert mc.bd_rate.value == pytest.approx(theirs, abs=1e-6)
    assert mc.bd_rate.value < -10  # WebP clearly beats JPEG here
    # the per-image values are each image's own BD-rate, and the estimate is their mean
    per = mc.per_image
    assert sorted(per.per_image) == IMAGES6
    assert per.mean == pytest.approx(np.mean([r.value for r in per.per_image.values()]))
    assert per.ci_low <= per.mean <= per.ci_high
    assert v.passed and v.checks[0].outcome == "better"


def test_significant_versus_point(base6, tmp_path):
    """One image 6% worse, five 1% better: mean +0.17%, but not significant across images."""
    factors = {"kodim01": 1.06, "kodim01b": 0.99, "kodim05": 0.99, "kodim15": 0.99, "kodim15b": 0.99, "kodim23": 0.99}
    a, n = write(base6, tmp_path / "a.csv"), write(scaled(base6, factors), tmp_path / "n.csv")
    sig = compare(a, n, ["psnr_rgb"], [("jpeg", "jpeg")], n_boot=1000)
    (c,) = sig.checks
    per = sig.pairs[0].metrics["psnr_rgb"].per_image
    assert {k: round(r.value, 9) for k, r in per.per_image.items()} == {
        "kodim01": 6.0, "kodim01b": -1.0, "kodim05": -1.0, "kodim15": -1.0, "kodim15b": -1.0, "kodim23": -1.0}
    assert c.value == pytest.approx(1 / 6)
    assert c.ci_low < 0 < c.ci_high
    assert c.status == "pass" and c.outcome == "worse (not significant)"
    pt = compare(a, n, ["psnr_rgb"], [("jpeg", "jpeg")], Thresholds(fail_on="point"), n_boot=1000)
    assert pt.checks[0].status == "fail" and pt.exit_code == 1
    assert run_cli(a, n, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb", "--fail-on", "point") == 1
    assert run_cli(a, n, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb") == 0


def test_few_images_get_students_t_interval(base, tmp_path, capsys):
    """Over 4 images the percentile interval was the range of the bootstrap means, which misses the
    mean 1 time in 8. Below 5 images the interval is Student's t: one image 6% worse and three 1%
    better (+0.75%) is not significant; a consistent loss still is; one image has no interval."""
    factors = {"kodim01": 1.06, "kodim05": 0.99, "kodim15": 0.99, "kodim23": 0.99}
    a, n = write(base, tmp_path / "a.csv"), write(scaled(base, factors), tmp_path / "n.csv")
    sig = compare(a, n, ["psnr_rgb"], [("jpeg", "jpeg")], n_boot=1000)
    (c,) = sig.checks
    values = np.array([6.0, -1.0, -1.0, -1.0])
    half = 3.182446305284263 * values.std(ddof=1) / 2
    assert c.value == pytest.approx(0.75)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.75 - half, 0.75 + half), abs=1e-6)
    assert c.status == "pass" and c.outcome == "worse (not significant)"
    consistent = write(scaled(base, {"kodim01": 1.06, "kodim05": 1.05, "kodim15": 1.04, "kodim23": 1.05}),
                       tmp_path / "c.csv")
    assert run_cli(a, consistent, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb") == 1
    one = write(base[base.image == "kodim01"], tmp_path / "one.csv")
    one_worse = write(scaled(base[base.image == "kodim01"], 1.02), tmp_path / "one_worse.csv")
    capsys.readouterr()
    assert run_cli(one, one_worse, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb") == 1
    assert "(n=1 image: no 95% interval, so the estimate decides)" in capsys.readouterr().out


def test_slowdown_threshold(base, tmp_path, capsys):
    slow = base.assign(enc_time_s=base["enc_time_s"] * 3.0)
    a, s = write(base, tmp_path / "a.csv"), write(slow, tmp_path / "s.csv")
    js = tmp_path / "v.json"
    assert run_cli(a, s, "--pair", "webp:webp", "--max-slowdown", "2", "--json", js) == 1
    v = json.loads(js.read_text())
    enc = next(c for c in v["checks"] if c["kind"] == "encode_time")
    dec = next(c for c in v["checks"] if c["kind"] == "decode_time")
    assert enc["status"] == "fail" and enc["value"] == pytest.approx(3.0)
    assert dec["status"] == "pass" and dec["value"] == pytest.approx(1.0)
    assert all(c["status"] == "pass" for c in v["checks"] if c["kind"] == "bd_rate")
    assert run_cli(a, s, "--pair", "webp:webp", "--max-slowdown", "3.5") == 0


def test_compressai_json_baseline(base, tmp_path):
    """A published average curve as baseline: BD on average curves, no per-image interval."""
    from lcbench.compressai_json import curve_from_summary, write_compressai_json
    from lcbench.results import validate
    from lcbench.summary import summarize

    summ = summarize(validate(base))
    js = write_compressai_json(tmp_path / "jpeg.json", curve_from_summary(summ, "jpeg"))
    w = write(scaled(base[base["codec"] == "jpeg"], 1.05), tmp_path / "w.csv")
    v = compare(js, w, ["psnr_rgb", "ms_ssim_db"])
    assert [c.status for c in v.checks] == ["fail", "fail"]
    assert v.checks[0].value == pytest.approx(5.0, abs=1e-6)
    assert math.isnan(v.checks[0].ci_low)
    assert v.pairs[0].metrics["psnr_rgb"].per_image is None
    assert [p.bpp_change_pct for p in v.pairs[0].metrics["psnr_rgb"].points] == pytest.approx([5.0] * 8)
    assert "no per-image interval" in v.pairs[0].notes[0]
    assert run_cli(js, write(base, tmp_path / "a.csv"), "--pair", "jpeg:jpeg") == 0


def test_bad_threshold_and_pair_syntax():
    with pytest.raises(CompareInputError, match="fail_on"):
        Thresholds(fail_on="sometimes")
    assert parse_pair("jpeg:subsampling=444:jpeg") == ("jpeg:subsampling=444", "jpeg")
    with pytest.raises(CompareInputError, match="OLD=>NEW"):
        parse_pair("a:b:c")


def test_failed_candidate_jobs_fail_the_check(base, tmp_path):
    broken = base.assign(error=base["error"].astype(object))
    row = (broken["codec"] == "avif") & (broken["image"] == "kodim15") & (broken["quality"] == 50)
    broken.loc[row, "error"] = "avif at quality=50 on kodim15.png: OSError: encoder crashed"
    broken.loc[row, ["bpp", "bytes", "psnr_rgb", "ms_ssim", "ms_ssim_db"]] = np.nan
    v = compare(write(base, tmp_path / "a.csv"), write(broken, tmp_path / "b.csv"), ["psnr_rgb"], [("avif", "avif")],
                n_boot=200)
    jobs = [c for c in v.checks if c.kind == "jobs"]
    assert len(jobs) == 1 and jobs[0].status == "fail" and "encoder crashed" in jobs[0].details
    assert v.exit_code == 1
    # the other images still give a BD-rate of exactly 0 (kodim15 has 7 points left, still a curve)
    assert v.pairs[0].metrics["psnr_rgb"].bd_rate.value == pytest.approx(0.0, abs=1e-9)
    assert v.pairs[0].metrics["psnr_rgb"].n_images == 3


def test_default_metrics_keep_only_those_both_sides_measured(base, tmp_path):
    no_ms = base.assign(ms_ssim=np.nan, ms_ssim_db=np.nan)  # e.g. images too small for MS-SSIM
    a, b = write(no_ms, tmp_path / "a.csv"), write(scaled(no_ms, 1.05), tmp_path / "b.csv")
    v = compare(a, b, pairs=[("jpeg", "jpeg")], n_boot=200)
    assert [c.name for c in v.checks] == ["jpeg: BD-rate psnr_rgb"]
    assert "default metric(s) ['ms_ssim_db'] left out" in v.notes[0]
    with pytest.raises(CompareInputError, match="no 'ms_ssim_db' values"):
        compare(a, b, ["ms_ssim_db"], [("jpeg", "jpeg")])


# ---------------------------------------------------------------- audit fixes

def test_different_rate_points_are_bad_input_both_ways(base, tmp_path, capsys):
    """Candidate without jpeg q90 on every image (each side complete in itself): BD over a shorter curve
    is a different test, so both directions are refused (exit 2), naming the codec and the point."""
    a = write(base, tmp_path / "a.csv")
    c = write(base[~((base["codec"] == "jpeg") & (base["quality"] == 90))], tmp_path / "c.csv")
    js = tmp_path / "v.json"
    assert run_cli(a, c, "--json", js) == 2
    err = capsys.readouterr().err
    assert "different rate points: candidate" in err and "('jpeg') lacks rate point(s) quality=90" in err
    assert json.loads(js.read_text())["status"] == "error"
    assert run_cli(c, a) == 2
    assert "baseline" in (err := capsys.readouterr().err) and "('jpeg') lacks rate point(s) quality=90" in err
    # the other codecs alone are still comparable
    assert run_cli(a, c, "--pair", "webp:webp") == 0


def test_image_without_per_image_bd_fails_and_says_n_of_n(base, tmp_path, capsys):
    """kodim05 at jpeg q90 loses 10 dB in the candidate: its curve is no longer monotonic, so it has
    no BD value. The other 3 images are identical (BD 0): the old code printed +0.00% "no change"."""
    cand = base.copy()
    row = (cand["codec"] == "jpeg") & (cand["image"] == "kodim05") & (cand["quality"] == 90)
    q75 = float(base.loc[(base["codec"] == "jpeg") & (base["image"] == "kodim05") & (base["quality"] == 75),
                         "psnr_rgb"].iloc[0])
    cand.loc[row, "psnr_rgb"] -= 10.0
    assert float(cand.loc[row, "psnr_rgb"].iloc[0]) < q75  # really not monotonic any more
    a, c = write(base, tmp_path / "a.csv"), write(cand, tmp_path / "c.csv")
    js = tmp_path / "v.json"
    assert run_cli(a, c, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb", "--json", js) == 1
    out = capsys.readouterr().out
    assert "FAIL  jpeg: BD-rate psnr_rgb +0.00%" in out
    assert "over only n=3/4 images: 1 image(s) have no per-image BD value (kodim05: test is not monotonic" in out
    (chk,) = json.loads(js.read_text())["checks"]
    assert chk["status"] == "fail" and chk["data"]["n_valid"] == 3 and chk["data"]["n_images"] == 4
    # the same run against itself: the baseline's own curve is fine, nothing missing, passes
    assert run_cli(a, a, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb") == 0


def test_metric_undefined_on_both_sides_is_left_out_and_named(base, tmp_path, capsys):
    """MS-SSIM undefined for one image on both sides (a small image) is not the candidate's fault: the
    check passes on the other 3 images and says so; undefined only on the candidate side fails."""
    small = base.copy()
    small.loc[small["image"] == "kodim23", ["ms_ssim", "ms_ssim_db"]] = np.nan
    a, w = write(small, tmp_path / "a.csv"), write(scaled(small, 1.05), tmp_path / "w.csv")
    v = compare(a, w, ["ms_ssim_db"], [("jpeg", "jpeg")], n_boot=200)
    (chk,) = v.checks
    assert chk.status == "fail" and chk.value == pytest.approx(5.0, abs=1e-6)  # 3 images, each exactly +5%
    assert v.pairs[0].metrics["ms_ssim_db"].per_image.n_images == 3
    assert "ms_ssim_db undefined or infinite on both sides for 1 of 4 image(s): kodim23; left out" in chk.summary
    assert compare(a, a, ["ms_ssim_db"], [("jpeg", "jpeg")], n_boot=200).passed
    v2 = compare(write(base, tmp_path / "b.csv"), a, ["ms_ssim_db"], [("jpeg", "jpeg")], n_boot=200)
    assert v2.checks[0].status == "fail" and "n=3/4" in v2.checks[0].summary and "kodim23" in v2.checks[0].summary


def test_passing_mean_names_the_worst_image(base6, tmp_path, capsys):
    """kodim01 needs 4x the bits (per-image BD exactly +300%), the other five are unchanged: the mean +50%
    is not significant over 6 images (lower bound 0), so it passes by default, but the line names kodim01."""
    a = write(base6, tmp_path / "a.csv")
    w = write(scaled(base6, {img: 4.0 if img == "kodim01" else 1.0 for img in IMAGES6}), tmp_path / "w.csv")
    assert run_cli(a, w, "--pair", "jpeg:jpeg", "--metric", "psnr_rgb") == 0
    out = capsys.readouterr().out
    assert "PASS  jpeg: BD-rate psnr_rgb +50.00% [95% CI +0.00," in out
    assert "worse (not significant); worst image kodim01 +300.00%" in out


@pytest.mark.parametrize("metric, words", [("codec", "'codec' is not a quality metric"),
                                           ("bpp", "'bpp' is not a quality metric"),
                                           ("psnr_rgb,nosuch", "'nosuch' is not a quality metric")])
def test_non_metric_columns_are_bad_input(base, tmp_path, capsys, metric, words):
    a = write(base, tmp_path / "a.csv")
    assert run_cli(a, a, "--metric", metric) == 2
    err = capsys.readouterr().err
    assert words in err and "valid: psnr_rgb, psnr_y, ssim, ms_ssim, ms_ssim_db" in err


@pytest.mark.parametrize("n", ["-5", "0", "1", "99"])
def test_non_positive_bootstrap_is_bad_input(base, tmp_path, capsys, n):
    a = write(base, tmp_path / "a.csv")
    assert run_cli(a, a, "--bootstrap", n) == 2
    assert f"--bootstrap must be at least 100 resamples" in capsys.readouterr().err


def test_pair_of_two_codecs_with_different_grids_is_compared(base, tmp_path, capsys):
    # jpeg q10..90 and avif q20..90 both vary "quality" but are different codecs: their grids need
    # not coincide (this was refused as "different rate points")
    a = write(base, tmp_path / "a.csv")
    assert run_cli(a, a, "--pair", "jpeg:avif", "--metric", "psnr_rgb") == 0  # avif is better than jpeg
    v = compare(a, a, ["psnr_rgb"], [("jpeg", "avif")], n_boot=200)
    assert any("rate points differ between 'jpeg' and 'avif'" in n for n in v.pairs[0].notes)


def test_lossless_points_on_both_sides_are_not_a_failure(base, tmp_path):
    # PSNR inf at the top rate points of one image on both sides (lossless there): the same outcome
    # on both sides, so the run compared with itself passes; inf on one side only still fails
    lossless = base.copy()
    top = (lossless["codec"] == "jpeg") & (lossless["image"] == "kodim05") & (lossless["quality"] >= 75)
    lossless.loc[top, "psnr_rgb"] = np.inf
    a = write(lossless, tmp_path / "a.csv")
    v = compare(a, a, ["psnr_rgb"], [("jpeg", "jpeg")], n_boot=200)
    assert v.passed and v.pairs[0].metrics["psnr_rgb"].per_image.n_images == 4
    few = lossless.copy()  # 5 of 8 points lossless: 3 finite points left, too few for a BD value
    few.loc[(few["codec"] == "jpeg") & (few["image"] == "kodim05") & (few["quality"] >= 40), "psnr_rgb"] = np.inf
    f = write(few, tmp_path / "f.csv")
    v = compare(f, f, ["psnr_rgb"], [("jpeg", "jpeg")], n_boot=200)
    assert v.passed and "kodim05; left out" in v.checks[0].summary
    v = compare(write(base, tmp_path / "b.csv"), a, ["psnr_rgb"], [("jpeg", "jpeg")], n_boot=200)
    assert v.checks[0].status == "fail" and "kodim05" in v.checks[0].summary


@pytest.mark.parametrize("cut", [40, 150, 250])
def test_truncated_results_file_is_bad_input(base, tmp_path, capsys, cut):
    # a half-written copy used to be read as data: PASS, a false FAIL or a traceback by where it was cut
    a = write(base, tmp_path / "a.csv")
    data = a.read_bytes()
    t = tmp_path / "t.csv"
    t.write_bytes(data[:len(data) - cut])
    assert run_cli(a, t) == 2
    assert "t.csv" in capsys.readouterr().err


def test_error_messages_with_newlines_are_still_complete_rows(base, tmp_path):
    df = base.copy()
    df["error"] = df["error"].astype(object)
    df.loc[df.index[0], "error"] = "line one\nline two"
    from lcbench.results import read_results

    assert len(read_results(write(df, tmp_path / "n.csv"))) == len(df)


def test_short_rows_and_empty_names_are_bad_input_each_on_its_own(base, tmp_path, capsys):
    a = write(base, tmp_path / "a.csv")
    text = a.read_text()
    short = tmp_path / "short.csv"
    short.write_text(text + "jpeg,10,kodim01\n")  # a complete line with too few fields
    assert run_cli(a, short) == 2 and "row" in capsys.readouterr().err
    df = base.copy()
    df["codec"] = df["codec"].astype(object)
    df.loc[df.index[3], "codec"] = ""
    assert run_cli(a, write(df, tmp_path / "noname.csv")) == 2
    assert "row 5 of the CSV has no 'codec'" in capsys.readouterr().err


def test_complete_file_without_final_newline_is_read_with_a_warning(base, tmp_path):
    from lcbench.results import read_results

    a = write(base, tmp_path / "a.csv")
    a.write_text(a.read_text().rstrip("\n"))
    with pytest.warns(UserWarning, match="no final newline"):
        assert len(read_results(a)) == len(base)


# ---------------------------------------------------------------- codecs, images and curves that must not vanish

def test_candidate_without_a_baseline_codec_is_bad_input(base, tmp_path, capsys):
    """A candidate with no rows for a codec of the baseline used to pass on the codecs left."""
    a = write(base, tmp_path / "a.csv")
    no_webp = write(base.loc[base["codec"] != "webp"], tmp_path / "no_webp.csv")
    out = tmp_path / "out"
    assert run_cli(a, no_webp, "--metric", "psnr_rgb", "--json", out / "v.json") == 2
    err = capsys.readouterr().err
    assert "has no rows for 1 codec(s) the baseline" in err and ": webp (candidate has" in err
    v = json.loads((out / "v.json").read_text())
    assert v["status"] == "error" and "webp" in v["error"]
    with pytest.raises(CompareInputError, match="webp"):
        compare(a, no_webp, ["psnr_rgb"], n_boot=200)
    # naming the pairs compares only those, on purpose
    assert run_cli(a, no_webp, "--metric", "psnr_rgb", "--pair", "jpeg:jpeg") == 0
    # a codec only the candidate has is not compared, and the verdict says so
    v = compare(no_webp, a, ["psnr_rgb"], n_boot=200)
    assert v.passed and [p.candidate_codec for p in v.pairs] == ["jpeg", "avif", "jpeg2000"]
    assert any("['webp']" not in n and "webp have no counterpart in the baseline" in n for n in v.notes)
    # with pairs, the others are not "without a counterpart": the baseline has them, no pair names them
    v = compare(a, a, ["psnr_rgb"], pairs=[("jpeg", "jpeg")], n_boot=200)
    assert any("are in no --pair" in n and "counterpart" not in n for n in v.notes)


def test_image_whose_baseline_jobs_all_failed_fails_the_check(base, tmp_path, capsys):
    """Baseline webp jobs on kodim05 all failed, candidate webp needs 1.5x the bits on kodim05: the
    image used to drop out of the per-image BD silently (PASS +0.00%, "no change")."""
    broken = base.assign(error=base["error"].astype(object))
    dead = (broken["codec"] == "webp") & (broken["image"] == "kodim05")
    broken.loc[dead, "error"] = "webp: OSError: encoder crashed"
    broken.loc[dead, ["bytes", "bpp", "psnr_rgb", "ms_ssim_db"]] = math.nan
    a = write(broken, tmp_path / "a.csv")
    cand = base.astype({"bytes": float})
    bird = (cand["codec"] == "webp") & (cand["image"] == "kodim05")
    cand.loc[bird, "bytes"] *= 1.5
    cand.loc[bird, "bpp"] *= 1.5
    w = write(cand, tmp_path / "w.csv")
    assert run_cli(a, w, "--metric", "psnr_rgb", "--fail-on", "point", "--json", tmp_path / "v.json") == 1
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("FAIL  webp: BD-rate psnr_rgb"))
    assert "over only n=3/4 images" in line and "kodim05: no successful 'baseline' job on this image" in line
    v = json.loads((tmp_path / "v.json").read_text())
    webp = next(c for c in v["checks"] if c["name"] == "webp: BD-rate psnr_rgb")
    assert webp["status"] == "fail" and (webp["data"]["n_valid"], webp["data"]["n_images"]) == (3, 4)
    per = v["pairs"][1]["metrics"]["psnr_rgb"]["per_image"]
    assert per["values"] == {"kodim01": 0.0, "kodim05": None, "kodim15": 0.0, "kodim23": 0.0}
    # the other codecs are unaffected
    assert next(c for c in v["checks"] if c["name"] == "jpeg: BD-rate psnr_rgb")["status"] == "pass"


def mixed(base: pd.DataFrame) -> pd.DataFrame:
    """One codec 'jpeg' with its quality grid and rate-matched (target_bpp) rows in one results file:
    the target_bpp rows are the fixture's jpeg2000 rows, so every expected number is the fixture's."""
    grid = base.loc[base["codec"] == "jpeg"]
    matched = base.loc[base["codec"] == "jpeg2000"].assign(codec="jpeg", rate_param="target_bpp",
                                                           matched_rate=lambda d: d.quality)
    assert set(matched["rate_param"]) == {"target_bpp"} and set(matched["quality"]) & set(grid["quality"]) == set()
    return pd.concat([grid, matched], ignore_index=True)


def test_grid_and_rate_matched_rows_of_one_codec_are_separate_curves(base, tmp_path, capsys):
    df = mixed(base)
    a = write(df, tmp_path / "a.csv")
    assert run_cli(a, a, "--metric", "psnr_rgb") == 0  # used to fail: two points with the same rate
    out = capsys.readouterr().out
    assert "PASS  jpeg: BD-rate psnr_rgb +0.00%" in out and "PASS  jpeg@target_bpp: BD-rate psnr_rgb +0.00%" in out
    # only the rate-matched curve 5% worse: +5.00% on that curve, none on the grid
    worse = df.astype({"bytes": float})
    matched = worse["rate_param"] == "target_bpp"
    worse.loc[matched, "bpp"] *= 1.05
    worse.loc[matched, "bytes"] *= 1.05
    v = compare(a, write(worse, tmp_path / "w.csv"), ["psnr_rgb"], n_boot=200)
    by_name = {c.name: c for c in v.checks}
    assert by_name["jpeg: BD-rate psnr_rgb"].value == pytest.approx(0.0, abs=1e-9)
    assert by_name["jpeg@target_bpp: BD-rate psnr_rgb"].value == pytest.approx(5.0, abs=1e-6)
    assert by_name["jpeg@target_bpp: BD-rate psnr_rgb"].status == "fail" and v.exit_code == 1
    # each curve's per-point deltas are its own rate points
    pts = {p.candidate_codec: {(d.rate_param, d.quality) for d in p.metrics["psnr_rgb"].points} for p in v.pairs}
    assert pts["jpeg"] == {("quality", q) for q in set(base.loc[base["codec"] == "jpeg", "quality"])}
    assert pts["jpeg@target_bpp"] == {("target_bpp", q) for q in set(base.loc[base["codec"] == "jpeg2000", "quality"])}


def test_candidate_lacking_one_kind_of_rows_is_bad_input(base, tmp_path, capsys):
    df = mixed(base)
    a = write(df, tmp_path / "a.csv")
    grid_only = write(df.loc[df["rate_param"] == "quality"], tmp_path / "g.csv")
    assert run_cli(a, grid_only, "--metric", "psnr_rgb") == 2
    assert ": jpeg@target_bpp (candidate has ['jpeg'])" in capsys.readouterr().err
    # a candidate with only the rate-matched rows (labelled plain 'jpeg', one kind) pairs with the
    # baseline's jpeg@target_bpp curve, and the grid is what it lacks
    matched_only = write(df.loc[df["rate_param"] == "target_bpp"], tmp_path / "m.csv")
    assert run_cli(a, matched_only, "--metric", "psnr_rgb") == 2
    assert ": jpeg (candidate has ['jpeg'])" in capsys.readouterr().err
    v = compare(a, matched_only, ["psnr_rgb"], pairs=[("jpeg@target_bpp", "jpeg")], n_boot=200)
    assert v.passed and v.checks[0].value == 0.0


def test_legacy_jpeg2000_grid_rows_are_read_as_nominal_bpp(tmp_path, capsys):
    """Results written before jpeg2000's grid was renamed call its grid rows target_bpp (the
    fixture is such a file). Against a new run with the grid and --target-bpp rows, the old grid was
    paired with the new rate-matched curve (a false FAIL) and the time check found no timings."""
    old = pd.read_csv(DATA)
    assert set(old.loc[old.codec == "jpeg2000", "rate_param"]) == {"target_bpp"} and "matched_rate" not in old
    new_grid = old.assign(rate_param=old.rate_param.where(old.codec != "jpeg2000", "nominal_bpp"))
    matched = new_grid[new_grid.codec == "jpeg2000"].assign(rate_param="target_bpp", matched_rate=lambda d: d.quality,
                                                            bytes=lambda d: d.bytes * 1.1, bpp=lambda d: d.bpp * 1.1)
    cand = pd.concat([new_grid, matched], ignore_index=True)
    a, b = write(old, tmp_path / "old.csv"), write(cand, tmp_path / "new.csv")
    assert run_cli(a, b, "--metric", "psnr_rgb", "--max-slowdown", "100", "--json", tmp_path / "v.json") == 0
    out = capsys.readouterr().out
    assert "PASS  jpeg2000: BD-rate psnr_rgb +0.00%" in out
    checks = json.loads((tmp_path / "v.json").read_text())["checks"]
    assert not [c for c in checks if c["status"] != "pass"]
    from lcbench.results import read_results

    assert set(read_results(a).query("codec == 'jpeg2000'").rate_param) == {"nominal_bpp"}


def test_notes_are_printed_on_the_terminal_too(base, tmp_path, capsys):
    """What was not compared (a codec only the candidate has) was said only in --markdown/--json."""
    a = write(base[base.codec != "avif"], tmp_path / "a.csv")
    b = write(base, tmp_path / "b.csv")
    assert run_cli(a, b, "--metric", "psnr_rgb") == 0
    out = capsys.readouterr().out
    assert "note: candidate codec(s)" in out and "avif" in out.split("note:", 1)[1]


def test_one_codec_with_two_rate_parameters_is_bad_input(base, tmp_path, capsys):
    """A baseline results.csv without a rate_param column is read as quality; against a learned
    codec's candidate (model ids) it passed with a note, BD over the overlap."""
    old = base[base.codec == "jpeg"].drop(columns=["rate_param"])
    new = base[base.codec == "jpeg"].assign(rate_param="model")
    a, b = write(old, tmp_path / "a.csv"), write(new, tmp_path / "b.csv")
    assert run_cli(a, b, "--metric", "psnr_rgb") == 2
    err = capsys.readouterr().err
    assert "different rate points" in err and "varies quality" in err and "varies model" in err


def test_markdown_details_say_how_many_images_the_average_curves_hold(base, tmp_path):
    """A failed candidate job leaves its image out of the average curves: the folded section said
    '4 images' above curves over 3."""
    cand = base.copy()
    cand["error"] = cand["error"].astype(object)
    bad = (cand["codec"] == "webp") & (cand["image"] == "kodim05") & (cand["quality"] == 40)
    cand.loc[bad, ["bytes", "bpp", "psnr_rgb"]] = np.nan
    cand.loc[bad, "error"] = "webp: encoder crashed"
    a, c = write(base, tmp_path / "a.csv"), write(cand, tmp_path / "c.csv")
    md = tmp_path / "s.md"
    assert run_cli(a, c, "--pair", "webp:webp", "--metric", "psnr_rgb", "--markdown", md) == 1
    text = md.read_text()
    assert "webp: per-rate-point deltas and timing (4 images)" in text
    assert "**psnr_rgb** (average curves over 3 of 4 images): BD-rate on average curves" in text


@pytest.mark.parametrize("args, words", [(["--max-slowdown", "-1"], "--max-slowdown must be a positive ratio"),
                                         (["--max-bd-rate", "nan"], "--max-bd-rate must be a finite percentage")])
def test_bad_thresholds_name_the_option(base, tmp_path, capsys, args, words):
    a = write(base, tmp_path / "a.csv")
    assert run_cli(a, a, *args) == 2
    assert words in capsys.readouterr().err
