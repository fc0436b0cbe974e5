"""Every registered codec round-trips real images through a real bitstream."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcbench.codec import CodecError, CodecUnavailable
from lcbench.metrics import Reference, compute_metrics
from lcbench.registry import codecs, create_codec

from support import photo

ALL = codecs.names()


def _available(name: str) -> bool:
    return bool(codecs.get(name).availability())


def test_builtin_codecs_are_registered():
    assert {"jpeg", "webp", "jpeg2000", "avif", "png", "bpg", "hevc", "jpegxl"} <= set(ALL)
    assert codecs.import_errors == {}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [(96, 128), (67, 93)])
def test_round_trip(name, size):
    if not _available(name):
        pytest.skip(f"{name} unavailable: {codecs.get(name).availability().reason}")
    codec = create_codec(name)
    img = photo("astronaut", size)
    rates = codec.default_rates
    rate = rates[len(rates) // 2]
    data = codec.encode(img, rate)
    assert isinstance(data, bytes) and len(data) > 0
    out = codec.decode(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    values, _ = compute_metrics(Reference.of(img), out)
    if codec.lossless:
        assert np.array_equal(out, img)
    else:
        assert 20 < values["psnr_rgb"] < 60, values
    assert codec.version() and codec.version() != "unknown"


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("png",)])
def test_rate_grid_orders_the_size(name):
    """A higher rate point gives more bytes (or fewer for QP-like parameters)."""
    if not _available(name):
        pytest.skip(f"{name} unavailable")
    codec = create_codec(name)
    img = photo("coffee", (200, 240))
    lo, hi = min(codec.default_rates), max(codec.default_rates)
    small, large = len(codec.encode(img, lo)), len(codec.encode(img, hi))
    assert (large > small) if codec.rate_increases_bits else (large < small)


def test_jpeg_matches_pillow_and_444_option():
    img = photo("astronaut", (128, 128))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=40, subsampling=2)
    assert create_codec("jpeg").encode(img, 40) == buf.getvalue()
    j444 = create_codec("jpeg:subsampling=444")
    assert j444.label() == "jpeg:subsampling=444"
    assert len(j444.encode(img, 40)) > len(buf.getvalue())
    with pytest.raises(ValueError, match="subsampling"):
        create_codec("jpeg:subsampling=411")


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match="webp"):
        create_codec("webp:colour=3")


def test_png_is_lossless_and_bpp_is_real():
    img = photo("chelsea")
    data = create_codec("png").encode(img, 6)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)


def test_jpeg2000_hits_its_target_roughly():
    img = photo("astronaut", (256, 256))
    c = create_codec("jpeg2000")
    bpp = 8 * len(c.encode(img, 0.5)) / (256 * 256)
    assert 0.3 < bpp <= 0.55


def test_bpg_without_tools_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("LCBENCH_BPGENC", raising=False)
    avail = codecs.get("bpg").availability()
    assert not avail and "bpgenc" in avail.reason and "LCBENCH_BPGENC" in avail.fix
    with pytest.raises(CodecUnavailable, match="bpgenc"):
        create_codec("bpg")


def test_command_line_codec_error_carries_tool_stderr():
    if not _available("jpegxl"):
        pytest.skip("jpegxl unavailable")
    with pytest.raises(CodecError, match=r"jpegxl: djxl exited with \d+"):
        create_codec("jpegxl").decode(b"this is not a JPEG XL codestream")


def test_decode_garbage_is_a_codec_error():
    with pytest.raises(CodecError, match="jpeg: decoding failed"):
        create_codec("jpeg").decode(b"\xff\xd8garbage")


def test_avif_bytes_do_not_depend_on_the_machine_core_count():
    # libavif's bitstream changes with its thread count (Pillow's default: one per core), so
    # lcbench pins it: by default one thread, `avif:threads=N` for N.
    codec = create_codec("avif")
    if not codec.availability():
        pytest.skip("no AVIF support in this Pillow")
    img = photo("astronaut", (256, 384))

    def pillow_avif(max_threads: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="AVIF", quality=50, speed=6, subsampling="4:2:0", max_threads=max_threads)
        return buf.getvalue()

    assert codec.encode(img, 50) == pillow_avif(1)
    two = create_codec("avif:threads=2")
    assert two.encode(img, 50) == pillow_avif(2) and two.options == {"threads": 2}
    assert "1 encoder thread" in codec.version() and "2 encoder threads" in two.version()


def test_jpegxl_quality_is_passed_with_every_digit():
    """`-q {rate:g}` sent 99.99999 as 100, which cjxl encodes losslessly (PSNR inf, recorded as 99.99999)."""
    if not _available("jpegxl"):
        pytest.skip("jpegxl unavailable")

    codec = create_codec("jpegxl")
    assert "99.99999" in codec.encode_args(Path("a.png"), Path("a.jxl"), 99.99999)
    image = photo("astronaut", (64, 64))
    near, lossless = (codec.decode(codec.encode(image, q)) for q in (99.99999, 100))
    assert np.array_equal(lossless, image)
    assert not np.array_equal(near, image)


def test_saved_file_names_keep_rates_apart():
    """Two grid rates equal to 6 digits wrote the same bird@0.3.bin, the second over the first."""
    from lcbench.worker import output_stem

    assert output_stem("bird", 0.3000001) != output_stem("bird", 0.3000004)
    assert output_stem("bird", 0.3000001) == "bird@0.3000001"
    assert output_stem("a/b", 50.0) == "a__b@50" and output_stem("x", 0.25, "target_bpp") == "x@bpp0.25"
