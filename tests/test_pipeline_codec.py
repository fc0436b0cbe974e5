"""Pipelines as codecs: spec parsing, round trips on odd sizes and greyscale, header, bpp, plugins."""
from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lcbench
from lcbench.codec import CodecError
from lcbench.pipeline import Pipeline, split_pipeline_spec, steps
from lcbench.registry import UnknownNameError, codecs, create_codec, load_plugin
from lcbench.resample import resize_uint8
from support import photo

RESCALE_STEPS = [f"{k}-x{s}" for k in ("bicubic", "lanczos") for s in (2, 3, 4)]
SIZES = [(37, 53), (5, 7), (1, 1), (64, 48)]


def grey(h: int, w: int) -> np.ndarray:
    g = photo("astronaut", (h, w))[:, :, 1:2]
    return np.ascontiguousarray(np.repeat(g, 3, axis=2))


def test_rescale_steps_are_registered() -> None:
    assert set(RESCALE_STEPS) <= set(steps.names())
    assert "comcnn" in steps.names()


def test_spec_parsing_and_label() -> None:
    step_specs, inner = split_pipeline_spec("comcnn:weights=a.pt+bicubic-x2+jpeg:subsampling=444")
    assert step_specs == [("comcnn", {"weights": "a.pt"}), ("bicubic-x2", {})]
    assert inner == ("jpeg", {"subsampling": 444})
    c = create_codec("lanczos-x4+webp:method=4")
    assert isinstance(c, Pipeline)
    assert c.label() == c.name == "lanczos-x4+webp:method=4"
    assert c.rate_param == "quality" and c.default_rates == codecs.get("webp").default_rates
    assert c.rate_range == codecs.get("webp").rate_range and c.rate_increases_bits
    assert c.version() == (f"lanczos-x4 Pillow {Image.__version__} lanczos float | webp:method=4 "
                           + create_codec("webp:method=4").version() + " | pipeline-format 3")
    # default options drop out of the label, like the codec's own label
    assert create_codec("bicubic-x2+jpeg:subsampling=420").label() == "bicubic-x2+jpeg"


def test_unknown_parts_fail_with_suggestions() -> None:
    with pytest.raises(UnknownNameError, match="did you mean bicubic-x2"):
        create_codec("bicubc-x2+jpeg")
    with pytest.raises(UnknownNameError, match="unknown codec 'jepg'"):
        create_codec("bicubic-x2+jepg")
    with pytest.raises(ValueError, match="bad pipeline spec"):
        create_codec("bicubic-x2++jpeg")
    with pytest.raises(ValueError, match="step 'bicubic-x2' takes no options"):
        create_codec("bicubic-x2:foo=1+jpeg")


@pytest.mark.parametrize("step", RESCALE_STEPS)
@pytest.mark.parametrize("size", SIZES)
def test_rescale_round_trip_odd_sizes(step: str, size: tuple[int, int]) -> None:
    img = photo("chelsea", size)
    for inner, rate in (("png", 6), ("jpeg", 75), ("webp", 75)):
        c = create_codec(f"{step}+{inner}")
        out = c.decode(c.encode(img, rate))
        assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize("step", RESCALE_STEPS)
def test_rescale_of_constant_image_is_exact_and_grey_stays_grey(step: str) -> None:
    flat = np.full((23, 31, 3), (200, 17, 90), np.uint8)
    c = create_codec(f"{step}+png")
    assert np.array_equal(c.decode(c.encode(flat, 6)), flat)  # replicate padding keeps it constant
    g = grey(45, 61)
    out = c.decode(c.encode(g, 6))
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 0] == out[:, :, 2]).all()


def test_bicubic_png_equals_hand_pipeline() -> None:
    """Lossless inner codec: decoded = crop(up(down(pad(img)))), computed step by step here."""
    img = photo("coffee", (45, 62))
    c = create_codec("bicubic-x2+png")
    padded = np.pad(img, ((0, 1), (0, 0), (0, 0)), mode="edge")  # 45 -> 46 rows, 62 stays
    low = resize_uint8(padded, 31, 23, "bicubic")
    expect = resize_uint8(low, 62, 46, "bicubic")[:45]
    assert np.array_equal(c.decode(c.encode(img, 6)), expect)


