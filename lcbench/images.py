"""Reading source images into the one form every codec and metric sees: HxWx3 uint8 RGB.

Policy, applied the same way for every codec:
- stored pixels only: EXIF orientation is ignored (benchmarks compare stored pixels), also for
  TIFF, where Pillow 13 applies the Orientation tag while loading (undone here), and noted;
- greyscale (L, I;16 ...) is replicated to three identical channels;
- palette (P) is expanded to RGB;
- alpha (RGBA, LA, PA) is dropped: the colour channels are used as stored, not composited,
  because no codec here is asked to code alpha and compositing would invent pixels;
- 16-bit images are reduced to 8 bits by rounding (v * 255 / 65535), so every codec and
  metric sees the same 8-bit original; the reduction is recorded in the image's notes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Bump when load_image returns other pixels for the same file (2: planar 16-bit TIFFs read
# unscrambled, TIFF Orientation no longer applied). Anything that remembers a file's pixels by its
# path and stat (the result cache's pixel hashes, run-directory job keys) must include it, or the
# old pixels' results are served for the file.
READER_REVISION = 2

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp", ".gif", ".tga")


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


def _pnm_maxval(path: Path) -> int | None:
    """The maxval field of a binary or ASCII PNM header (P2/P3/P5/P6), None if unparsable."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)  # comments may make the header long
    tokens: list[bytes] = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 4:
            break
    try:
        return int(tokens[3]) if tokens[0] in (b"P2", b"P3", b"P5", b"P6") else None
    except (IndexError, ValueError):
        return None


def _sample_kind(im: Image.Image) -> str:
    """What an I or F image's samples are, from the TIFF tags where there are some."""
    if im.mode == "F":
        return "float"
    tags = getattr(im, "tag_v2", None)
    if tags is not None and im.format == "TIFF":
        bits = tags.get(258, (32,))
        fmt = tags.get(339, (1,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = fmt[0] if isinstance(fmt, tuple) else fmt
        return f"{'signed' if fmt == 2 else 'unsigned'} {bits}-bit integer"
    return "32-bit integer"


def _to_rgb8(im: Image.Image, notes: list[str], path: Path | None = None) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        arr = np.asarray(im).astype(np.float64)
        # The file says its bit depth: a dark 16-bit PGM/PNG (every value <= 255) is still 16-bit.
        # Pillow stores PNM greyscale with maxval > 255 in 0..65535 (it rescales other maxvals).
        # Float samples (F: float TIFF, or a PFM file, which Pillow reads as format PPM whatever
        # its extension) never declare a range, nor do 32-bit or signed integer TIFFs.
        declared = mode != "F" and (mode.startswith("I;16") or im.format in ("PNG", "PPM"))
        if not declared:
            # A float or 32-bit integer image does not say what white is: 0..1 floats or 12-bit
            # data in int32 came out nearly black when the peak was guessed as 255 or 65535.
            raise ImageReadError(f"{path or 'image'}: {mode} greyscale ({_sample_kind(im)} samples"
                                 f"{', a PFM file' if mode == 'F' and im.format == 'PPM' else ''}) has no declared "
                                 "value range, so lcbench cannot map it to 8 bits without guessing; convert it to "
                                 "an 8- or 16-bit PNG first")
        peak = 65535.0
        notes.append(f"{mode} greyscale reduced to 8 bits (round(v*255/{peak:g})) and replicated to RGB")
        grey = np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped (colour channels used as stored)")
    if mode in ("L", "LA", "1"):
        notes.append("greyscale replicated to RGB")
    if mode in ("P", "PA"):
        notes.append("palette expanded to RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB (Pillow's naive conversion, no colour profile)")
    elif mode not in ("RGB", "RGBA", "L", "LA", "1", "P", "PA"):
        notes.append(f"{mode} converted to RGB")
    maxval = _pnm_maxval(path) if mode == "RGB" and im.format == "PPM" and path is not None else None
    if maxval is not None and maxval > 255:  # ASCII P3 (binary P6 is read by _read_deep_pnm)
        notes.append(f"{maxval}-maxval RGB reduced to 8 bits by Pillow (round(v*255/maxval))")
    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"first frame of {im.n_frames} used")
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


def _reduce16(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr.astype(np.float64) * 255.0 / 65535.0), 0, 255).astype(np.uint8)


