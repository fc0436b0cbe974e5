"""SR-convention metrics against scikit-image on a hand-cropped Y plane; rescaling presets and table."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lcbench.cli import main as cli_main
from lcbench.presets import format_sr_table, get_preset, preset_names, split_rescale_label, sr_table
from lcbench.registry import create_codec
from lcbench.sr_metrics import sr_metrics
from support import photo


def y_plane(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[:, :, i].astype(np.float64) for i in range(3))
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_metrics_match_skimage_on_cropped_y(scale: int) -> None:
    img = photo("astronaut", (103, 130))  # odd height: mod-crop matters for scale 2 and 4
    dec = create_codec(f"bicubic-x{scale}+jpeg").decode(create_codec(f"bicubic-x{scale}+jpeg").encode(img, 60))
    h, w = 103 - 103 % scale, 130 - 130 % scale
    y1 = y_plane(img)[scale:h - scale, scale:w - scale]
    y2 = y_plane(dec)[scale:h - scale, scale:w - scale]
    got = sr_metrics(img, dec, scale)
    assert got["psnr_y_sr"] == pytest.approx(peak_signal_noise_ratio(y1, y2, data_range=255), abs=1e-9)
    ref_ssim = structural_similarity(y1, y2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    assert got["ssim_y_sr"] == pytest.approx(ref_ssim, abs=1e-6)


def test_sr_metrics_identical_and_too_small() -> None:
    img = photo("coffee", (40, 40))
    assert sr_metrics(img, img, 2) == {"psnr_y_sr": math.inf, "ssim_y_sr": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="too small"):
        sr_metrics(img[:8, :8], img[:8, :8], 4)


def test_presets() -> None:
    assert preset_names() == ["rescale-jpeg", "rescale-webp"]
    p = get_preset("rescale-jpeg")
    assert p.codecs == ("bicubic-x2+jpeg", "bicubic-x4+jpeg")
    assert all(p.rates[c] == (30.0, 50.0, 70.0, 80.0, 90.0) for c in p.codecs)
    assert get_preset("rescale-webp", rescalers=("bicubic", "lanczos")).codecs == (
        "bicubic-x2+webp", "bicubic-x4+webp", "lanczos-x2+webp", "lanczos-x4+webp")
    for spec in p.codecs:
        create_codec(spec)  # every preset spec builds
    with pytest.raises(ValueError, match="unknown preset 'rescale-bpg'"):
        get_preset("rescale-bpg")


def test_preset_rescalers_one_name_and_unknown_names() -> None:
    """A str was iterated letter by letter (b-x2+jpeg, i-x2+jpeg, ...); unknown rescalers went unchecked."""
    assert get_preset("rescale-jpeg", rescalers="lanczos").codecs == ("lanczos-x2+jpeg", "lanczos-x4+jpeg")
    assert get_preset("rescale-jpeg", rescalers=["bicubic"]).codecs == ("bicubic-x2+jpeg", "bicubic-x4+jpeg")
    with pytest.raises(ValueError, match=r"unknown rescaler 'bicubik': no step 'bicubik-x2', 'bicubik-x4' "
                                         r"\(rescalers with steps -x2/-x4: bicubic, lanczos"):
        get_preset("rescale-jpeg", rescalers=("bicubic", "bicubik"))
    with pytest.raises(ValueError, match="unknown rescaler 'comcnn': no step 'comcnn-x2'"):
        get_preset("rescale-webp", rescalers="comcnn")  # a step, but not a -x2/-x4 family
    with pytest.raises(ValueError, match="give at least one rescaler"):
        get_preset("rescale-jpeg", rescalers=())
    with pytest.raises(ValueError, match="a rescaler is a step family name"):
        get_preset("rescale-jpeg", rescalers=("bicubic", ""))


def test_split_rescale_label() -> None:
    assert split_rescale_label("bicubic-x2+jpeg") == ("bicubic", 2, "jpeg")
    assert split_rescale_label("lanczos-x4+webp:method=4") == ("lanczos", 4, "webp:method=4")
    # comcnn halves the size: its psnr_y_sr/ssim_y_sr use a 2-pixel border (Pipeline.multiple)
    assert split_rescale_label("comcnn+jpeg") == ("comcnn", 2, "jpeg")
    assert split_rescale_label("comcnn:weights=w.pt+jpeg") == ("comcnn:weights=w.pt", 2, "jpeg")
    assert split_rescale_label("bicubic-x2+lanczos-x2+jpeg") == ("bicubic-x2+lanczos-x2", 4, "jpeg")
    assert split_rescale_label("unregistered-step+jpeg") == ("unregistered-step", None, "jpeg")
    assert split_rescale_label("jpeg") == ("jpeg", None, "")


def _rows() -> pd.DataFrame:
    rows = []
    for ds, offset in (("set5", 0.0), ("set14", -2.0)):
        for codec, base in (("bicubic-x2+jpeg", 30.0), ("bicubic-x4+jpeg", 26.0)):
            for q, dq in ((30.0, 0.0), (90.0, 2.0)):
                for img, di in (("a", 0.5), ("b", -0.5)):
                    rows.append({"codec": codec, "quality": q, "image": img, "dataset": ds, "bpp": 0.5, "error": "",
                                 "psnr_y_sr": base + offset + dq + di, "ssim_y_sr": 0.8 + dq / 100 + di / 100})
    rows.append({"codec": "bicubic-x2+jpeg", "quality": 30.0, "image": "c", "dataset": "set5", "bpp": math.nan,
                 "error": "boom", "psnr_y_sr": math.nan, "ssim_y_sr": math.nan})
    return pd.DataFrame(rows)


def test_sr_table_means_and_layout() -> None:
    t = sr_table(_rows())
    r = t[(t.dataset == "set14") & (t.scale == 4) & (t.quality == 90)].iloc[0]
    assert r.psnr_y_sr == pytest.approx(26.0 - 2.0 + 2.0) and r.ssim_y_sr == pytest.approx(0.82) and r.n_images == 2
    assert r.psnr_y_sr_n == 2 and r.ssim_y_sr_n == 2 and r.left_out == ""
    # set5 x2: image c failed at q=30 (and has no q=90 job): both cells are over 2 of the row's 3 images
    r = t[(t.dataset == "set5") & (t.scale == 2) & (t.quality == 30)].iloc[0]
    assert (r.n_images, r.psnr_y_sr_n, r.ssim_y_sr_n) == (3, 2, 2) and r.left_out == "c: failed job (boom)"
    text = format_sr_table(_rows())
    lines = text.splitlines()
    assert lines[2] == "| dataset | method | scale | codec | q=30 | q=90 | images |"
    assert "| set5 | bicubic | x2 | jpeg | 30.00/.8000 (n=2) | 32.00/.8200 (n=2) | 3 |" in lines
    assert "- set5 bicubic x2 jpeg q=30: c: failed job (boom)" in lines
    assert "- set5 bicubic x2 jpeg q=90: c: no result at this quality" in lines
    assert "| set14 | bicubic | x4 | jpeg | 24.00/.8000 | 26.00/.8200 | 2 |" in lines
    with pytest.raises(ValueError, match="no psnr_y_sr"):
        sr_table(_rows().drop(columns=["psnr_y_sr"]))


def test_rescale_table_cli(tmp_path, capsys) -> None:
    rows = _rows().assign(rate_param="quality", width=10, height=10, bytes=1)
    for ds in ("set5", "set14"):  # one run directory per dataset, as `lcbench run --dataset` writes them
        (tmp_path / ds).mkdir()
        part = rows[rows.dataset == ds].assign(image=lambda d: ds + "/" + d.image)
        part.to_csv(tmp_path / ds / "results.csv", index=False)
    assert cli_main(["rescale-table", str(tmp_path / "set5"), str(tmp_path / "set14"), "--style", "text"]) == 0
    out = capsys.readouterr().out
    assert "set5     bicubic  x2     jpeg   30.00/.8000 (n=2)  32.00/.8200 (n=2)  3" in out
    assert "set14    bicubic  x4     jpeg   24.00/.8000        26.00/.8200        2" in out
    assert "- set5 bicubic x2 jpeg q=30: set5/c: failed job (boom)" in out
    assert cli_main(["rescale-table", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    plain = tmp_path / "plain"  # a run without rescaling pipelines: exit 2 naming the run
    plain.mkdir()
    rows[(rows.dataset == "set5") & (rows.codec == "bicubic-x2+jpeg")].assign(codec="jpeg").to_csv(
        plain / "results.csv", index=False)
    assert cli_main(["rescale-table", str(plain)]) == 2
    assert f"{plain}: no successful rescaling jobs" in capsys.readouterr().err


def _cell_rows(codec: str = "bicubic-x2+jpeg") -> list[dict]:
    """3 images x q=30, 70 with hand-picked values."""
    psnr = {("a", 30.0): 30.0, ("b", 30.0): 31.0, ("c", 30.0): 35.0, ("a", 70.0): 33.0, ("b", 70.0): 34.0,
            ("c", 70.0): 38.0}
    return [{"codec": codec, "quality": q, "image": img, "dataset": "set14", "bpp": 0.5, "error": "",
             "psnr_y_sr": v, "ssim_y_sr": v / 100} for (img, q), v in psnr.items()]


def test_sr_table_failed_job_is_counted_and_named() -> None:
    """The audit's repro: one image failed at q=70, so that cell is a mean over 2 of 3 images."""
    rows = _cell_rows()
    rows[5].update(error="RuntimeError: boom", psnr_y_sr=math.nan, ssim_y_sr=math.nan, bpp=math.nan)  # c @ q70
    t = sr_table(pd.DataFrame(rows))
    q70 = t[t.quality == 70].iloc[0]
    assert q70.psnr_y_sr == pytest.approx((33.0 + 34.0) / 2) and q70.psnr_y_sr_n == 2 and q70.n_images == 3
    lines = format_sr_table(pd.DataFrame(rows)).splitlines()
    assert "| set14 | bicubic | x2 | jpeg | 32.00/.3200 | 33.50/.3350 (n=2) | 3 |" in lines
    assert "- set14 bicubic x2 jpeg q=70: c: failed job (RuntimeError: boom)" in lines


