"""Scaling: time vs images x rate points, and parallel efficiency of 1 vs 2 workers.

    python benchmarks/scaling.py [--images 250,500,1000] [--qualities 10:90:20] [--source DIR]

Builds a synthetic set of 512x512 crops (deterministic offsets) from a folder of large
photos (default: ../shared/datasets/train-wikipedia), runs `lcbench run --codecs jpeg`
cold with 1 and 2 workers for each size, and prints seconds, jobs/s and the speedup.
Time should grow linearly with images x rate points; 2 workers should give close to 2x.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "train-wikipedia"


def make_crops(source: Path, out: Path, n: int, size: int = 512, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(source.glob("*.png"))]
    photos = [p for p in photos if min(p.shape[:2]) >= size]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = photos[i % len(photos)]
        y = int(rng.integers(0, p.shape[0] - size + 1))
        x = int(rng.integers(0, p.shape[1] - size + 1))
        Image.fromarray(p[y:y + size, x:x + size]).save(out / f"crop{i:05d}.png", compress_level=1)


def timed_run(dataset: Path, out: Path, qualities: str, jobs: int, n_images: int) -> float:
    cmd = [sys.executable, "-m", "lcbench.cli", "run", "--codecs", "jpeg", "--dataset", str(dataset), "--out", str(out),
           "-q", qualities, "--jobs", str(jobs), "--max-images", str(n_images), "--no-progress", "--no-cache"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="250,500,1000")
    ap.add_argument("--qualities", default="10:90:20", help="rate grid (default 5 points)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = ap.parse_args()
    sizes = [int(s) for s in args.images.split(",")]
    from lcbench.rates import parse_rate_list

    n_q = len(parse_rate_list(args.qualities))
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops"
        make_crops(args.source, crops, max(sizes))
        print(f"{max(sizes)} crops of 512x512, jpeg x {n_q} rate points, all metrics, {os.cpu_count()} cores")
        print(f"{'images':>7} {'jobs':>7} {'1 worker s':>11} {'2 workers s':>12} {'jobs/s (2w)':>12} {'speedup':>8}")
        for n in sizes:
            t1 = timed_run(crops, Path(tmp) / f"r1-{n}", args.qualities, 1, n)
            t2 = timed_run(crops, Path(tmp) / f"r2-{n}", args.qualities, 2, n)
            jobs = n * n_q
            print(f"{n:>7} {jobs:>7} {t1:>11.2f} {t2:>12.2f} {jobs / t2:>12.1f} {t1 / t2:>8.2f}")


if __name__ == "__main__":
    main()
