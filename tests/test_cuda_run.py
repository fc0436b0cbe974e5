"""`lcbench run --device cuda` end to end, through the CLI, on a machine with a GPU (issue 8).

The unit tests of the device path call worker functions directly; this one runs what a user
runs, worker processes included, and checks what a --device cuda run records against the same
run on the CPU: the rate is counted from the bitstreams written, a CUDA bitstream decodes on
the CPU, and the metrics in results.csv are those of metrics.py on the decoded images saved.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lcbench import metrics, worker
from lcbench.cli import main
from lcbench.images import load_image
from lcbench.registry import create_codec
from support import photo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CODECS = "importance_map,autoencoder,comcnn+jpeg"


def _run(folder: Path, out: Path, device: str) -> pd.DataFrame:
    assert main(["run", "--codecs", CODECS, "--dataset", str(folder), "--out", str(out), "--device", device,
                 "--jobs", "2", "--save-bitstreams", "--save-decoded", "--no-progress"]) == 0
    return pd.read_csv(out / "results.csv").sort_values(["codec", "image", "quality"]).reset_index(drop=True)


def test_cuda_run_matches_cpu_run_and_its_own_files(image_folder: Path, tmp_path: Path) -> None:
    rows = {d: _run(image_folder, tmp_path / d, d) for d in ("cpu", "cuda")}
    cpu, gpu = rows["cpu"], rows["cuda"]
    assert len(gpu) == len(cpu) > 0 and gpu["error"].isna().all()
    assert gpu["codec_version"].str.endswith(" on cuda").all() and cpu["codec_version"].str.endswith(" on cpu").all()
    # floating point differs between devices, so the results may too, but only by a little
    assert np.allclose(gpu["bpp"], cpu["bpp"], rtol=0.02)
    assert np.allclose(gpu["psnr_rgb"], cpu["psnr_rgb"], atol=0.1)
    out = tmp_path / "cuda"
    for rec in gpu.itertuples():
        stem = worker.output_stem(rec.image, rec.quality)
        stream = out / "bitstreams" / worker.output_folder(rec.codec) / f"{stem}.bin"
        src = load_image(image_folder / f"{rec.image}.png").pixels
        # the rate is the bytes written, over the source's pixels
        assert rec.bytes == stream.stat().st_size
        assert rec.bpp == pytest.approx(8 * rec.bytes / (src.shape[0] * src.shape[1]))
        dec = np.asarray(Image.open(out / "decoded" / worker.output_folder(rec.codec) / f"{stem}.png"))
        values, _ = metrics.compute_metrics(metrics.Reference.of(src), dec)
        assert rec.mse_rgb == pytest.approx(values["mse_rgb"], rel=1e-12)
        assert rec.ms_ssim == pytest.approx(values["ms_ssim"], abs=1e-5)
        # a bitstream written on the GPU decodes on the CPU, to nearly the same pixels
        on_cpu = create_codec(rec.codec, device="cpu").decode(stream.read_bytes())
        assert np.abs(on_cpu.astype(int) - dec.astype(int)).max() <= 2


@pytest.mark.parametrize("model", ["importance_map", "autoencoder", "comcnn"])
def test_training_on_cuda_writes_weights_that_load_on_the_cpu(model: str, tmp_path: Path) -> None:
    """`lcbench train importance_map --device cuda` trained, then failed fitting its entropy model
    (CPU crops into a CUDA network); every trainer must finish and write a CPU-loadable file."""
    data = tmp_path / "train"
    data.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(photo(name)).save(data / f"{name}.png")
    out = tmp_path / "weights" / f"{model}_1.pt"
    out.parent.mkdir()
    extra = ["--rounds", "1"] if model == "comcnn" else []
    assert main(["train", model, "--data", str(data), "--out", str(out), "--steps", "4", "--batch", "2",
                 "--device", "cuda", *extra]) == 0
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in blob["state_dict"].values())
    # and it codes on the CPU, through the harness
    spec = f"comcnn:weights={out}+jpeg" if model == "comcnn" else f"{model}:weights_dir={out.parent}"
    codec = create_codec(spec, device="cpu")
    img = photo("astronaut", (64, 96))
    rate = 50 if model == "comcnn" else 1
    assert codec.decode(codec.encode(img, rate)).shape == img.shape