def test_sr_table_keeps_psnr_when_only_ssim_is_nan() -> None:
    """ssim_plane is NaN on a region under 11 px; the image's PSNR still counts."""
    rows = _cell_rows()
    rows[2]["ssim_y_sr"] = math.nan  # c @ q30
    t = sr_table(pd.DataFrame(rows))
    q30 = t[t.quality == 30].iloc[0]
    assert q30.psnr_y_sr == pytest.approx((30.0 + 31.0 + 35.0) / 3) and q30.psnr_y_sr_n == 3
    assert q30.ssim_y_sr == pytest.approx((0.30 + 0.31) / 2) and q30.ssim_y_sr_n == 2
    lines = format_sr_table(pd.DataFrame(rows)).splitlines()
    assert "| set14 | bicubic | x2 | jpeg | 32.00/.3050 (n=3/2) | 35.00/.3500 | 3 |" in lines
    assert ("- set14 bicubic x2 jpeg q=30: c: ssim_y_sr: SSIM undefined: region under 11 px after the border crop"
            in lines)


def test_sr_metrics_on_tiny_image_feed_the_table() -> None:
    """End to end: 14x14 with a 2-pixel border leaves 10x10, too small for the 11x11 SSIM window."""
    img = photo("coffee", (14, 14))
    dec = create_codec("bicubic-x2+jpeg").decode(create_codec("bicubic-x2+jpeg").encode(img, 50))
    m = sr_metrics(img, dec, 2)
    assert math.isfinite(m["psnr_y_sr"]) and math.isnan(m["ssim_y_sr"])
    rows = _cell_rows()
    rows[0].update(psnr_y_sr=m["psnr_y_sr"], ssim_y_sr=m["ssim_y_sr"])  # a @ q30
    q30 = sr_table(pd.DataFrame(rows)).iloc[0]
    assert q30.psnr_y_sr == pytest.approx((m["psnr_y_sr"] + 31.0 + 35.0) / 3) and q30.ssim_y_sr_n == 2


