"""Kodak rate-distortion check of importance_map against JPEG (evaluation only, never training).

    python benchmarks/importance_map_kodak.py [--kodak DIR] [--weights-dir DIR] [--models 1,2,3]

Per model: mean real-bitstream bpp, PSNR-RGB, MS-SSIM (pytorch_msssim, data_range=255),
the model's own estimate, encode/decode seconds per image, a check that decoding again
gives the same pixels, and JPEG's MS-SSIM and PSNR at the same bpp (linear interpolation
on JPEG's mean curve over qualities 5..95; "n/a" outside JPEG's range).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lcbench.images import load_image
from lcbench.registry import create_codec

DEFAULT_KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from pytorch_msssim import ms_ssim as _ms_ssim

    ta = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].float()
    return float(_ms_ssim(ta, tb, data_range=255))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / mse)) if mse > 0 else float("inf")


def evaluate(codec, rate: float, images: list[np.ndarray]) -> dict:
    rows = []
    for im in images:
        t0 = time.perf_counter()
        data = codec.encode(im, rate)
        t1 = time.perf_counter()
        out = codec.decode(data)
        t2 = time.perf_counter()
        extra = codec.extra_columns()
        same = bool(np.array_equal(codec.decode(data), out)) if hasattr(codec, "last_estimate") else True
        rows.append({"bpp": 8 * len(data) / (im.shape[0] * im.shape[1]), "psnr": psnr(im, out),
                     "ms_ssim": ms_ssim(im, out), "enc_s": t1 - t0, "dec_s": t2 - t1, "same": same, **extra})
    keys = [k for k in rows[0] if k != "same"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    mean["all_redecode_identical"] = all(r["same"] for r in rows)
    return mean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", default=str(DEFAULT_KODAK))
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--models", default=None, help="comma-separated model ids (default: all present)")
    ap.add_argument("--jpeg-cache", default=None, help="JSON file to reuse/store JPEG's curve")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    files = sorted(Path(args.kodak).glob("kodim*.png"))
    if not files:
        print(f"no kodim*.png under {args.kodak}", file=sys.stderr)
        return 2
    images = [load_image(f).pixels for f in files]

    jpeg_curve = None
    if args.jpeg_cache and Path(args.jpeg_cache).is_file():
        jpeg_curve = json.loads(Path(args.jpeg_cache).read_text())
    if jpeg_curve is None:
        jpeg = create_codec("jpeg")
        jpeg_curve = [{"quality": q, **evaluate(jpeg, q, images)} for q in range(5, 100, 5)]
        if args.jpeg_cache:
            Path(args.jpeg_cache).write_text(json.dumps(jpeg_curve, indent=1))
    jb = np.array([r["bpp"] for r in jpeg_curve])
    order = np.argsort(jb)

    def jpeg_at(bpp: float, key: str) -> float | None:
        if bpp < jb[order][0] or bpp > jb[order][-1]:
            return None
        return float(np.interp(bpp, jb[order], np.array([r[key] for r in jpeg_curve])[order]))

    opts = {"weights_dir": args.weights_dir} if args.weights_dir else {}
    codec = create_codec("importance_map", **opts)
    ids = [int(x) for x in args.models.split(",")] if args.models else codec.model_ids()
    results = []
    print(f"{'model':>5} {'bpp':>7} {'est_bpp':>7} {'PSNR':>6} {'MS-SSIM':>8} {'JPEG MS-SSIM':>12} {'JPEG PSNR':>9} "
          f"{'enc s':>6} {'dec s':>6} same")
    for i in ids:
        r = {"model": i, **evaluate(codec, i, images)}
        r["jpeg_ms_ssim_at_bpp"] = jpeg_at(r["bpp"], "ms_ssim")
        r["jpeg_psnr_at_bpp"] = jpeg_at(r["bpp"], "psnr")
        results.append(r)
        js = "n/a" if r["jpeg_ms_ssim_at_bpp"] is None else f"{r['jpeg_ms_ssim_at_bpp']:.4f}"
        jp = "n/a" if r["jpeg_psnr_at_bpp"] is None else f"{r['jpeg_psnr_at_bpp']:.2f}"
        print(f"{i:>5} {r['bpp']:7.4f} {r.get('est_bpp', float('nan')):7.4f} {r['psnr']:6.2f} {r['ms_ssim']:8.4f} "
              f"{js:>12} {jp:>9} {r['enc_s']:6.2f} {r['dec_s']:6.2f} {r['all_redecode_identical']}", flush=True)
    print("JPEG curve (quality, bpp, PSNR, MS-SSIM): " + "; ".join(
        f"q{r['quality']} {r['bpp']:.3f} {r['psnr']:.2f} {r['ms_ssim']:.4f}" for r in jpeg_curve[:6]) + " ...")
    if args.json:
        Path(args.json).write_text(json.dumps({"importance_map": results, "jpeg": jpeg_curve}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
