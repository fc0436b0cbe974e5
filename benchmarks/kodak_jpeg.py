"""Kodak x jpeg at qualities 5..95 (456 jobs) with every metric: lcbench vs the codec work alone.

    python benchmarks/kodak_jpeg.py [--kodak DIR] [--jobs N] [--codecs jpeg] [--baseline]

Prints, for one cold run (fresh run directory) and one warm run (same directory again):
wall time, the time of the codec work alone (encode + decode of every job, in one process,
images preloaded; wall and CPU time, since libavif uses several threads) and the ratios to
it and to the codec-only limit (that work spread perfectly over the cores). ``--baseline`` also times the approach of a widely used
harness (a process pool where every job re-reads its image and computes MS-SSIM with
pytorch-msssim and PSNR with numpy; torch keeps its default thread count, as such harnesses
leave it), and checks that lcbench's numbers equal it. ``--baseline-threads 1`` gives the
baseline one torch thread per process, a stronger baseline than the harness itself.
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

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KODAK = REPO.parent / "shared" / "datasets" / "kodak"
QUALITIES = list(range(5, 100, 5))


def grid(codec) -> list[float]:
    """Qualities 5..95 for quality-like codecs, the codec's own grid otherwise (e.g. jpeg2000 target bpp)."""
    return [float(q) for q in QUALITIES] if codec.rate_param == "quality" else list(codec.default_rates)


def _cpu_seconds() -> float:
    """CPU time of this process, all its threads (some codecs, e.g. libavif, use several)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def codec_only_seconds(kodak: Path, codec_specs: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of encode + decode of every job in this process, images preloaded."""
    from PIL import Image

    from lcbench.registry import create_codec

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(kodak.glob("*.png"))]
    wall = cpu = 0.0
    for spec in codec_specs:
        codec = create_codec(spec)
        for q in grid(codec):
            for img in images:
                t, c = time.perf_counter(), _cpu_seconds()
                codec.decode(codec.encode(img, q))
                wall += time.perf_counter() - t
                cpu += _cpu_seconds() - c
    return wall, cpu


def lcbench_seconds(kodak: Path, out: Path, codecs: str, jobs: int | None) -> float:
    from lcbench.registry import create_codec

    cmd = [sys.executable, "-m", "lcbench.cli", "run", "--codecs", codecs, "--dataset", str(kodak), "--out", str(out),
           "--no-progress"]
    for spec in codecs.split(","):
        cmd += ["-q", f"{spec}={','.join(f'{q:g}' for q in grid(create_codec(spec)))}"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _baseline_job(args):
    """One job the way the widely used harness does it: read the image, code, metrics, per job."""
    import io

    import torch
    from PIL import Image
    from pytorch_msssim import ms_ssim

    path, q, threads = args
    if threads:
        torch.set_num_threads(threads)
    img = Image.open(path).convert("RGB")
    t = time.perf_counter()
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=q)
    rec = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    rec.load()
    codec_s = time.perf_counter() - t
    a, b = np.asarray(img).astype(np.float32), np.asarray(rec).astype(np.float32)
    mse = np.mean((a - b) ** 2)
    psnr = 20 * np.log10(255.0) - 10 * np.log10(mse)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b).permute(2, 0, 1)[None]
    msssim = ms_ssim(ta, tb, data_range=255.0).item()
    return Path(path).stem, q, len(buf.getvalue()) * 8 / (a.shape[0] * a.shape[1]), psnr, msssim, codec_s


def baseline_seconds(kodak: Path, jobs: int, threads: int | None) -> tuple[float, list]:
    from concurrent.futures import ProcessPoolExecutor

    work = [(str(p), q, threads) for q in QUALITIES for p in sorted(kodak.glob("*.png"))]
    t = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(_baseline_job, work))
    return time.perf_counter() - t, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=DEFAULT_KODAK)
    ap.add_argument("--codecs", default="jpeg")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--baseline-threads", type=int, default=None,
                    help="torch threads per baseline process (default: torch's default, as the harness runs)")
    args = ap.parse_args()
    if not (args.kodak / "kodim01.png").is_file():
        sys.exit(f"Kodak not found at {args.kodak} (use --kodak DIR)")
    specs = [c for c in args.codecs.split(",") if c]
    jobs = args.jobs or os.cpu_count()
    from lcbench.registry import create_codec

    from lcbench.dataset import folder_dataset

    n_images = len(folder_dataset(args.kodak).images)
    n_jobs = n_images * sum(len(grid(create_codec(s))) for s in specs)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LCBENCH_CACHE"] = str(Path(tmp) / "cache")  # cold means cold: a private result cache
        out = Path(tmp) / "run"
        cold = lcbench_seconds(args.kodak, out, args.codecs, args.jobs)
        warm = lcbench_seconds(args.kodak, out, args.codecs, args.jobs)
        import pandas as pd

        ours = pd.read_csv(out / "results.csv")
    codec_s, codec_cpu = codec_only_seconds(args.kodak, specs)
    cores = os.cpu_count() or 1
    ideal = max(codec_cpu / cores, codec_s / jobs)  # the codec work spread perfectly over the cores
    print(f"Kodak x {args.codecs} x {len(QUALITIES)} qualities = {n_jobs} jobs, all metrics, {jobs} workers, "
          f"{cores} cores")
    print(f"codec work alone (1 process): {codec_s:7.2f} s wall, {codec_cpu:.2f} s CPU "
          f"(the codec-only limit on {cores} cores: {ideal:.2f} s)")
    print(f"lcbench cold:                 {cold:7.2f} s   = {cold / codec_s:.2f} x the codec work, "
          f"{cold / ideal:.2f} x the codec-only limit")
    print(f"lcbench warm (all cached):    {warm:7.2f} s")
    if args.baseline and specs == ["jpeg"]:
        base_s, rows = baseline_seconds(args.kodak, jobs, args.baseline_threads)
        threads = args.baseline_threads or "default"
        print(f"baseline (pool, per-job image read, pytorch-msssim, torch threads {threads}): {base_s:7.2f} s; "
              f"lcbench cold = {cold / base_s:.3f} x baseline")
        ref = pd.DataFrame(rows, columns=["image", "quality", "bpp", "psnr_rgb", "ms_ssim", "codec_s"])
        merged = ours.merge(ref, on=["image", "quality"], suffixes=("", "_ref"))
        print(f"max |diff| vs baseline: bpp {np.abs(merged.bpp - merged.bpp_ref).max():.2e}, "
              f"PSNR {np.abs(merged.psnr_rgb - merged.psnr_rgb_ref).max():.2e} dB, "
              f"MS-SSIM {np.abs(merged.ms_ssim - merged.ms_ssim_ref).max():.2e} (the baseline computes in float32 "
              "with pytorch-msssim's float32 window; lcbench matches float64 references to 1e-7, tests/test_metrics.py)")


if __name__ == "__main__":
    main()