def test_bitstream_is_header_plus_inner_codec_bitstream() -> None:
    img = photo("astronaut", (129, 300))  # 129 rows -> padded to 132 for x4
    c = create_codec("bicubic-x4+jpeg")
    data = c.encode(img, 50)
    padded = np.pad(img, ((0, 3), (0, 0), (0, 0)), mode="edge")
    low = resize_uint8(padded, 75, 33, "bicubic")
    buf = io.BytesIO()
    Image.fromarray(low).save(buf, format="JPEG", quality=50, subsampling=2, optimize=False)
    tag = hashlib.sha256(b"bicubic-x4+jpeg").digest()[:2]  # the whole label: steps and inner codec
    header = bytes([0xB8]) + tag + bytes([129, 1]) + bytes([0xAC, 0x02]) + bytes([0])  # varints 129, 300; no side info
    assert data == header + buf.getvalue()


def test_decode_errors_are_clear() -> None:
    img = photo("astronaut", (32, 32))
    data = create_codec("bicubic-x2+jpeg").encode(img, 50)
    with pytest.raises(CodecError, match="other steps"):
        create_codec("lanczos-x2+jpeg").decode(data)
    with pytest.raises(CodecError, match="not a pipeline bitstream"):
        create_codec("bicubic-x2+jpeg").decode(data[1:])
    with pytest.raises(CodecError, match="truncated"):
        create_codec("bicubic-x2+jpeg").decode(data[:4])


def test_bitstream_of_another_inner_codec_is_refused() -> None:
    """The header's 2-byte check covers the inner codec too: bicubic-x2+webp refused to decode a
    bicubic-x2+jpeg bitstream only by luck of the inner decoder before (the check covered the steps)."""
    img = photo("astronaut", (32, 48))
    jpeg_data = create_codec("bicubic-x2+jpeg").encode(img, 50)
    for other in ("bicubic-x2+webp", "bicubic-x2+png", "bicubic-x2+jpeg:subsampling=444"):
        with pytest.raises(CodecError, match="other steps or another codec"):
            create_codec(other).decode(jpeg_data)
    # the header's size is unchanged (1 + 2 + varints + side lengths), so bpp is too
    low = resize_uint8(img, 24, 16, "bicubic")
    assert len(jpeg_data) == 1 + 2 + 1 + 1 + 1 + len(create_codec("jpeg").encode(low, 50))
    assert create_codec("bicubic-x2+jpeg").decode(jpeg_data).shape == img.shape
    # bitstreams of the old formats (first byte 0xB7; format 1 checked the steps only, format 2 the
    # label) are refused as such, and the version says which format
    for old_check in (b"bicubic-x2", b"bicubic-x2+jpeg"):
        old = bytes([0xB7]) + hashlib.sha256(old_check).digest()[:2] + jpeg_data[3:]
        with pytest.raises(CodecError, match="older pipeline format"):
            create_codec("bicubic-x2+jpeg").decode(old)
    assert create_codec("bicubic-x2+jpeg").version().endswith(" | pipeline-format 3")


def test_user_step_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "invert_step.py"
    plugin.write_text(
        "import numpy as np\n"
        "from lcbench.pipeline import Step, register_step\n"
        "@register_step\n"
        "class Invert(Step):\n"
        "    name = 'test-invert'\n"
        "    def version(self): return 'invert 1'\n"
        "    def forward(self, image): return 255 - image, b'ab'\n"
        "    def inverse(self, image, side, height, width):\n"
        "        assert side == b'ab'\n"
        "        return 255 - image\n")
    load_plugin(plugin)
    c = create_codec("test-invert+png")
    img = photo("coffee", (17, 29))
    data = c.encode(img, 6)
    assert np.array_equal(c.decode(data), img)
    assert data[5:8] == bytes([2]) + b"ab"  # side information after the size varints (17, 29)
    digest = hashlib.sha256(plugin.read_text().encode()).hexdigest()[:12]  # edited plugin code: new version
    assert c.version() == (f"test-invert invert 1 plugin-sha256:{digest} | png " + create_codec("png").version()
                           + " | pipeline-format 3")