def _read_16bit_colour(im: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    if im.format == "TIFF":
        return _read_16bit_tiff(im, path, notes)
    import cv2  # reads 16-bit colour PNG losslessly

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise ImageReadError(f"cannot read 16-bit image {path}")
    if arr.shape[2] == 4:
        notes.append("alpha channel dropped (colour channels used as stored)")
    with open(path, "rb") as f:
        colour_type = f.read(26)[25:26]  # IHDR: 4 is greyscale + alpha (cv2 gives it as BGRA)
    if colour_type in (b"\x00", b"\x04"):
        notes.append("16-bit greyscale reduced to 8 bits (round(v*255/65535)) and replicated to RGB")
    else:
        notes.append("16-bit RGB reduced to 8 bits (round(v*255/65535))")
    return _reduce16(arr[:, :, 2::-1])  # BGR(A) -> RGB


def _read_16bit_tiff(im: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    """The stored samples of the first page, read by tifffile (a dependency of scikit-image):
    Pillow drops the low byte of 16-bit RGB, and cv2 reads planar (PlanarConfiguration=2) data
    as if it were interleaved and fails on TIFFs with an Orientation tag."""
    planar = im.tag_v2.get(284, 1) == 2
    try:
        import tifffile
    except ImportError as exc:
        tifffile = None
        why = f"tifffile is not installed ({exc})"
    arr = None
    if tifffile is not None:
        try:
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                photometric, axes, extra = int(page.photometric), page.axes, len(page.extrasamples or ())
                arr = page.asarray()
        except Exception as exc:  # e.g. a compression that needs the imagecodecs package
            why = f"tifffile: {type(exc).__name__}: {exc}"
        else:
            if photometric != 2 or arr.dtype != np.uint16 or axes not in ("YXS", "SYX") or \
                    arr.shape[-1 if axes == "YXS" else 0] != 3 + extra:
                raise ImageReadError(f"image {path}: 16-bit TIFF with photometric {photometric}, samples "
                                     f"{arr.dtype} and axes {axes} is not 16-bit RGB(A) lcbench can read; convert "
                                     "it to a 16-bit RGB PNG")
            if axes == "SYX":
                arr = np.moveaxis(arr, 0, -1)
            if extra:
                notes.append("alpha channel dropped (colour channels used as stored)")
            notes.append("16-bit RGB reduced to 8 bits (round(v*255/65535))")
            return _reduce16(arr[:, :, :3])
    if planar:  # cv2 reads these scrambled
        raise ImageReadError(f"cannot read 16-bit planar (PlanarConfiguration=2) TIFF {path}: {why}; "
                             "install imagecodecs, or save it uncompressed or interleaved")
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageReadError(f"cannot read 16-bit TIFF {path}: {why}; OpenCV could not read it either")
    if arr.shape[2] == 4:
        notes.append("alpha channel dropped (colour channels used as stored)")
    notes.append("16-bit RGB reduced to 8 bits (round(v*255/65535))")
    return _reduce16(arr[:, :, 2::-1])


def _read_deep_pnm(path: Path, notes: list[str]) -> np.ndarray | None:
    """Binary PGM/PPM (P5/P6) with maxval > 255, reduced by round(v * 255 / maxval) in one step
    (Pillow first rescales such files to 16 bits, so a 10-bit PGM would be rounded twice). None:
    not such a file."""
    if (_pnm_maxval(path) or 0) <= 255:  # reads the header only: 8-bit files are Pillow's as they are
        return None
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] not in (b"P5", b"P6"):
        return None
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":  # a comment runs to the end of the line
            pos = data.find(b"\n", pos)
            if pos < 0:
                return None
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        tokens.append(data[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError:
        return None
    if maxval <= 255:
        return None
    channels = 3 if data[:2] == b"P6" else 1
    pos += 1  # exactly one whitespace byte after maxval
    n = width * height * channels
    if not 255 < maxval < 65536 or len(data) < pos + 2 * n:
        raise ImageReadError(f"image {path}: truncated or invalid {data[:2].decode()} file (maxval {maxval})")
    raw = np.frombuffer(data, ">u2", count=n, offset=pos).astype(np.float64).reshape(height, width, channels)
    if raw.max(initial=0) > maxval:
        raise ImageReadError(f"image {path}: a sample exceeds the file's maxval {maxval}")
    pixels = np.clip(np.rint(raw * 255.0 / maxval), 0, 255).astype(np.uint8)
    kind = "RGB" if channels == 3 else "greyscale"
    notes.append(f"{maxval}-maxval {kind} reduced to 8 bits (round(v*255/{maxval}))"
                 + ("" if channels == 3 else " and replicated to RGB"))
    return np.repeat(pixels, 3, axis=2) if channels == 1 else pixels


# Pillow's Image.transpose method for each EXIF orientation (what ImageOps.exif_transpose does),
# undone on the decoded array: stored rows and columns back.
_UNDO_ORIENTATION = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, 1),  # ROTATE_270 undone
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, -1),  # ROTATE_90 undone
}