def test_sr_table_comcnn_shows_its_border() -> None:
    t = format_sr_table(pd.DataFrame(_cell_rows("comcnn+jpeg")))
    assert "| set14 | comcnn | x2 | jpeg | 32.00/.3200 | 35.00/.3500 | 3 |" in t.splitlines()
    # a step not registered here: border unknown, said so rather than "-"
    t = format_sr_table(pd.DataFrame(_cell_rows("mystep+jpeg")))
    assert "| set14 | mystep | ? | jpeg | 32.00/.3200 | 35.00/.3500 | 3 |" in t.splitlines()
    assert "scale ?: border unknown for mystep+jpeg" in t


SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.parametrize("scale,published", [(2, (33.66, 0.9299)), (4, (28.42, 0.8104))])
def test_bicubic_set5_matches_published_bicubic_baseline(tmp_path, scale, published) -> None:
    """Uncompressed bicubic down/up on Set5 vs the SR literature's MATLAB bicubic baseline (Y, border S)."""
    if not (SHARED / "set5" / "baby.png").is_file():
        pytest.skip("shared Set5 copy not present")
    import lcbench

    df = lcbench.run([f"bicubic-x{scale}+png"], SHARED / "set5", out=tmp_path / "run", jobs=1, raise_on_failure=True)
    assert df["psnr_y_sr"].mean() == pytest.approx(published[0], abs=0.1)
    assert df["ssim_y_sr"].mean() == pytest.approx(published[1], abs=0.002)