def test_run_counts_bpp_on_the_original_and_records_sr_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photo("astronaut", (75, 101))).save(folder / "a.png")
    Image.fromarray(grey(64, 80)).save(folder / "g.png")
    df = lcbench.run(["jpeg", "bicubic-x2+jpeg"], folder, out=tmp_path / "run", quality=[40, 80], jobs=1,
                     raise_on_failure=True)
    assert len(df) == 8
    pipe = df[df["codec"] == "bicubic-x2+jpeg"]
    for row in pipe.itertuples():
        src = np.asarray(Image.open(folder / f"{row.image}.png").convert("RGB"))
        c = create_codec("bicubic-x2+jpeg")
        data = c.encode(src, row.quality)
        assert row.bytes == len(data)
        assert row.bpp == pytest.approx(8 * len(data) / (src.shape[0] * src.shape[1]))
        assert (row.width, row.height) == (src.shape[1], src.shape[0])
        assert math.isfinite(row.psnr_y_sr) and 0 < row.ssim_y_sr <= 1
    assert pipe["codec_version"].str.contains("bicubic-x2 Pillow").all()
    assert df[df["codec"] == "jpeg"]["psnr_y_sr"].isna().all()  # plain codecs have no SR columns
    saved = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(saved["codec"]) == {"jpeg", "bicubic-x2+jpeg"}


def test_steps_cli(capsys) -> None:
    from lcbench.cli import main as cli_main

    assert cli_main(["steps", "bicubic-*"]) == 0
    out = capsys.readouterr().out
    assert "bicubic-x4     x4  available" in out and "lanczos" not in out.split("Use as")[0]
    assert cli_main(["steps", "nope*"]) == 2


def test_steps_command_explains_a_whole_pipeline_spec(capsys):
    from lcbench.cli import main

    assert main(["steps", "bicubic-x2+jpeg"]) == 0
    out = capsys.readouterr().out
    assert "step   bicubic-x2" in out and "codec  jpeg" in out
    assert "bicubic-x2+jpeg: available; rate grid quality = 5, 10" in out
    assert main(["steps", "nosuchstep+jpeg"]) == 2  # the CLI names the unknown step
    assert "unknown step 'nosuchstep'" in capsys.readouterr().err


def test_steps_command_shows_the_configured_grid(tmp_path, capsys):
    """It printed the class's grid (models 1, 3, 4, 5) for an inner codec whose weights_dir holds model 2 only."""
    import shutil

    from lcbench.cli import main
    from lcbench.registry import codecs

    shipped = Path(codecs.get("importance_map").shipped_weights_dir)
    shutil.copy(shipped / "importance_map_2.pt", tmp_path / "importance_map_2.pt")
    spec = f"bicubic-x2+importance_map:weights_dir={tmp_path}"
    assert main(["steps", spec]) == 0
    assert f"{spec}: available; rate grid model = 2\n" in capsys.readouterr().out


def test_bpp_rated_inner_codec_is_asked_for_the_original_images_bpp() -> None:
    """jpeg2000's rate is bpp of the image it codes. Around a x2 downscale the pipeline's nominal
    0.5 bpp must mean 0.5 bpp of the original (the inner codec is asked for 2.0 on its quarter-size
    image), not 0.5 bpp of the small image (which measured 0.125 bpp before)."""
    img = photo("astronaut", (256, 256))
    direct = create_codec("jpeg2000")
    piped = create_codec("bicubic-x2+jpeg2000")
    assert piped.rate_param == "nominal_bpp" and piped.rate_is_bpp
    small = piped.steps[0].forward(img)[0]
    for nominal in (0.25, 0.5, 1.0):
        data = piped.encode(img, nominal)
        assert 8 * len(data) / (256 * 256) == pytest.approx(nominal, rel=0.1), nominal
        inner = direct.encode(small, nominal * 4)  # 4 = (256 * 256) / (128 * 128)
        assert data.endswith(inner) and len(data) - len(inner) < 16  # only the pipeline header besides


