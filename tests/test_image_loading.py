"""load_image gives every codec and metric the stored pixels, reduced to 8 bits exactly as the
README says, or refuses with a message naming the file: each case here was read wrong.

Expected pixels come from the arrays the files are written from (tifffile, cv2 or raw bytes
write them), never from lcbench itself.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from lcbench.images import ImageReadError, load_image

RNG = np.random.default_rng(7)
RGB16 = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
GREY16 = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
GREY8 = RNG.integers(0, 256, (9, 11), dtype=np.uint8)


def _to8(a: np.ndarray) -> np.ndarray:
    """The README's reduction, round(v * 255 / 65535), in exact integer arithmetic."""
    return ((a.astype(np.int64) * 255 * 2 + 65535) // (2 * 65535)).astype(np.uint8)


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def _png(path: Path, arr: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_planar_16bit_rgb_tiff_is_read_as_its_pixels(tmp_path):
    """PlanarConfiguration=2 (RRR..GGG..BBB): cv2 read it as interleaved, scrambled."""
    p = tmp_path / "planar16.tif"
    tifffile.imwrite(p, np.moveaxis(RGB16, 2, 0), photometric="rgb", planarconfig="separate")
    src = load_image(p)
    np.testing.assert_array_equal(src.pixels, _to8(RGB16))
    assert src.notes == ["16-bit RGB reduced to 8 bits (round(v*255/65535))"]
    # interleaved, several strips, deflate: the same pixels as before this change (cv2 read them right)
    q = tmp_path / "chunky16.tif"
    tifffile.imwrite(q, RGB16, photometric="rgb", rowsperstrip=2, compression="zlib")
    np.testing.assert_array_equal(load_image(q).pixels, _to8(RGB16))
    # LZW needs imagecodecs in tifffile: read by cv2 then
    r = tmp_path / "lzw16.tif"
    assert cv2.imwrite(str(r), np.ascontiguousarray(RGB16[:, :, ::-1]), [cv2.IMWRITE_TIFF_COMPRESSION, 5])
    np.testing.assert_array_equal(load_image(r).pixels, _to8(RGB16))


def test_pfm_file_named_pgm_is_refused_not_divided_by_65535(tmp_path):
    """Pillow reads a PFM (float) file as format PPM: it was taken as 16-bit and came out black."""
    p = tmp_path / "pfm_as.pgm"
    f = (GREY8 / 255.0).astype("<f4")
    p.write_bytes(b"Pf\n11 9\n-1.0\n" + f[::-1].tobytes())
    assert Image.open(p).mode == "F"
    with pytest.raises(ImageReadError, match=r"pfm_as\.pgm: F greyscale \(float samples, a PFM file\) has no "
                                             r"declared value range"):
        load_image(p)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_ignored_and_noted(tmp_path, orientation):
    """Pillow 13 applies a TIFF's Orientation while loading (and scrambles single-band images
    doing it); the README says stored pixels are compared, as for every other format."""
    tag = [(274, "H", 1, orientation, True)]
    cases = {
        "rgb8.tif": (RGB8, dict(photometric="rgb"), RGB8),
        "grey8.tif": (GREY8, {}, _rgb(GREY8)),
        "grey16.tif": (GREY16, {}, _rgb(_to8(GREY16))),
        "rgb16.tif": (RGB16, dict(photometric="rgb"), _to8(RGB16)),
        "planar16.tif": (np.moveaxis(RGB16, 2, 0), dict(photometric="rgb", planarconfig="separate"), _to8(RGB16)),
    }
    for name, (data, kw, expected) in cases.items():
        tifffile.imwrite(tmp_path / name, data, extratags=tag, **kw)
        src = load_image(tmp_path / name)
        np.testing.assert_array_equal(src.pixels, expected, err_msg=name)
        noted = f"TIFF orientation {orientation} ignored (stored pixels compared)"
        assert (noted in src.notes) == (orientation != 1), (name, src.notes)
    # written by Pillow, LZW-compressed (Pillow's libtiff path)
    Image.fromarray(RGB8).save(tmp_path / "lzw.tif", compression="tiff_lzw", tiffinfo={274: orientation})
    Image.fromarray(GREY8).save(tmp_path / "lzwgrey.tif", compression="tiff_lzw", tiffinfo={274: orientation})
    np.testing.assert_array_equal(load_image(tmp_path / "lzw.tif").pixels, RGB8)
    np.testing.assert_array_equal(load_image(tmp_path / "lzwgrey.tif").pixels, _rgb(GREY8))


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_exif_orientation_is_noted(tmp_path, ext):
    p = tmp_path / f"photo.{ext}"
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(RGB8).save(p, exif=exif, **({"lossless": True} if ext == "webp" else {}))
    src = load_image(p)
    assert "EXIF orientation 6 ignored (stored pixels compared)" in src.notes
    assert src.pixels.shape == RGB8.shape  # stored, not rotated
    if ext != "jpg":
        np.testing.assert_array_equal(src.pixels, RGB8)
    exif[274] = 1
    Image.fromarray(RGB8).save(p, exif=exif, **({"lossless": True} if ext == "webp" else {}))
    assert not any("orientation" in n for n in load_image(p).notes)


def test_16bit_grey_alpha_png_is_noted_as_greyscale(tmp_path):
    p = tmp_path / "la16.png"
    la = np.stack([GREY16, RGB16[:, :, 0]], -1)
    _png(p, la, 4)
    src = load_image(p)
    np.testing.assert_array_equal(src.pixels, _rgb(_to8(GREY16)))
    assert src.notes == ["alpha channel dropped (colour channels used as stored)",
                         "16-bit greyscale reduced to 8 bits (round(v*255/65535)) and replicated to RGB"]
    q = tmp_path / "rgb16.png"
    _png(q, RGB16, 2)
    src = load_image(q)
    np.testing.assert_array_equal(src.pixels, _to8(RGB16))
    assert src.notes == ["16-bit RGB reduced to 8 bits (round(v*255/65535))"]


def test_multipage_16bit_tiff_uses_and_notes_the_first_page(tmp_path):
    p = tmp_path / "pages.tif"
    tifffile.imwrite(p, np.stack([RGB16, RGB16[::-1]]), photometric="rgb")
    src = load_image(p)
    np.testing.assert_array_equal(src.pixels, _to8(RGB16))
    assert "first frame of 2 used" in src.notes


@pytest.mark.parametrize("dtype, kind", [(np.int16, "signed 16-bit integer"), (np.int32, "signed 32-bit integer"),
                                         (np.uint32, "unsigned 32-bit integer"), (np.float32, "float")])
def test_tiffs_without_a_declared_range_are_refused_saying_what_they_hold(tmp_path, dtype, kind):
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, GREY8.astype(dtype))
    with pytest.raises(ImageReadError, match=rf"x\.tif: \w+ greyscale \({kind} samples\) has no declared"):
        load_image(p)


def test_broken_link_and_too_large_image_say_so(tmp_path, monkeypatch):
    (tmp_path / "broken.png").symlink_to("nothere.png")
    with pytest.raises(ImageReadError, match=r"broken\.png is a broken symbolic link: 'nothere\.png' does not exist"):
        load_image(tmp_path / "broken.png")
    Image.fromarray(RGB8).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # errors above 80 pixels; the image has 99
    with pytest.raises(ImageReadError, match=r"big\.png: 99 pixels, more than lcbench reads \(80 pixels.*crop or tile it"):
        load_image(tmp_path / "big.png")
    assert "decompression bomb DOS" not in str(pytest.raises(ImageReadError, load_image, tmp_path / "big.png").value)
