"""Rate grids from the command line."""
import re

import pytest

from lcbench.rates import parse_rate_list, parse_rate_overrides


def test_lists_and_inclusive_ranges():
    assert parse_rate_list("5:95:5") == tuple(float(q) for q in range(5, 100, 5))
    assert parse_rate_list("0.1:0.5:0.1") == (0.1, 0.2, 0.3, 0.4, 0.5)  # decimal steps, no float drift
    assert parse_rate_list("47:12:-5") == (47.0, 42.0, 37.0, 32.0, 27.0, 22.0, 17.0, 12.0)
    assert parse_rate_list("1,5:15:5,5") == (1.0, 5.0, 10.0, 15.0)


@pytest.mark.parametrize("bad", ["", "5:95", "a,b", "95:5:5", "1:2:0"])
def test_bad_grids_are_clear_errors(bad):
    with pytest.raises(ValueError):
        parse_rate_list(bad)


def test_per_codec_overrides():
    every, per = parse_rate_overrides(["10,20", "jpeg:subsampling=444=30", "webp=1:3:1"])
    assert every == (10.0, 20.0)
    assert per == {"jpeg:subsampling=444": (30.0,), "webp": (1.0, 2.0, 3.0)}


# -- rate values a codec would not code as given: rejected when the run is planned ----------------

@pytest.mark.parametrize("spec, rate, message", [
    ("jpeg", 500, "jpeg: quality 500 is outside the codec's range 1..100"),  # libjpeg would clamp to 100
    ("jpeg", 0, "outside the codec's range"),
    ("jpeg", 50.5, "whole numbers only"),                                   # Pillow would round to 50
    ("webp", 101, "outside"),
    ("png", 10, "png: level 10 is outside"),
    ("jpeg", float("nan"), "not a finite number"),
    ("importance_map", 2.5, "is not a model id"),
    ("importance_map", 9, "is not a model id"),
    ("bicubic-x2+jpeg", 101, "bicubic-x2+jpeg: jpeg: quality 101"),     # a pipeline applies its codec's rule
])
def test_rates_a_codec_would_clamp_or_round_are_rejected(spec, rate, message):
    from lcbench.registry import create_codec

    with pytest.raises(ValueError, match=re.escape(message)):
        create_codec(spec).check_rate(float(rate))


@pytest.mark.parametrize("spec, rate", [("jpeg", 1), ("jpeg", 100), ("jpegxl", 100), ("jpegxl", 92.5),
                                        ("jpeg2000", 12.0), ("png", 0), ("importance_map", 2)])
def test_rates_the_codec_takes_as_given_pass(spec, rate):
    from lcbench.registry import create_codec

    create_codec(spec).check_rate(float(rate))


def test_a_bad_grid_fails_before_any_job_runs(image_folder, tmp_path):
    from lcbench.runner import RunOptions, execute

    with pytest.raises(ValueError, match="jpeg: quality 500"):
        execute(RunOptions(codecs=["webp", "jpeg"], dataset=str(image_folder), out=tmp_path / "run",
                           codec_rates={"jpeg": (50.0, 500.0)}, progress=False))
    assert not (tmp_path / "run").exists()  # nothing written, not even run.json


@pytest.mark.parametrize("target", [-1.0, 0.0, float("inf")])
def test_bad_target_bpp_fails_before_any_job_runs(image_folder, tmp_path, target):
    from lcbench.runner import RunOptions, execute

    with pytest.raises(ValueError, match="--target-bpp"):
        execute(RunOptions(codecs=["jpeg"], dataset=str(image_folder), out=tmp_path / "run",
                           target_bpp=(0.5, target), progress=False))
    assert not (tmp_path / "run").exists()
