"""Image resizing for rescaling pipelines: Pillow's convolution resampler on float32 planes.

Why Pillow and not OpenCV: Pillow's BICUBIC is the Keys kernel with a = -0.5 (the one
MATLAB's ``imresize`` uses) and, when shrinking, widens the kernel by the scale factor
(antialiasing), as ``imresize`` does. OpenCV's INTER_CUBIC uses a = -0.75 and does not
antialias when shrinking, so its x2/x4 downscales alias.

Why float planes: on 8-bit images Pillow rounds to uint8 between its horizontal and
vertical passes; resizing each channel as a mode "F" image keeps full precision and
rounds once, as MATLAB does.

Known differences from MATLAB ``imresize`` (what the super-resolution papers use): at the
image border Pillow drops the taps that fall outside and renormalises the remaining
weights, while MATLAB mirrors the image (symmetric padding). Interior pixels agree to
within rounding; border pixels differ, which the papers' S-pixel border crop mostly hides.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

KERNELS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def resize_float(image: np.ndarray, width: int, height: int, kernel: str = "bicubic") -> np.ndarray:
    """HxWxC (any real dtype, 0..255 scale) -> height x width x C float32, no rounding."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown resampling kernel {kernel!r} (known: {', '.join(KERNELS)})")
    if image.ndim != 3:
        raise ValueError(f"resize: expected an HxWxC image, got shape {image.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"resize: target size {width}x{height} is empty")
    planes = []
    for c in range(image.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
        planes.append(np.asarray(plane.resize((width, height), KERNELS[kernel]), dtype=np.float32))
    return np.stack(planes, axis=2)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round to nearest (numpy rint) and clip to 0..255."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def resize_uint8(image: np.ndarray, width: int, height: int, kernel: str = "bicubic") -> np.ndarray:
    """HxWx3 uint8 -> height x width x 3 uint8 (one rounding at the end)."""
    return to_uint8(resize_float(image, width, height, kernel))


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Replicate the last row/column so both sides are multiples of ``multiple``."""
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
