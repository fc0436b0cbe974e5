"""lcbench.torch_metrics (metrics on the torch device) against lcbench.metrics, scikit-image and
pytorch-msssim; the learned-codec device path with the torch metrics backend and with/without
range coding overlapped. Runs on CPU torch; the CUDA-only test runs where a GPU is present.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from lcbench import metrics, torch_metrics, worker  # noqa: E402
from lcbench.dataset import folder_dataset  # noqa: E402
from lcbench.jobs import plan_jobs  # noqa: E402
from lcbench.registry import create_codec  # noqa: E402
from support import photo  # noqa: E402

SSIM_TOL = 1e-5   # issue 8's tolerance for SSIM and MS-SSIM
PSNR_TOL = 1e-6   # dB
EXACT_TOL = 1e-9  # float64 filtering against float64 references


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread for this module: on a shared 2-core machine torch's spinning worker
    threads make float64 convolutions ~6x slower (measured 83 s vs 14 s for this file)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def jpeg_versions(img: np.ndarray, qualities=(10, 50, 90)) -> list[np.ndarray]:
    jpeg = create_codec("jpeg")
    return [jpeg.decode(jpeg.encode(img, q)) for q in qualities]


def reference_values(img: np.ndarray, dec: np.ndarray) -> dict[str, float]:
    """Independent float64 references: numpy PSNRs, scikit-image SSIM, pytorch-msssim MS-SSIM."""
    from pytorch_msssim import ms_ssim
    from skimage.metrics import structural_similarity

    a, b = img.astype(np.float64), dec.astype(np.float64)
    luma = np.array([65.481, 128.553, 24.966]) / 255.0
    mse = np.mean((a - b) ** 2)
    mse_y = np.mean((16 + a @ luma - (16 + b @ luma)) ** 2)
    out = {"psnr_rgb": 10 * math.log10(255 ** 2 / mse), "psnr_y": 10 * math.log10(255 ** 2 / mse_y),
           "ssim": structural_similarity(img, dec, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255, channel_axis=-1)}
    if min(img.shape[:2]) > metrics.MS_SSIM_MIN_SIDE:
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].double()
        y = torch.from_numpy(np.array(dec)).permute(2, 0, 1)[None].double()
        # pytorch-msssim's own window is computed in float32 (its taps sum to 1 +- 1e-8, which
        # biases flat bright areas by ~1e-6); the float64 window makes it an exact reference.
        win = torch_metrics._gauss_1d(torch.float64, torch.device("cpu")).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        out["ms_ssim"] = float(ms_ssim(x, y, data_range=255, win=win))
        out["ms_ssim_default"] = float(ms_ssim(x.float(), y.float(), data_range=255))  # as harnesses call it
    return out


def check_against_everything(img: np.ndarray, decoded: list[np.ndarray]) -> None:
    tref = torch_metrics.TorchReference.of(img)
    cref = metrics.Reference.of(img)
    got = torch_metrics.compute_metrics_batch([tref] * len(decoded), decoded)
    for dec, (values, notes) in zip(decoded, got):
        cpu_values, cpu_notes = metrics.compute_metrics(cref, dec)
        assert list(values) == list(cpu_values) and notes == cpu_notes
        assert values["mse_rgb"] == cpu_values["mse_rgb"]  # exact integer sums on both sides
        for k in ("psnr_rgb", "psnr_y"):
            assert values[k] == pytest.approx(cpu_values[k], abs=PSNR_TOL)
        for k in ("ssim", "ms_ssim"):
            assert values[k] == pytest.approx(cpu_values[k], abs=SSIM_TOL, nan_ok=True)
        ref = reference_values(img, dec)
        assert values["psnr_rgb"] == pytest.approx(ref["psnr_rgb"], abs=PSNR_TOL)
        assert values["psnr_y"] == pytest.approx(ref["psnr_y"], abs=PSNR_TOL)
        assert values["ssim"] == pytest.approx(ref["ssim"], abs=EXACT_TOL)
        if "ms_ssim" in ref:
            assert values["ms_ssim"] == pytest.approx(ref["ms_ssim"], abs=EXACT_TOL)
            assert values["ms_ssim"] == pytest.approx(ref["ms_ssim_default"], abs=SSIM_TOL)
            assert values["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - ref["ms_ssim"]), rel=1e-6)
        else:
            assert math.isnan(values["ms_ssim"]) and math.isnan(values["ms_ssim_db"])


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_real_photos_match_cpu_skimage_and_pytorch_msssim(name: str) -> None:
    img = photo(name, (192, 256))  # crops: float64 filtering on a CPU is slow, and 5 scales need > 160 px
    check_against_everything(img, jpeg_versions(img))


@pytest.mark.parametrize("size", [(161, 203), (175, 169)])
def test_odd_sizes_pool_with_zero_padding_like_pytorch_msssim(size: tuple[int, int]) -> None:
    img = photo("chelsea", size)
    check_against_everything(img, jpeg_versions(img, (20, 80)))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, EXACT_TOL), (torch.float32, 1e-7)])
def test_kodak_saturated_sky_stays_exact(kodak_dir: Path, dtype: torch.dtype, tol: float) -> None:
    """kodim20's white sky as JPEG q5: filtering the decoded image itself in float32 was 1.3e-5
    off here (a bias shared by every flat pixel); filtering its difference from the source is
    within 4e-9 in float32 and exact to 1e-14 in float64."""
    from lcbench.images import load_image

    img = load_image(kodak_dir / "kodim20.png").pixels
    (dec,) = jpeg_versions(img, (5,))
    (values, _), = torch_metrics.compute_metrics_batch([torch_metrics.TorchReference.of(img, dtype=dtype)], [dec])
    ref = reference_values(img, dec)
    assert values["ssim"] == pytest.approx(ref["ssim"], abs=tol)
    assert values["ms_ssim"] == pytest.approx(ref["ms_ssim"], abs=tol)
    assert values["psnr_y"] == pytest.approx(ref["psnr_y"], abs=PSNR_TOL)


@pytest.mark.parametrize("level", [250, 128, 3])
def test_float32_keeps_precision_on_flat_images(level: int) -> None:
    img = np.full((200, 200, 3), level, np.uint8)
    dec = img.copy()
    dec[50:60, 50:60] += 1  # a small error on a flat image: the worst case for E[y^2] - mu^2
    (values, _), = torch_metrics.compute_metrics_batch([torch_metrics.TorchReference.of(img, dtype=torch.float32)],
                                                      [dec])
    ref = reference_values(img, dec)
    assert values["ssim"] == pytest.approx(ref["ssim"], abs=1e-7)
    assert values["ms_ssim"] == pytest.approx(ref["ms_ssim"], abs=1e-7)


@pytest.mark.parametrize("size", [(160, 300), (150, 171)])
def test_short_side_up_to_160_gives_nan_ms_ssim_and_the_same_note(size: tuple[int, int]) -> None:
    img = photo("astronaut", size)
    (dec,) = jpeg_versions(img, (30,))
    values, notes = torch_metrics.compute_metrics(torch_metrics.TorchReference.of(img), dec)
    cpu_values, cpu_notes = metrics.compute_metrics(metrics.Reference.of(img), dec)
    assert notes == cpu_notes == [f"ms_ssim needs a short side > 160 px, image is {size[1]}x{size[0]}"]
    assert math.isnan(values["ms_ssim"]) and math.isnan(values["ms_ssim_db"])
    assert values["ssim"] == pytest.approx(cpu_values["ssim"], abs=SSIM_TOL)
    assert values["ssim"] == pytest.approx(reference_values(img, dec)["ssim"], abs=EXACT_TOL)


def test_images_smaller_than_the_window_get_psnr_only() -> None:
    img = photo("coffee", (10, 40))
    dec = np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8)
    values, notes = torch_metrics.compute_metrics(torch_metrics.TorchReference.of(img), dec)
    cpu_values, cpu_notes = metrics.compute_metrics(metrics.Reference.of(img), dec)
    assert notes == cpu_notes and "ssim needs at least 11x11 px" in notes[0]
    assert values["psnr_rgb"] == pytest.approx(cpu_values["psnr_rgb"], abs=PSNR_TOL)
    assert math.isnan(values["ssim"]) and math.isnan(values["ms_ssim"])


def test_identical_images() -> None:
    img = photo("astronaut", (200, 240))
    values, notes = torch_metrics.compute_metrics(torch_metrics.TorchReference.of(img), img.copy())
    assert values["psnr_rgb"] == math.inf and values["psnr_y"] == math.inf
    assert values["mse_rgb"] == 0 and values["mse_y"] == 0
    assert values["ssim"] == pytest.approx(1.0, abs=1e-12) and values["ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert values["ms_ssim_db"] == math.inf  # ms_ssim >= 1 (float64 sums give exactly 1 here)
    cpu_values, cpu_notes = metrics.compute_metrics(metrics.Reference.of(img), img.copy())
    assert notes == cpu_notes == []
    assert cpu_values["ms_ssim_db"] == math.inf
    for k in ("ssim", "ms_ssim"):
        assert abs(cpu_values[k] - values[k]) < SSIM_TOL


def test_batch_tensor_input_equals_arrays_and_bad_shapes_raise() -> None:
    imgs = [photo("astronaut", (176, 200)), photo("coffee", (176, 200))]
    decs = [jpeg_versions(im, (40,))[0] for im in imgs]
    refs = [torch_metrics.TorchReference.of(im) for im in imgs]
    as_tensor = torch.from_numpy(np.stack(decs)).permute(0, 3, 1, 2)  # (B,3,H,W) uint8
    assert torch_metrics.compute_metrics_batch(refs, as_tensor) == torch_metrics.compute_metrics_batch(refs, decs)
    with pytest.raises(ValueError, match="decoded image 1 is uint8 \\(176, 199, 3\\)"):
        torch_metrics.compute_metrics_batch(refs, [decs[0], decs[1][:, :199]])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        torch_metrics.compute_metrics_batch(refs[:1], [decs[0].astype(np.float32)])
    with pytest.raises(ValueError, match="2 decoded images for 1 references"):
        torch_metrics.compute_metrics_batch(refs[:1], decs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu() -> None:
    img = photo("astronaut")
    decs = jpeg_versions(img)
    on_cpu = torch_metrics.compute_metrics_batch([torch_metrics.TorchReference.of(img)] * 3, decs)
    ref = torch_metrics.TorchReference.of(img, "cuda")
    on_gpu = torch_metrics.compute_metrics_batch([ref] * 3, [torch.from_numpy(d).cuda().permute(2, 0, 1) for d in decs])
    for (a, na), (b, nb) in zip(on_cpu, on_gpu):
        assert na == nb and a["mse_rgb"] == b["mse_rgb"]
        for k in ("psnr_rgb", "psnr_y", "ssim", "ms_ssim"):
            assert a[k] == pytest.approx(b[k], abs=EXACT_TOL)


def test_metrics_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(worker.METRICS_BACKEND_ENV, raising=False)
    assert worker.metrics_backend_for("cuda") == "torch" and worker.metrics_backend_for("cuda:1") == "torch"
    assert worker.metrics_backend_for("cpu") == "cpu"
    assert worker.metrics_backend_for("cpu", "torch") == "torch"
    monkeypatch.setenv(worker.METRICS_BACKEND_ENV, "torch")
    assert worker.metrics_backend_for("cpu") == "torch"
    with pytest.raises(ValueError, match="metrics backend 'gpu'"):
        worker.metrics_backend_for("cpu", "gpu")


# -- the learned-codec device path ----------------------------------------------------------------

@pytest.fixture(scope="module")
def device_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three equal-size photos (one batch), one odd-sized, one with a short side <= 160, one unreadable."""
    d = tmp_path_factory.mktemp("device_imgs")
    for i, name in enumerate(["astronaut", "coffee", "chelsea"]):
        Image.fromarray(photo(name, (176, 208))).save(d / f"eq{i}.png")
    Image.fromarray(photo("astronaut", (181, 227))).save(d / "odd.png")
    Image.fromarray(photo("coffee", (150, 171))).save(d / "small.png")
    (d / "broken.png").write_bytes(b"not a png")
    return d