def test_pipeline_keeps_the_inner_codecs_rate_rules() -> None:
    """A pipeline around a one-model-per-rate codec picks the nearest model for --target-bpp
    (a continuous search asked autoencoder for 'model 4.5') and keeps the accepted range."""
    assert create_codec("bicubic-x2+autoencoder").discrete_rates
    assert create_codec("bicubic-x2+jpegxl").accepted_rates == codecs.get("jpegxl").accepted_rates


def test_target_bpp_through_a_pipeline_around_a_learned_codec(tmp_path: Path) -> None:
    folder = tmp_path / "img"
    folder.mkdir()
    Image.fromarray(photo("chelsea", (64, 96))).save(folder / "cat.png")
    df = lcbench.run(["bicubic-x2+importance_map"], folder, out=tmp_path / "run", target_bpp=[0.05], jobs=1)
    assert (df["error"] == "").all(), df["error"].tolist()
    assert float(df["matched_rate"].iloc[0]) in (1.0, 2.0, 3.0, 4.0, 5.0)


def test_pipeline_around_a_learned_codec_with_weights_dir_uses_that_folders_models(tmp_path: Path) -> None:
    """The grid and --target-bpp's candidates are the configured inner codec's model ids (those in
    weights_dir), not its class's shipped 1..5: with only model 2 in the folder the run failed with
    'rate 1 is not a model id' (grid) and 'no model 1 ... missing' (--target-bpp)."""
    import shutil

    from lcbench_codecs.importance_map import ImportanceMap

    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(ImportanceMap.weights_path(2), wdir / "importance_map_2.pt")
    spec = f"bicubic-x2+importance_map:weights_dir={wdir}"
    c = create_codec(spec)
    assert type(c).default_rates == tuple(ImportanceMap.default_rates) == (1, 3, 4, 5)  # the shipped grid
    assert c.default_rates == (2.0,) and c.discrete_rates
    c.check_rate(2)
    with pytest.raises(ValueError, match="rate 1 is not a model id"):
        c.check_rate(1)
    folder = tmp_path / "img"
    folder.mkdir()
    Image.fromarray(photo("chelsea", (24, 40))).save(folder / "cat.png")
    grid = lcbench.run([spec], folder, out=tmp_path / "grid", jobs=1)
    assert grid["error"].tolist() == [""] and grid["quality"].tolist() == [2.0]
    matched = lcbench.run([spec], folder, out=tmp_path / "match", target_bpp=[0.3], jobs=1)
    assert matched["error"].tolist() == [""] and matched["matched_rate"].tolist() == [2.0]
    assert matched["bytes"].tolist() == grid["bytes"].tolist()


