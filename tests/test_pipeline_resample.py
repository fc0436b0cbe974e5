"""Pillow-float resampling (rescaling steps) against an independent MATLAB-imresize port."""
from __future__ import annotations

import numpy as np
import pytest

from lcbench.resample import pad_to_multiple, resize_float, resize_uint8
from support import photo


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a ** 3 - 2.5 * a ** 2 + 1) * (a <= 1)
            + (-0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _matlab_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize 'contributions' (bicubic, antialiasing), symmetric border: 0-based indices."""
    width = 4.0
    if scale < 1:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    w = kernel(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    idx = aux[np.mod(idx.astype(int) - 1, 2 * in_len)]
    return idx, w


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    out = img.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        idx, w = _matlab_weights(n, int(np.ceil(n * scale)), scale)
        moved = np.moveaxis(out, axis, 0)
        res = np.einsum("op,op...->o...", w, moved[idx])
        out = np.moveaxis(res, 0, axis)
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_down_matches_matlab_in_the_interior(scale: int) -> None:
    img = photo("astronaut", (120, 96))
    h, w = img.shape[:2]
    ours = resize_float(img, w // scale, h // scale, "bicubic")
    ref = matlab_imresize(img, 1 / scale)
    assert ours.shape == ref.shape
    b = 3  # kernel reach on the small image: border pixels use mirrored taps in MATLAB
    interior = np.abs(ours[b:-b, b:-b] - ref[b:-b, b:-b]).max()
    assert interior < 1e-3
    # at the border Pillow renormalises instead of mirroring: a real, documented difference
    assert np.abs(ours - ref).max() > 0.01


def test_bicubic_up_matches_matlab_in_the_interior() -> None:
    img = photo("coffee", (40, 50)).astype(np.float64)
    ours = resize_float(img, 100, 80, "bicubic")
    ref = matlab_imresize(img, 2.0)
    assert np.abs(ours[4:-4, 4:-4] - ref[4:-4, 4:-4]).max() < 1e-3


def test_resize_rounds_once_and_keeps_grey_grey() -> None:
    grey = np.repeat(photo("astronaut", (64, 62))[:, :, :1], 3, axis=2)
    out = resize_uint8(grey, 31, 32, "lanczos")
    assert out.dtype == np.uint8 and out.shape == (32, 31, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    f = resize_float(grey, 31, 32, "lanczos")
    assert np.array_equal(out, np.clip(np.rint(f), 0, 255).astype(np.uint8))


def test_pad_to_multiple_replicates_edges() -> None:
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    p = pad_to_multiple(img, 4)
    assert p.shape == (8, 8, 3)
    assert np.array_equal(p[:5, :7], img)
    assert np.array_equal(p[7, :7], img[4]) and np.array_equal(p[:5, 7], img[:, 6])
    assert pad_to_multiple(img, 1) is img


def test_unknown_kernel_is_named() -> None:
    with pytest.raises(ValueError, match="unknown resampling kernel 'nearest'"):
        resize_float(np.zeros((4, 4, 3)), 2, 2, "nearest")
