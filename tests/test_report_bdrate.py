"""BD-rate / BD-metric against hand-computed values and the independent ``bjontegaard`` package."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
import pytest

from lcbench.bdrate import (BDResult, bd_metric, bd_per_image, bd_rate, bd_table, bootstrap_mean_ci,
                            complete_images)
from lcbench.results import load_results

DATA = Path(__file__).parent / "data" / "kodak4_results.csv"
ANCHOR_R = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
ANCHOR_Q = np.array([28.0, 30.5, 32.2, 33.4, 35.1, 36.6])


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return load_results(DATA)


def reference(fn, ar, am, tr, tm, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its low-overlap warning; we compare numbers
        return fn(ar, am, tr, tm, method, require_matching_points=False)


def mean_curve(df: pd.DataFrame, codec: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Average curve computed here with plain pandas, independently of lcbench.summary."""
    g = df[df.codec == codec].groupby("quality")[["bpp", metric]].mean().sort_values("bpp")
    return g["bpp"].to_numpy(), g[metric].to_numpy()


@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("factor,expected", [(1.05, 5.0), (0.8, -20.0), (1.0, 0.0)])
def test_scaled_rates_give_exact_bd_rate(method, factor, expected):
    r = bd_rate(ANCHOR_R, ANCHOR_Q, ANCHOR_R * factor, ANCHOR_Q, method=method)
    assert r.ok and r.reason is None
    assert r.value == pytest.approx(expected, abs=1e-9)
    assert r.overlap == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_shifted_quality_gives_exact_bd_metric(method):
    r = bd_metric(ANCHOR_R, ANCHOR_Q, ANCHOR_R, ANCHOR_Q + 0.5, method=method)
    assert r.value == pytest.approx(0.5, abs=1e-9)
    # And the BD-rate of a better codec is negative.
    assert bd_rate(ANCHOR_R, ANCHOR_Q, ANCHOR_R, ANCHOR_Q + 0.5, method=method).value < 0


def test_input_order_does_not_matter():
    perm = np.array([3, 0, 5, 1, 4, 2])
    a = bd_rate(ANCHOR_R, ANCHOR_Q, ANCHOR_R * 1.1, ANCHOR_Q + 0.2)
    b = bd_rate(ANCHOR_R[perm], ANCHOR_Q[perm], (ANCHOR_R * 1.1)[::-1], (ANCHOR_Q + 0.2)[::-1])
    assert a.value == pytest.approx(b.value, abs=1e-12)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("metric", ["psnr_rgb", "psnr_y", "ms_ssim_db", "ssim"])
def test_average_curves_match_bjontegaard(results, method, metric):
    ar, am = mean_curve(results, "jpeg", metric)
    for codec in ("webp", "avif", "jpeg2000"):
        tr, tm = mean_curve(results, codec, metric)
        ours = bd_rate(ar, am, tr, tm, method)
        theirs = reference(bjontegaard.bd_rate, ar, am, tr, tm, method)
        assert ours.ok, ours.reason
        assert abs(ours.value - theirs) < 0.1, (codec, ours.value, theirs)
        assert abs(ours.value - theirs) < 1e-6  # same integrals, so in fact identical
        ours_m = bd_metric(ar, am, tr, tm, method)
        assert ours_m.value == pytest.approx(reference(bjontegaard.bd_psnr, ar, am, tr, tm, method), abs=1e-6)


def test_webp_beats_jpeg_on_psnr_rgb(results):
    """Sanity on real codecs: WebP (method 6) needs clearly fewer bits than baseline JPEG."""
    ar, am = mean_curve(results, "jpeg", "psnr_rgb")
    tr, tm = mean_curve(results, "webp", "psnr_rgb")
    assert -50 < bd_rate(ar, am, tr, tm).value < -20


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(anchor_rate=ANCHOR_R[:3], anchor_metric=ANCHOR_Q[:3]), "at least 4"),
    (dict(test_metric=np.array([28.0, 30.5, 30.0, 33.4, 35.1, 36.6])), "not monotonic"),
    (dict(test_rate=ANCHOR_R * 10, test_metric=ANCHOR_Q + 20), "do not overlap"),
    (dict(test_metric=np.array([28.0, np.nan, 32.2, 33.4, 35.1, 36.6])), "non-finite"),
    (dict(test_rate=np.array([0.25, 0.5, 0.5, 1.0, 1.5, 2.0])), "same rate"),
    (dict(test_rate=np.array([0.0, 0.5, 0.75, 1.0, 1.5, 2.0])), "rate <= 0"),
])
@pytest.mark.parametrize("fn", [bd_rate, bd_metric])
def test_unusable_curves_give_nan_with_reason(fn, kwargs, fragment):
    args = dict(anchor_rate=ANCHOR_R, anchor_metric=ANCHOR_Q, test_rate=ANCHOR_R * 1.1, test_metric=ANCHOR_Q)
    args.update(kwargs)
    if fn is bd_metric and fragment == "do not overlap":
        args.update(test_rate=ANCHOR_R * 100)  # BD-metric overlaps on rate, not quality
    r = fn(**args)
    assert isinstance(r, BDResult) and not r.ok
    assert math.isnan(r.value)
    assert fragment in r.reason


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="akima"):
        bd_rate(ANCHOR_R, ANCHOR_Q, ANCHOR_R, ANCHOR_Q, method="akima")


