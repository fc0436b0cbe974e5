"""Each metric against an independent implementation on real images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as ref_ms_ssim
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lcbench.metrics import MS_SSIM_MIN_SIDE, Reference, compute_metrics
from lcbench.registry import create_codec

from support import photo


def _pair(img: np.ndarray, q: int) -> np.ndarray:
    jpeg = create_codec("jpeg")
    return jpeg.decode(jpeg.encode(img, q))


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.copy()).permute(2, 0, 1)[None].double()


def _exact_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-msssim's ms_ssim in float64 with a float64 Gaussian window.

    Its default window is normalised in float32 (the taps sum to 1 - 3e-8), which biases
    E[x^2] - mu^2 by ~1e-7 * mu^2: up to ~1e-5 of MS-SSIM on bright images. Passing an
    exactly normalised window leaves its algorithm as the independent reference.
    """
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    win = torch.from_numpy(g / g.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    return ref_ms_ssim(_torch(a), _torch(b), data_range=255, win=win).item()


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1)


def _ycbcr_y(x: np.ndarray) -> np.ndarray:  # written out independently of lcbench
    x = x.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


@pytest.mark.parametrize("size", [(512, 512), (301, 403), (200, 171), (161, 161)])
@pytest.mark.parametrize("quality", [5, 50, 95])
def test_metrics_match_references(size, quality):
    img = photo("astronaut", size)
    dec = _pair(img, quality)
    values, notes = compute_metrics(Reference.of(img), dec)
    assert values["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(img, dec, data_range=255), abs=1e-6)
    mse_y = np.mean((_ycbcr_y(img) - _ycbcr_y(dec)) ** 2)
    assert values["psnr_y"] == pytest.approx(10 * math.log10(255 ** 2 / mse_y), abs=1e-6)
    assert values["ssim"] == pytest.approx(_skimage_ssim(img, dec), abs=1e-5)
    if min(size) > MS_SSIM_MIN_SIDE:
        ref = _exact_ms_ssim(img, dec)
        assert values["ms_ssim"] == pytest.approx(ref, abs=1e-5)
        assert values["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - ref), abs=1e-3)
        assert notes == []


def test_kodak_metrics_match_references(kodak_dir):
    img = np.asarray(Image.open(kodak_dir / "kodim23.png"))
    for q in (10, 75):
        dec = _pair(img, q)
        values, _ = compute_metrics(Reference.of(img), dec)
        assert values["ms_ssim"] == pytest.approx(_exact_ms_ssim(img, dec), abs=1e-5)
        assert values["ssim"] == pytest.approx(_skimage_ssim(img, dec), abs=1e-5)
        assert values["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(img, dec, data_range=255), abs=1e-6)


@pytest.mark.parametrize("level", [250, 128, 3])
def test_flat_areas_keep_float32_precision(level):
    # A nearly flat image coded at very low quality: E[y^2] - mu_y^2 in float32 on raw (or
    # 128-centred) values lost ~4e-5 of SSIM here; lcbench filters the difference image instead.
    rng = np.random.default_rng(level)
    img = np.clip(level + rng.normal(0, 0.6, (200, 232, 3)), 0, 255).astype(np.uint8)
    for q in (2, 10):
        dec = _pair(img, q)
        values, _ = compute_metrics(Reference.of(img), dec)
        assert values["ssim"] == pytest.approx(_skimage_ssim(img, dec), abs=1e-6)
        assert values["ms_ssim"] == pytest.approx(_exact_ms_ssim(img, dec), abs=1e-6)


def test_hand_computed_psnr():
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # one error of 16 in 768 samples: MSE = 256/768
    values, _ = compute_metrics(Reference.of(a), b)
    assert values["mse_rgb"] == pytest.approx(256 / 768)
    assert values["psnr_rgb"] == pytest.approx(10 * math.log10(255 ** 2 * 768 / 256))
    # Y error = 65.481 * 16 / 255 at one of 256 pixels
    assert values["mse_y"] == pytest.approx((65.481 * 16 / 255) ** 2 / 256)


@pytest.mark.parametrize("name, size", [("coffee", (200, 200)), ("coffee", None), ("astronaut", (511, 383)),
                                        ("chelsea", None), ("astronaut", (288, 288)), ("astronaut", (256, 256)),
                                        ("coffee", (170, 180)), ("astronaut", (163, 419))])
def test_identical_images_give_infinite_psnr_and_exactly_unit_ssim(name, size):
    # Exactly 1, not within 1e-6: a lossless codec must get ms_ssim_db = inf, not a finite
    # ~94 dB that would then enter means and BD curves (the luminance term used to round).
    img = photo(name, size)
    values, _ = compute_metrics(Reference.of(img), img.copy())
    assert values["psnr_rgb"] == math.inf and values["psnr_y"] == math.inf
    assert values["ssim"] == 1.0 and values["ms_ssim"] == 1.0
    assert values["ms_ssim_db"] == math.inf


def test_small_image_gets_nan_ms_ssim_with_reason():
    img = photo("astronaut", (120, 300))
    values, notes = compute_metrics(Reference.of(img), _pair(img, 50))
    assert math.isnan(values["ms_ssim"]) and math.isnan(values["ms_ssim_db"])
    assert any("160" in n for n in notes)
    assert values["ssim"] == pytest.approx(_skimage_ssim(img, _pair(img, 50)), abs=1e-5)


def test_shape_mismatch_is_an_error():
    img = photo("astronaut", (200, 200))
    with pytest.raises(ValueError, match="decoded image"):
        compute_metrics(Reference.of(img), img[:100])


def test_one_reference_serves_many_decodes_and_non_contiguous_arrays():
    """A Reference reuses its work buffers across decoded images; views (flipped, strided) are
    read as their pixels, not their memory layout."""
    img = photo("coffee", (231, 305))  # odd sides: pooling pads at every scale
    src_view = np.flip(img, axis=1)    # negative strides
    ref = Reference.of(src_view)
    for q in (5, 40, 90):
        dec = _pair(np.ascontiguousarray(src_view), q)
        wide = np.zeros((dec.shape[0], dec.shape[1], 4), np.uint8)
        wide[..., :3] = dec
        dec_view = wide[..., :3]        # strided: not C-contiguous
        values, _ = compute_metrics(ref, dec_view)
        fresh, _ = compute_metrics(Reference.of(np.ascontiguousarray(src_view)), dec)
        assert values == fresh
        assert values["ms_ssim"] == pytest.approx(_exact_ms_ssim(np.ascontiguousarray(src_view), dec), abs=1e-5)


@pytest.mark.parametrize("size", [(11, 11), (11, 40), (12, 13), (13, 11)])
def test_images_just_above_the_window_size(size):
    """The streaming kernel's edge: as many rows as filter taps gives a single output row."""
    rng = np.random.default_rng(sum(size))
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    dec = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    values, notes = compute_metrics(Reference.of(img), dec)
    assert values["ssim"] == pytest.approx(_skimage_ssim(img, dec), abs=1e-6)
    assert values["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(img, dec, data_range=255), abs=1e-6)
    assert math.isnan(values["ms_ssim"]) and any("160" in n for n in notes)


@pytest.mark.parametrize("corner, side, delta", [((100, 200), 1, 5), ((100, 200), 3, 2), ((10, 10), 8, 2),
                                                  ((100, 100), 16, 1)])
def test_near_lossless_images_get_exact_values(corner, side, delta):
    """A few pixels off by a few levels: the float32 terms 1 - small round to a step of ~6e-8, so
    ms_ssim_db was ~0.1 dB off above 50 dB, and inf (lossless!) for one pixel off by 1. Such
    images are now measured in float64."""
    img = photo("astronaut", (256, 320))
    y, x = corner
    dec = img.astype(int)
    patch = dec[y:y + side, x:x + side, 0]
    dec[y:y + side, x:x + side, 0] = np.where(patch < 200, patch + delta, patch - delta)
    dec = dec.astype(np.uint8)
    values, _ = compute_metrics(Reference.of(img), dec)
    ref = _exact_ms_ssim(img, dec)
    assert values["ssim"] == pytest.approx(_skimage_ssim(img, dec), abs=1e-12)
    assert values["ms_ssim"] == pytest.approx(ref, abs=1e-12)
    assert values["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - ref), abs=1e-3)


def test_one_pixel_off_by_one_is_not_lossless():
    img = photo("astronaut", (256, 320))
    dec = img.copy()
    dec[0, 0, 0] = img[0, 0, 0] + 1 if img[0, 0, 0] < 255 else img[0, 0, 0] - 1
    values, _ = compute_metrics(Reference.of(img), dec)
    assert values["ssim"] < 1.0 and values["ms_ssim"] < 1.0
    assert math.isfinite(values["ms_ssim_db"]) and values["ms_ssim_db"] > 100