def test_run_preset_cli_runs_protocol_grid_and_prints_papers_table(tmp_path, capsys) -> None:
    """`lcbench run --preset rescale-jpeg`: both scales x 5 qualities per image, and the SR table of those rows."""
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(photo(size=(67, 53))).save(data / "a.png")
    out = tmp_path / "run"
    assert cli_main(["run", "--preset", "rescale-jpeg", "--dataset", str(data), "--out", str(out), "-j", "1",
                     "--no-progress", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert sorted(df.codec.unique()) == ["bicubic-x2+jpeg", "bicubic-x4+jpeg"]
    assert sorted(df.quality.unique()) == [30, 50, 70, 80, 90] and len(df) == 10
    x2q50 = df[(df.codec == "bicubic-x2+jpeg") & (df.quality == 50)].iloc[0]
    cell = f"{x2q50.psnr_y_sr:.2f}/{x2q50.ssim_y_sr:.4f}".replace("/0.", "/.")
    row = next(line for line in printed.splitlines() if line.startswith("imgs") and " x2 " in line)
    assert row.split()[5] == cell  # dataset method scale codec q=30 q=50 ...
    # -q overrides the protocol's grid; an unknown preset is a clear error (exit 2)
    assert cli_main(["run", "--preset", "rescale-jpeg", "-q", "50", "--dataset", str(data), "--out",
                     str(tmp_path / "run2"), "-j", "1", "--no-progress", "--no-cache"]) == 0
    assert sorted(pd.read_csv(tmp_path / "run2" / "results.csv").quality.unique()) == [50]
    assert cli_main(["run", "--preset", "rescale-avif", "--dataset", str(data)]) == 2
    assert "rescale-avif" in capsys.readouterr().err


def _two_rate_params() -> pd.DataFrame:
    """One row, two images: a jpeg2000 grid point nominal_bpp=0.5 and a rate-matched target_bpp=0.5 with
    the same number but different results, and a quality point."""
    rows = []
    for rp, q, base in (("nominal_bpp", 0.5, 30.0), ("target_bpp", 0.5, 20.0), ("target_bpp", 0.25, 18.0),
                        ("quality", 30.0, 25.0)):
        for img, d in (("a", 1.0), ("b", -1.0)):
            rows.append({"codec": "bicubic-x2+jpeg2000", "rate_param": rp, "quality": q, "image": img,
                         "dataset": "set5", "bpp": 0.5, "error": "", "psnr_y_sr": base + d, "ssim_y_sr": base / 100})
    return pd.DataFrame(rows)


def test_sr_table_keeps_rate_params_apart() -> None:
    """Grouped by quality only, nominal_bpp=0.5 and target_bpp=0.5 were averaged into one `q=0.5` cell."""
    t = sr_table(_two_rate_params())
    assert list(zip(t.rate_param, t.quality, t.psnr_y_sr)) == [
        ("quality", 30.0, 25.0), ("nominal_bpp", 0.5, 30.0), ("target_bpp", 0.25, 18.0), ("target_bpp", 0.5, 20.0)]
    assert (t.n_images == 2).all() and (t.psnr_y_sr_n == 2).all()
    lines = format_sr_table(_two_rate_params()).splitlines()
    assert lines[2] == "| dataset | method | scale | codec | q=30 | nominal_bpp=0.5 | target_bpp=0.25 | target_bpp=0.5 | images |"
    # the fixture's target_bpp=0.25 jobs measured 0.5 bpp: the cell says so (it showed no sign of the miss)
    assert lines[4] == ("| set5 | bicubic | x2 | jpeg2000 | 25.00/.2500 | 30.00/.3000 | 18.00/.1800 [0.5 bpp] | "
                        "20.00/.2000 | 2 |")
    assert any(line.startswith("target_bpp=X: rate-matched (--target-bpp)") for line in lines)
    assert "- set5 bicubic x2 jpeg2000 target_bpp=0.25: 2 of 2 image(s) more than 10% off; mean 0.5 bpp" in lines
    assert list(t.n_off_target) == [0, 0, 2, 0]
    # a cell over fewer images is named by its own rate point
    df = _two_rate_params()
    df = df[~((df.rate_param == "target_bpp") & (df.quality == 0.5) & (df.image == "b"))]
    assert "- set5 bicubic x2 jpeg2000 target_bpp=0.5: b: no result at this target_bpp" in format_sr_table(df)
    assert "nominal_bpp=0.5 | " in format_sr_table(df) and "q=0.5" not in format_sr_table(df)


def test_rescale_table_of_a_grid_run_and_a_rate_matched_run(tmp_path, capsys) -> None:
    """The audit's repro: -q 30 then --target-bpp into one run directory showed `q=0.3 | q=0.5 | q=30`."""
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(photo(size=(67, 53))).save(data / "a.png")
    out = tmp_path / "run"
    common = ["--codecs", "bicubic-x2+jpeg", "--dataset", str(data), "--out", str(out), "-j", "1", "--no-progress",
              "--no-cache"]
    assert cli_main(["run", *common, "-q", "30"]) == 0
    assert cli_main(["run", *common, "--target-bpp", "1.5,2"]) == 0
    capsys.readouterr()
    df = pd.read_csv(out / "results.csv")
    assert cli_main(["rescale-table", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| dataset | method | scale | codec | q=30 | target_bpp=1.5 | target_bpp=2 | images |"

    def cell(rp: str, q: float) -> str:
        r = df[(df.rate_param == rp) & (df.quality == q)].iloc[0]
        return f"{r.psnr_y_sr:.2f}/{r.ssim_y_sr:.4f}".replace("/0.", "/.")

    assert lines[4] == f"| imgs | bicubic | x2 | jpeg | {cell('quality', 30)} | {cell('target_bpp', 1.5)} | " \
                       f"{cell('target_bpp', 2)} | 1 |"


def test_rescale_table_on_duplicate_and_plugin(tmp_path, capsys) -> None:
    """The error recommended --on-duplicate and the note "load its plugin": rescale-table had neither option."""
    rows = pd.DataFrame(_cell_rows()).assign(rate_param="quality", width=10, height=10, bytes=1)
    for name, shift in (("r1", 0.0), ("r2", 1.0)):
        (tmp_path / name).mkdir()
        rows.assign(psnr_y_sr=rows.psnr_y_sr + shift).to_csv(tmp_path / name / "results.csv", index=False)
    runs = [str(tmp_path / "r1"), str(tmp_path / "r2")]
    assert cli_main(["rescale-table", *runs]) == 2
    assert "(--on-duplicate first|last)" in capsys.readouterr().err
    assert cli_main(["rescale-table", *runs, "--on-duplicate", "last"]) == 0
    assert "| set14 | bicubic | x2 | jpeg | 33.00/.3200 | 36.00/.3500 | 3 |" in capsys.readouterr().out.splitlines()
    assert cli_main(["rescale-table", *runs, "--on-duplicate", "first"]) == 0
    assert "| set14 | bicubic | x2 | jpeg | 32.00/.3200 | 35.00/.3500 | 3 |" in capsys.readouterr().out.splitlines()
    # a plugin step without an -xS suffix: border unknown until --plugin loads it
    (tmp_path / "p").mkdir()
    pd.DataFrame(_cell_rows("rt-halve+jpeg")).to_csv(tmp_path / "p" / "results.csv", index=False)
    assert cli_main(["rescale-table", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "| set14 | rt-halve | ? | jpeg |" in out and "load its plugin: --plugin FILE.py" in out
    plugin = tmp_path / "rt_halve.py"
    plugin.write_text(
        "from lcbench.pipeline import Step, register_step\n"
        "@register_step\n"
        "class Halve(Step):\n"
        "    name = 'rt-halve'\n"
        "    scale = 2\n"
        "    def version(self): return '1'\n"
        "    def forward(self, image): return image[::2, ::2], b''\n"
        "    def inverse(self, image, side, height, width): return image.repeat(2, 0).repeat(2, 1)\n")
    assert cli_main(["rescale-table", str(tmp_path / "p"), "--plugin", str(plugin)]) == 0
    out = capsys.readouterr().out
    assert "| set14 | rt-halve | x2 | jpeg | 32.00/.3200 | 35.00/.3500 | 3 |" in out and "scale ?" not in out


def test_run_preset_with_target_bpp_rate_matches_the_preset_codecs(tmp_path, capsys) -> None:
    """--preset with --target-bpp failed with "do not combine it with -q/--quality" although no -q was given."""
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(photo(size=(67, 53))).save(data / "a.png")
    out = tmp_path / "run"
    assert cli_main(["run", "--preset", "rescale-jpeg", "--target-bpp", "1.5", "--dataset", str(data), "--out",
                     str(out), "-j", "1", "--no-progress", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert sorted(df.codec) == ["bicubic-x2+jpeg", "bicubic-x4+jpeg"]
    assert set(df.rate_param) == {"target_bpp"} and set(df.quality) == {1.5}  # the preset's grid is not used
    assert "target_bpp=1.5" in printed and "q=30" not in printed
    # the user's own -q with --target-bpp is still refused
    assert cli_main(["run", "--preset", "rescale-jpeg", "--target-bpp", "1.5", "-q", "30", "--dataset", str(data),
                     "--out", str(tmp_path / "run2"), "-j", "1", "--no-progress", "--no-cache"]) == 2
    assert "do not combine it with -q/--quality" in capsys.readouterr().err