def test_per_image_matches_bjontegaard_image_by_image(results):
    p = bd_per_image(results, "jpeg", "webp", "psnr_rgb", kind="rate", method="pchip")
    assert p.ok and p.n_images == p.n_valid == 4
    expected = {}
    for image, g in results.groupby("image"):
        a = g[g.codec == "jpeg"].sort_values("bpp")
        t = g[g.codec == "webp"].sort_values("bpp")
        expected[image] = reference(bjontegaard.bd_rate, a.bpp, a.psnr_rgb, t.bpp, t.psnr_rgb, "pchip")
        assert p.per_image[image].value == pytest.approx(expected[image], abs=1e-6)
    assert p.mean == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    # Four images: Student's t interval (a bootstrap cannot leave their range, which misses the
    # mean 1 time in 8), computed here independently
    vals = np.array(list(expected.values()))
    half = 3.182446305284263 * vals.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (p.ci_low, p.ci_high) == pytest.approx((vals.mean() - half, vals.mean() + half), abs=1e-9)


def test_bootstrap_interval_matches_normal_theory():
    rng = np.random.default_rng(1)
    v = rng.normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_mean_ci(v, n_boot=4000, seed=3)
    half = 1.96 * v.std(ddof=1) / math.sqrt(v.size)
    assert lo == pytest.approx(v.mean() - half, abs=0.03)
    assert hi == pytest.approx(v.mean() + half, abs=0.03)
    assert bootstrap_mean_ci(v, seed=3) == bootstrap_mean_ci(v, seed=3)  # reproducible
    assert all(math.isnan(x) for x in bootstrap_mean_ci([1.0]))
    # below 5 values: Student's t (mean 2.5, s 1.29, t(0.975, 3) = 3.18)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert bootstrap_mean_ci([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-12)
    assert bootstrap_mean_ci([5.0, 5.0]) == (5.0, 5.0)


def test_small_sample_interval_has_student_t_width_and_coverage():
    """Over few images the plain percentile interval was the z interval with the biased standard
    deviation (37% narrower than Student's t at n = 5): noise became a 'significant' regression."""
    from scipy import stats

    rng = np.random.default_rng(7)
    v = rng.normal(0.0, 1.0, size=8)
    lo, hi = bootstrap_mean_ci(v, n_boot=40000, seed=1)
    half = stats.t.ppf(0.975, df=7) * v.std(ddof=1) / math.sqrt(8)
    assert lo == pytest.approx(v.mean() - half, abs=0.12 * half)
    assert hi == pytest.approx(v.mean() + half, abs=0.12 * half)
    # Coverage of the true mean over many normal samples of 6 is close to the nominal 95%
    # (the plain percentile interval covers about 87%).
    covered = 0
    for i in range(300):
        lo, hi = bootstrap_mean_ci(rng.normal(0.0, 1.0, size=6), n_boot=1000, seed=i)
        covered += lo <= 0.0 <= hi
    assert covered / 300 >= 0.91


def test_failed_job_excludes_image_from_average_curves(results):
    df = results.copy()
    bad = (df.codec == "webp") & (df.image == "kodim05") & (df.quality == 50)
    df.loc[bad, "error"] = "webp: encoding failed"
    df.loc[bad, "ok"] = False
    assert complete_images(df, ["jpeg", "webp"], "psnr_rgb") == ["kodim01", "kodim15", "kodim23"]
    table = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=200)
    row = table[table.codec == "webp"].iloc[0]
    assert row.n_images == 3
    keep = df[df.image != "kodim05"]
    ar, am = mean_curve(keep, "jpeg", "psnr_rgb")
    tr, tm = mean_curve(keep, "webp", "psnr_rgb")
    assert row.bd_rate == pytest.approx(reference(bjontegaard.bd_rate, ar, am, tr, tm, "pchip"), abs=1e-6)
    # Per image, kodim05's webp curve still has 7 points and is used.
    assert row.bd_rate_img_n == 4