def _orientation(im: Image.Image) -> int | None:
    """The Orientation tag (EXIF, or the TIFF tag), read before loading."""
    try:
        value = im.tag_v2.get(274) if im.format == "TIFF" else im.getexif().get(274)
    except Exception:  # unreadable EXIF: nothing to ignore
        return None
    if isinstance(value, tuple):
        value = value[0] if value else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _too_large(path: Path, exc: Exception) -> ImageReadError:
    import re

    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return ImageReadError(f"image {path}: {size}, more than lcbench reads ({limit:,} pixels, Pillow's guard against "
                          "decompression bombs; each job holds several float64 copies of the image for the "
                          "metrics); crop or tile it into smaller images")


def _decode(im: Image.Image, path: Path, notes: list[str], orientation: int | None) -> np.ndarray:
    im.load()  # forces a full decode: truncated files fail here, not later
    deep = _read_deep_pnm(path, notes) if im.format == "PPM" else None
    if deep is not None:
        return deep
    if _is_16bit_colour(im, path):
        pixels = _read_16bit_colour(im, path, notes)  # the stored samples, read from the file
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"first frame of {im.n_frames} used")
        return pixels
    pixels = _to_rgb8(im, notes, path)
    if im.format == "TIFF" and orientation in _UNDO_ORIENTATION and 274 not in im.tag_v2:
        pixels = _UNDO_ORIENTATION[orientation](pixels)  # Pillow rotated it while loading
    return pixels


def load_image(path: str | Path) -> SourceImage:
    """Read ``path`` as HxWx3 uint8 RGB under the policy above; ImageReadError names the file."""
    path = Path(path)
    notes: list[str] = []
    if path.is_symlink() and not path.exists():
        raise ImageReadError(f"image {path} is a broken symbolic link: {os.readlink(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            orientation = _orientation(im)  # before load(): Pillow 13 applies (and drops) a TIFF's
            if im.format != "TIFF" or orientation in (None, 1):
                pixels = _decode(im, path, notes, orientation)
        if im.format == "TIFF" and orientation not in (None, 1):
            # Pillow 13 rotates a TIFF while loading it, and for a file opened by name it maps
            # single-band data (L, I;16) with the rotated size: scrambled pixels. Opened from a
            # file object it decodes them correctly, and the rotation is undone on the array.
            with open(path, "rb") as f, Image.open(f) as im:
                pixels = _decode(im, path, notes, orientation)
        if orientation is not None and orientation != 1:
            notes.append(f"{'TIFF' if im.format == 'TIFF' else 'EXIF'} orientation {orientation} ignored "
                         "(stored pixels compared)")
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from exc
    except Exception as exc:
        raise ImageReadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"image {path} is empty")
    return SourceImage(np.ascontiguousarray(pixels), notes)


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-256 of the raw pixel bytes: identifies an image whatever encoder wrote the file."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
