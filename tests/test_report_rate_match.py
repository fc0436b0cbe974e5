"""Rate matching against brute force over every quality, with real codecs and Kodak images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcbench.codec import CodecError
from lcbench.rate_match import is_integer_rate, match_rate, match_rate_detailed
from lcbench.registry import create_codec

KODAK = Path("/work/shared/datasets/kodak")
pytestmark = pytest.mark.skipif(not KODAK.is_dir(), reason="Kodak images not at /work/shared/datasets/kodak")


def kodak(image_id: str) -> np.ndarray:
    return np.asarray(Image.open(KODAK / f"{image_id}.png").convert("RGB"))


def bpp_of(data: bytes, img: np.ndarray) -> float:
    return 8 * len(data) / (img.shape[0] * img.shape[1])


@pytest.mark.parametrize("image_id", [f"kodim{i:02d}" for i in range(1, 25)])
def test_jpeg_within_one_quality_step_of_half_bpp(image_id):
    img = kodak(image_id)
    jpeg = create_codec("jpeg")
    q, data = match_rate(jpeg, img, 0.5)
    assert q == int(q) and 1 <= q <= 100
    assert data == jpeg.encode(img, q)  # the returned bitstream is the one for that quality
    got = bpp_of(data, img)
    below = bpp_of(jpeg.encode(img, q - 1), img) if q > 1 else 0.0
    above = bpp_of(jpeg.encode(img, q + 1), img) if q < 100 else np.inf
    assert below <= 0.5 <= above, (q, below, got, above)  # one step either side brackets the target
    if image_id not in ("kodim01", "kodim15", "kodim23"):
        return
    # Brute force over every quality: no quality lands closer.
    all_bpp = {k: bpp_of(jpeg.encode(img, k), img) for k in range(1, 101)}
    assert abs(got - 0.5) == pytest.approx(min(abs(b - 0.5) for b in all_bpp.values()))


def test_webp_matches_brute_force_on_a_crop():
    img = np.ascontiguousarray(kodak("kodim08")[:192, :256])
    webp = create_codec("webp")
    for target in (0.3, 1.0, 2.0):
        m = match_rate_detailed(webp, img, target)
        all_bpp = {k: bpp_of(webp.encode(img, k), img) for k in range(0, 101)}
        best = min(abs(b - target) for b in all_bpp.values())
        assert abs(m.bpp - target) == pytest.approx(best), (target, m.rate, m.bpp)
        assert len(m.tried) <= 10  # bisection, not a scan


def test_target_outside_range_returns_nearest_end():
    img = np.ascontiguousarray(kodak("kodim03")[:128, :128])
    jpeg = create_codec("jpeg")
    q, data = match_rate(jpeg, img, 0.001)
    assert q == 1.0
    q, data = match_rate(jpeg, img, 50.0)
    assert q == 100.0 and bpp_of(data, img) < 50


class DescendingJPEG(type(create_codec("jpeg"))):
    """Real JPEG behind a QP-like parameter (higher = fewer bits), to test the search direction."""

    rate_param = "qp"
    rate_range = (0.0, 99.0)
    rate_increases_bits = False

    def encode(self, image, rate):
        return super().encode(image, 100 - rate)


def test_qp_like_parameter_searches_downwards():
    img = kodak("kodim05")
    qp, data = match_rate(DescendingJPEG(), img, 0.5)
    q, ref = match_rate(create_codec("jpeg"), img, 0.5)
    assert qp == 100 - q and data == ref


def test_continuous_parameter_jpeg2000():
    img = kodak("kodim05")
    j2k = create_codec("jpeg2000")
    assert not is_integer_rate(j2k) and is_integer_rate(create_codec("jpeg"))
    m = match_rate_detailed(j2k, img, 0.4)
    assert abs(m.bpp - 0.4) < 0.01  # OpenJPEG rate control moves in small discrete steps
    assert m.bitstream == j2k.encode(img, m.rate)


def test_jpeg2000_low_targets_are_matched_closely():
    """The search stopped at a parameter width of 0.001 x the whole range (0.008 bpp), 16-40% of a
    0.02-0.05 bpp target: kodim07 at 0.02 bpp landed 6.7% off (no note, under the 10% mark)."""
    img = kodak("kodim07")
    j2k = create_codec("jpeg2000")
    for target in (0.02, 0.05):
        m = match_rate_detailed(j2k, img, target)
        assert abs(m.bpp / target - 1) < 0.01, (target, m.bpp)
        assert m.bitstream == j2k.encode(img, m.rate)


def test_bad_inputs_raise_clear_errors():
    img = kodak("kodim01")
    with pytest.raises(ValueError, match="positive"):
        match_rate(create_codec("jpeg"), img, -1.0)
    class NoRange(DescendingJPEG):
        rate_range = None

    with pytest.raises(ValueError, match="rate_range"):
        match_rate(NoRange(), img, 0.5)
    with pytest.raises(CodecError, match="uint8"):
        match_rate(create_codec("jpeg"), img.astype(np.float32), 0.5)


class SizesByQuality:
    """A codec whose bitstream for quality q is SIZES[q] bytes (hand-made, to test the search)."""

    name = "sizes"
    rate_param = "quality"
    rate_increases_bits = True

    def __init__(self, sizes: dict[int, int], rate_range: tuple[int, int]):
        self.sizes, self.rate_range = sizes, rate_range

    def encode(self, image, rate):
        return bytes(self.sizes[int(rate)])


def test_steps_inside_the_low_end_are_tried():
    """cjxl writes more bits at q 5 than at q 6: a target that q 6 hits was reported as 'not
    reached' at q 5, because a target below bpp(lowest quality) returned after one encode."""
    img = np.zeros((8, 8, 3), np.uint8)  # 64 px: bpp = bytes / 8
    sizes = {q: 20 + 2 * q for q in range(5, 100)}
    sizes[5], sizes[6] = 40, 25  # q 5 larger than q 6 and q 7 (32 bytes)
    m = match_rate_detailed(SizesByQuality(sizes, (5, 99)), img, 25 / 8)
    assert (m.rate, m.bpp) == (6.0, 25 / 8)
    # and at the top end: q 99 smaller than q 98
    sizes = {q: 2 * q for q in range(1, 100)}
    sizes[99] = 150
    m = match_rate_detailed(SizesByQuality(sizes, (1, 99)), img, 500 / 8)
    assert (m.rate, m.bpp) == (98.0, 196 / 8)


def test_jpeg2000_targets_above_8_bpp_are_searched():
    """The search stopped at 8 bpp though the codec takes up to 24: a 10 bpp target on a noisy
    image was 'not reached' (-20%) while nominal 10 gives 10.0."""
    img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    m = match_rate_detailed(create_codec("jpeg2000"), img, 10.0)
    assert abs(m.bpp / 10.0 - 1) < 0.01