def test_table_nan_reason_for_short_curves(results):
    df = results[~((results.codec == "avif") & (results.quality > 40))]
    table = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=100)
    row = table[table.codec == "avif"].iloc[0]
    assert math.isnan(row.bd_rate) and "at least 4" in row.bd_rate_reason
    assert math.isnan(row.bd_rate_img_mean) and "at least 4" in row.bd_rate_img_reason


def test_table_rejects_unknown_anchor(results):
    with pytest.raises(ValueError, match="anchor 'bpg'"):
        bd_table(results, "bpg")


def test_rate_point_missing_for_some_images_leaves_them_out_of_average_curves(results):
    """webp q90 exists only for kodim15 (a run stopped early): the average curves must not mix image sets
    across rate points. Only kodim15 has every point of both codecs; the reference is computed by hand on
    kodim15 alone, and the row says 3 images were left out and why."""
    df = results[~((results.codec == "webp") & (results.quality == 90) & (results.image != "kodim15"))]
    assert complete_images(df, ["jpeg", "webp"], "psnr_rgb") == ["kodim15"]
    table = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=100)
    row = table[table.codec == "webp"].iloc[0]
    one = df[df.image == "kodim15"]
    expected = reference(bjontegaard.bd_rate, *mean_curve(one, "jpeg", "psnr_rgb"),
                         *mean_curve(one, "webp", "psnr_rgb"), "pchip")
    mixed = reference(bjontegaard.bd_rate, *mean_curve(df, "jpeg", "psnr_rgb"), *mean_curve(df, "webp", "psnr_rgb"),
                      "pchip")
    assert abs(expected - mixed) > 5  # the mixed-set curve the old code used is really different
    assert row.bd_rate == pytest.approx(expected, abs=1e-6)
    assert row.n_images == 1 and row.n_images_left_out == 3
    assert "kodim01: no 'webp' job at quality=90" in row.left_out
    from lcbench.summary import bd_display_table, to_text

    text = to_text(bd_display_table(table, "rate"))
    assert "webp, PSNR-RGB (average curves): over 1 of 4 images; left out" in text
    # codecs with every point on every image are untouched
    assert table[table.codec == "avif"].iloc[0].n_images == 4
    assert table[table.codec == "avif"].iloc[0].n_images_left_out == 0


def grid_and_matched(raw: pd.DataFrame, factor: float = 1.02) -> pd.DataFrame:
    """jpeg2000 as `lcbench run -q ...` then `--target-bpp ...` into one run directory: grid rows
    (rate_param nominal_bpp, at the same numbers as the targets, every bitstream ``factor`` times
    larger) followed by the fixture's rate-matched (target_bpp) rows."""
    # the fixture's jpeg2000 rows as rate-matched rows: those carry matched_rate (without it they
    # read as grid rows of the old name, see test_legacy_jpeg2000_grid_rows_are_read_as_nominal_bpp)
    matched = raw.loc[raw.codec == "jpeg2000"].assign(rate_param="target_bpp", matched_rate=lambda d: d.quality)
    grid = matched.assign(rate_param="nominal_bpp", bpp=matched.bpp * factor, bytes=matched.bytes * factor)
    return pd.concat([raw.loc[raw.codec == "jpeg"], grid, matched], ignore_index=True)


def test_image_whose_jobs_all_failed_on_one_side_counts_without_a_value(results):
    """An image both codecs ran but where every job of one failed used to vanish from the per-image
    BD (n=3 of 3): it now counts, with no value and the reason."""
    df = results.copy()
    dead = (df.codec == "webp") & (df.image == "kodim05")
    df.loc[dead, "error"] = "webp: encoder crashed"
    df.loc[dead, "ok"] = False
    p = bd_per_image(df, "jpeg", "webp", "psnr_rgb", n_boot=200)
    assert (p.n_images, p.n_valid) == (4, 3)
    assert not p.per_image["kodim05"].ok
    assert p.per_image["kodim05"].reason == "no successful 'webp' job on this image"
    expected = []
    for image in ("kodim01", "kodim15", "kodim23"):
        g = results[results.image == image]
        a, t = g[g.codec == "jpeg"].sort_values("bpp"), g[g.codec == "webp"].sort_values("bpp")
        expected.append(reference(bjontegaard.bd_rate, a.bpp, a.psnr_rgb, t.bpp, t.psnr_rgb, "pchip"))
    assert p.mean == pytest.approx(np.mean(expected), abs=1e-6)
    row = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=200).set_index("codec").loc["webp"]
    assert (row.bd_rate_img_n, row.bd_rate_img_of) == (3, 4)