def test_scaled_rate_of_a_bpp_rated_inner_codec_is_checked_before_the_run(image_folder: Path, tmp_path: Path,
                                                                          capsys) -> None:
    """bicubic-x4+jpeg2000 asks jpeg2000 for up to 16x the pipeline's bpp (of its 16x smaller image),
    and jpeg2000 accepts at most 24 bpp: -q 1,2,8 gave three rows labelled 1, 2 and 8 holding the
    same bitstream (2 and 8 clamped). Now the pipeline's range, grid and check stop at 24/16 = 1.5."""
    from lcbench.cli import main

    x4 = create_codec("bicubic-x4+jpeg2000")
    assert x4.accepted_rates == (0.001, 1.5) and x4.rate_range == (0.01, 1.5)  # rate matching searches up to 1.5
    assert type(x4).accepted_rates == (0.001, 1.5) and max(x4.default_rates) == 1.5  # the grid's 2.0 is left out
    assert create_codec("bicubic-x2+jpeg2000").accepted_rates == (0.001, 6.0)
    assert create_codec("bicubic-x2+jpeg2000").rate_range == (0.01, 6.0)
    assert create_codec("bicubic-x2+jpeg2000").default_rates == codecs.get("jpeg2000").default_rates
    x4.check_rate(1.5)
    for bad in (2, 8):
        with pytest.raises(ValueError, match=rf"bicubic-x4\+jpeg2000: nominal_bpp {bad} asks jpeg2000 for up to "
                                             rf"{16 * bad} bpp .* this pipeline's nominal_bpp is at most 1.5"):
            x4.check_rate(bad)
    img = photo("astronaut", (64, 64))
    with pytest.raises(CodecError, match="32 bpp of its smaller image"):  # encode does not clamp either
        x4.encode(img, 2)
    assert len(x4.encode(img, 1.0)) < len(x4.encode(img, 1.5))
    code = main(["run", "--codecs", "bicubic-x4+jpeg2000", "-q", "1,2,8", "--dataset", str(image_folder),
                 "--max-images", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "bicubic-x4+jpeg2000: nominal_bpp 2 asks jpeg2000" in err and "at most 1.5" in err
    assert not (tmp_path / "run" / "results.csv").exists()


def test_inner_codecs_weights_dir_path_is_not_part_of_the_chain_check(tmp_path: Path) -> None:
    """A model-per-rate inner codec tags its own bitstream with the model id and its weights' sha256,
    so the pipeline's chain check leaves weights_dir out: the same weights in another folder decode
    (format 2 refused them as 'other steps or another codec'), other weights are still refused."""
    import shutil

    from lcbench_codecs.importance_map import ImportanceMap

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    shutil.copy(ImportanceMap.weights_path(2), a / "importance_map_2.pt")
    shutil.copy(ImportanceMap.weights_path(2), b / "importance_map_2.pt")
    shutil.copy(ImportanceMap.weights_path(3), c / "importance_map_2.pt")  # other weights, same model id
    img = photo("chelsea", (24, 40))
    enc = create_codec(f"bicubic-x2+importance_map:weights_dir={a}")
    data = enc.encode(img, 2)
    decoded = enc.decode(data)
    assert np.array_equal(create_codec(f"bicubic-x2+importance_map:weights_dir={b}").decode(data), decoded)
    assert np.array_equal(create_codec("bicubic-x2+importance_map").decode(data), decoded)  # the shipped model 2
    with pytest.raises(CodecError, match="written with other weights for model 2"):
        create_codec(f"bicubic-x2+importance_map:weights_dir={c}").decode(data)
    with pytest.raises(CodecError, match="other steps or another codec"):
        create_codec(f"bicubic-x2+autoencoder:weights_dir={a}").decode(data)


def test_sr_metrics_left_undefined_say_why_in_the_notes(tmp_path):
    """psnr_y_sr/ssim_y_sr were NaN without a note on images too small for the border crop."""
    import pandas as pd
    from PIL import Image

    from lcbench.cli import main

    rng = np.random.default_rng(3)
    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / "tiny.png")
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(data / "small.png")
    out = tmp_path / "run"
    assert main(["run", "--codecs", "bicubic-x4+jpeg", "-q", "50", "--dataset", str(data), "--out", str(out),
                 "--jobs", "1", "--no-progress", "--no-cache"]) == 0
    df = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("image")
    assert "no psnr_y_sr/ssim_y_sr: image 8x8 is too small for a 4-pixel border crop" in df.loc["tiny", "notes"]
    assert df.loc["small", "psnr_y_sr"] != "" and df.loc["small", "ssim_y_sr"] == ""
    assert "ssim_y_sr needs at least 11x11 px left after the border crop" in df.loc["small", "notes"]
