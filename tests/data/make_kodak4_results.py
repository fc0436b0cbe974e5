"""Regenerate tests/data/kodak4_results.csv: a small real results.csv for the report tests.

Real codecs (Pillow's jpeg, webp, jpeg2000, avif) on four Kodak images, metrics computed
independently of lcbench.metrics (numpy, scikit-image, pytorch-msssim), in the column
schema of ``lcbench run``. Run from the repo root:

    python tests/data/make_kodak4_results.py /work/shared/datasets/kodak
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_msssim import ms_ssim
from skimage.metrics import structural_similarity

from lcbench.registry import create_codec

IMAGES = ("kodim01", "kodim05", "kodim15", "kodim23")
RATES = {
    "jpeg": (10, 20, 30, 40, 50, 60, 75, 90),
    "webp": (10, 20, 30, 40, 50, 60, 75, 90),
    "avif": (20, 30, 40, 50, 60, 70, 80, 90),
    "jpeg2000": (0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0),
}


def luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255


def metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    mse_rgb = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    mse_y = float(np.mean((luma(a) - luma(b)) ** 2))
    ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1)
    ta = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].double()
    tb = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].double()
    ms = float(ms_ssim(ta, tb, data_range=255))
    return {"psnr_rgb": 10 * np.log10(255 ** 2 / mse_rgb), "psnr_y": 10 * np.log10(255 ** 2 / mse_y),
            "mse_rgb": mse_rgb, "mse_y": mse_y, "ssim": float(ssim), "ms_ssim": ms,
            "ms_ssim_db": -10 * np.log10(1 - ms)}


def main(kodak: Path, out: Path) -> None:
    torch.set_num_threads(1)
    rows = []
    for name, rates in RATES.items():
        codec = create_codec(name)
        for image_id in IMAGES:
            img = np.asarray(Image.open(kodak / f"{image_id}.png").convert("RGB"))
            h, w = img.shape[:2]
            for rate in rates:
                t0 = time.perf_counter()
                data = codec.encode(img, rate)
                t1 = time.perf_counter()
                dec = codec.decode(data)
                t2 = time.perf_counter()
                rows.append({"codec": codec.label(), "codec_version": codec.version(),
                             "rate_param": codec.rate_param, "quality": float(rate), "image": image_id,
                             "width": w, "height": h, "bytes": len(data), "bpp": 8 * len(data) / (w * h),
                             **metrics(img, dec), "enc_time_s": t1 - t0, "dec_time_s": t2 - t1,
                             "error": "", "notes": "", "dataset": "kodak", "key": f"{name}-{rate}-{image_id}"})
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/datasets/kodak"),
         Path(__file__).with_name("kodak4_results.csv"))