def test_grid_and_rate_matched_rows_of_one_codec_are_two_bd_curves():
    raw = pd.read_csv(DATA)
    df = validate_frame(grid_and_matched(raw))
    table = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=200).set_index("codec")
    assert list(table.index) == ["jpeg2000", "jpeg2000@target_bpp"]
    ar, am = mean_curve(raw, "jpeg", "psnr_rgb")
    tr, tm = mean_curve(raw, "jpeg2000", "psnr_rgb")
    expected = reference(bjontegaard.bd_rate, ar, am, tr, tm, "pchip")
    assert table.loc["jpeg2000@target_bpp", "bd_rate"] == pytest.approx(expected, abs=1e-6)
    assert table.loc["jpeg2000", "bd_rate"] == pytest.approx(100 * ((1 + expected / 100) * 1.02 - 1), abs=1e-6)
    assert (table["bd_rate_img_n"] == 4).all()
    # the grid against its own rate-matched curve: every bitstream 2% larger
    own = bd_table(df, "jpeg2000@target_bpp", metrics=["psnr_rgb"], n_boot=200).set_index("codec")
    assert own.loc["jpeg2000", "bd_rate"] == pytest.approx(2.0, abs=1e-9)
    assert own.loc["jpeg2000", "bd_rate_img_mean"] == pytest.approx(2.0, abs=1e-9)


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    from lcbench.results import validate

    return validate(df)


def test_grid_curve_comes_first_and_is_the_default_anchor_when_matched_rows_ran_first():
    """--target-bpp run first, then the grid, into one directory: jpeg2000@target_bpp was listed
    first and became the default anchor ("against jpeg2000@target_bpp")."""
    raw = pd.read_csv(DATA)
    mixed = grid_and_matched(raw)
    grid = mixed[(mixed.codec == "jpeg2000") & (mixed.rate_param == "nominal_bpp")]
    matched = mixed[(mixed.codec == "jpeg2000") & (mixed.rate_param == "target_bpp")]
    from lcbench.results import codecs_in_order, split_rate_curves

    df = split_rate_curves(validate_frame(pd.concat([matched, grid], ignore_index=True)))
    assert list(dict.fromkeys(df.codec)) == ["jpeg2000@target_bpp", "jpeg2000"]  # file order
    assert codecs_in_order(df) == ["jpeg2000", "jpeg2000@target_bpp"]  # report's default anchor: the first


def test_bd_table_says_how_each_metric_was_really_aggregated(results):
    """Under --aggregate mse a column without an MSE (a pipeline's psnr_y_sr, a plugin's metric) is
    still a mean over images, but bd.csv labelled it 'mse'."""
    df = results.assign(psnr_y_sr=results["psnr_y"] - 0.5)
    table = bd_table(df, "jpeg", metrics=["psnr_rgb", "psnr_y_sr", "ms_ssim_db", "ssim"], aggregate="mse", n_boot=100)
    labels = table.drop_duplicates("metric").set_index("metric")["aggregate"].to_dict()
    assert labels == {"psnr_rgb": "mse", "psnr_y_sr": "mean", "ms_ssim_db": "mse", "ssim": "mean"}
    # and the psnr_y_sr values are those of the mean curves
    mean = bd_table(df, "jpeg", metrics=["psnr_y_sr"], aggregate="mean", n_boot=100)
    mse = table[table.metric == "psnr_y_sr"]
    assert mse["bd_rate"].tolist() == pytest.approx(mean["bd_rate"].tolist())


def test_rate_matched_duplicate_points_say_the_targets_were_not_reached(results):
    """Two targets below what jpeg reaches land on q=1: the BD reason said only 'two points with the
    same rate', without the cause."""
    df = results[results.codec.isin(["jpeg", "webp"])].copy()
    df["rate_param"] = "target_bpp"
    low = (df.codec == "jpeg") & (df.quality == df[df.codec == "jpeg"].quality.min())
    dup = df[low].assign(quality=-1.0)  # a second target landing on the same bitstream
    df = pd.concat([df, dup], ignore_index=True)
    row = bd_table(df, "jpeg", metrics=["psnr_rgb"], n_boot=100, per_image=False).set_index("codec").loc["webp"]
    assert math.isnan(row["bd_rate"])
    assert "two points with the same rate" in row["bd_rate_reason"]
    assert "two --target-bpp targets the codec cannot reach landed on the same bitstream" in row["bd_rate_reason"]