def test_run_with_torch_metrics_backend_equals_cpu_backend(device_folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import lcbench

    import json

    from lcbench.cli import main

    monkeypatch.delenv(worker.METRICS_BACKEND_ENV, raising=False)
    frames = {"cpu": lcbench.run(["importance_map"], str(device_folder), out=tmp_path / "cpu", quality=[4],
                                 device="cpu", use_cache=False, metrics_backend="cpu")}
    # the torch backend on a CPU-only machine, chosen on the command line
    rc = main(["run", "--codecs", "importance_map", "--dataset", str(device_folder), "--out", str(tmp_path / "torch"),
               "-q", "4", "--device", "cpu", "--metrics-backend", "torch", "--no-cache", "--no-progress"])
    assert rc == 1  # broken.png fails (and is reported), everything else is computed
    assert json.loads((tmp_path / "torch" / "run.json").read_text())["metrics"]["learned_codecs_backend"] == "torch"
    assert json.loads((tmp_path / "cpu" / "run.json").read_text())["metrics"]["learned_codecs_backend"] == "cpu"
    from lcbench import store

    frames["torch"] = store.records_to_frame(store.read_records(tmp_path / "torch"))
    frames = {k: df.sort_values(["image", "quality"]).reset_index(drop=True) for k, df in frames.items()}
    cpu, tor = frames["cpu"], frames["torch"]
    assert len(cpu) == 6
    ok = cpu["error"] == ""
    assert ok.sum() == 5 and (tor["error"] == cpu["error"]).all()  # broken.png fails in both, same message
    assert (tor["bytes"][ok] == cpu["bytes"][ok]).all() and (tor["notes"] == cpu["notes"]).all()
    assert (tor["mse_rgb"][ok] == cpu["mse_rgb"][ok]).all()
    for k, tol in (("psnr_rgb", PSNR_TOL), ("psnr_y", PSNR_TOL), ("ssim", SSIM_TOL), ("ms_ssim", SSIM_TOL)):
        np.testing.assert_allclose(tor[k][ok], cpu[k][ok], atol=tol, rtol=0, equal_nan=True)
    small = cpu["image"] == "small"
    assert tor["ms_ssim"][small].isna().all() and tor["notes"][small].str.contains("short side > 160").all()
    assert tor["ms_ssim"][ok & ~small].between(0.5, 1).all()
    assert tor["notes"][cpu["image"] == "eq0"].str.contains("batch of 3").all()  # the three equal sizes ran batched


def test_overlapped_range_coding_changes_no_byte(device_folder: Path, tmp_path: Path) -> None:
    dataset = folder_dataset(device_folder)
    codec = create_codec("importance_map")
    jobs = [j for j in plan_jobs([("importance_map", codec)], dataset, rates=[2, 5]) if j.image.id != "broken"]
    runs = {}
    for overlap in (False, True):
        out = tmp_path / f"overlap{overlap}"
        out.mkdir()
        recs = [r for batch in worker.run_device_jobs(out, "t", "cpu", jobs, True, False, metrics_backend="cpu",
                                                      overlap=overlap) for r in batch]
        from lcbench import store

        store.close_writers()
        runs[overlap] = ({p.relative_to(out): p.read_bytes() for p in (out / "bitstreams").rglob("*.bin")},
                         {r["key"]: r for r in recs})
    files, recs = runs[True]
    assert len(files) == 10 and files == runs[False][0]
    for key, rec in recs.items():
        other = runs[False][1][key]
        assert rec["error"] == other["error"] == ""
        assert all(rec[k] == other[k] or (math.isnan(rec[k]) and math.isnan(other[k]))
                   for k in metrics.METRIC_NAMES + ("bytes", "est_bpp"))
    # and the batched, overlapped bitstreams are those of plain one-image encodes
    eq0 = np.asarray(Image.open(device_folder / "eq0.png").convert("RGB"))
    assert files[Path("bitstreams/importance_map/eq0@5.bin")] == codec.encode(eq0, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_path_pinned_overlapped_and_metrics_on_the_gpu(device_folder: Path, tmp_path: Path) -> None:
    """On a GPU: same bytes with and without overlap; GPU metrics equal metrics.py on the saved decodes."""
    from lcbench import store
    from lcbench.images import load_image

    dataset = folder_dataset(device_folder)
    codec = worker.get_codec("importance_map", "cuda")
    jobs = [j for j in plan_jobs([("importance_map", codec)], dataset, rates=[2, 5]) if j.image.id != "broken"]
    runs = {}
    for overlap in (False, True):
        out = tmp_path / f"overlap{overlap}"
        out.mkdir()
        recs = [r for batch in worker.run_device_jobs(out, "t", "cuda", jobs, True, True, overlap=overlap)
                for r in batch]
        store.close_writers()
        runs[overlap] = (out, {p.relative_to(out): p.read_bytes() for p in (out / "bitstreams").rglob("*.bin")}, recs)
    assert len(runs[True][1]) == 10 and runs[True][1] == runs[False][1]
    out, _, recs = runs[True]
    for rec in recs:
        assert rec["error"] == ""
        src = load_image(device_folder / f"{rec['image']}.png").pixels
        stem = worker.output_stem(rec["image"], rec["quality"])
        decoded = np.asarray(Image.open(out / "decoded" / worker.output_folder(rec["codec"]) / f"{stem}.png"))
        cpu_values, cpu_notes = metrics.compute_metrics(metrics.Reference.of(src), decoded)
        assert rec["mse_rgb"] == cpu_values["mse_rgb"]
        for k, tol in (("psnr_rgb", PSNR_TOL), ("psnr_y", PSNR_TOL), ("ssim", SSIM_TOL), ("ms_ssim", SSIM_TOL)):
            assert rec[k] == pytest.approx(cpu_values[k], abs=tol, nan_ok=True)
