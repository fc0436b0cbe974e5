"""Reading source images into the one form every codec and metric sees: HxWx3 uint8 RGB.

Policy, applied the same way for every codec:
- stored pixels only: EXIF orientation is ignored (benchmarks compare stored pixels);
- greyscale (L, I;16 ...) is replicated to three identical channels;
- palette (P) is expanded to RGB;
- alpha (RGBA, LA, PA) is dropped: the colour channels are used as stored, not composited,
  because no codec here is asked to code alpha and compositing would invent pixels;
- 16-bit images are reduced to 8 bits by rounding (v * 255 / 65535), so every codec and
  metric sees the same 8-bit original; the reduction is recorded in the image's notes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp")


class ImageReadError(RuntimeError):
    """A source image could not be read; the message names the file."""


@dataclass
class SourceImage:
    pixels: np.ndarray  # HxWx3 uint8
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _to_rgb8(im: Image.Image, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        arr = np.asarray(im).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        notes.append(f"{mode} greyscale reduced to 8 bits (round(v*255/{peak:g})) and replicated to RGB")
        grey = np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped (colour channels used as stored)")
    if mode in ("L", "LA", "1"):
        notes.append("greyscale replicated to RGB")
    if mode != "RGB":
        im = im.convert("RGBA" if mode in ("P", "PA") else mode).convert("RGB")
    return np.ascontiguousarray(np.asarray(im))


def _is_16bit_colour(im: Image.Image, path: Path) -> bool:
    """Pillow reads 16-bit RGB PNG/TIFF as 8-bit RGB by dropping the low byte; detect those."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "PNG":
        with open(path, "rb") as f:
            header = f.read(25)
        return len(header) == 25 and header[24] == 16  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return (bits[0] if isinstance(bits, tuple) else bits) == 16
    return False


def _read_16bit_colour(path: Path, notes: list[str]) -> np.ndarray:
    import cv2  # reads 16-bit colour losslessly

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise ImageReadError(f"cannot read 16-bit image {path}")
    if arr.shape[2] == 4:
        notes.append("alpha channel dropped (colour channels used as stored)")
    notes.append("16-bit RGB reduced to 8 bits (round(v*255/65535))")
    rgb = arr[:, :, 2::-1].astype(np.float64)  # BGR(A) -> RGB
    return np.clip(np.rint(rgb * 255.0 / 65535.0), 0, 255).astype(np.uint8)


def load_image(path: str | Path) -> SourceImage:
    """Read ``path`` as HxWx3 uint8 RGB under the policy above; ImageReadError names the file."""
    path = Path(path)
    notes: list[str] = []
    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode: truncated files fail here, not later
            if _is_16bit_colour(im, path):
                pixels = _read_16bit_colour(path, notes)
            else:
                pixels = _to_rgb8(im, notes)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"image {path} is empty")
    return SourceImage(np.ascontiguousarray(pixels), notes)


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-256 of the raw pixel bytes: identifies an image whatever encoder wrote the file."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
