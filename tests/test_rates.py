"""Rate grids from the command line."""
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
