"""Learned codecs at device speed: encode/decode throughput, a full run's wall time, metric time.

    python benchmarks/learned_throughput.py [--device cpu|cuda] [--kodak DIR] [--batch-sizes 1,4]
                                            [--max-images N] [--threads N] [--json FILE]
    python benchmarks/learned_throughput.py --metrics [--device cpu|cuda] [--max-images N]

Default mode, on Kodak (default ../shared/datasets/kodak):
- importance_map (each shipped model), comcnn+jpeg and autoencoder (lowest and highest
  model): encode and decode throughput in
  images/s at each batch size (images of equal size share a batch), and for importance_map
  the share of that time spent in range coding (host) vs on the device;
- the device path as the runner runs it (``worker.run_device_jobs``, all models, metrics
  included) with and without range coding overlapped with device work;
- the full ``lcbench.run(["importance_map"], ...)`` wall time and the share of it spent in
  metrics (reference statistics + per-image metrics, timed by wrapping those functions).
``--metrics``: per-image time of lcbench.torch_metrics (float64 and float32 filtering) vs
lcbench.metrics on JPEG q50 decodes, with the largest SSIM/MS-SSIM difference to metrics.py.

Timing notes: CUDA work is synchronised before each clock read (the codec stages end with a
host copy; metrics end with one transfer). On a shared machine, say what else was running.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lcbench.images import load_image
from lcbench.registry import create_codec

DEFAULT_KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def batches_of(images: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    """Batches of equal-size images (Kodak has landscape and portrait ones), at most ``size`` each."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for im in images:
        by_shape.setdefault(im.shape, []).append(im)
    return [group[i:i + size] for group in by_shape.values() for i in range(0, len(group), size)]


def codec_throughput(codec: Any, rate: float, images: list[np.ndarray], batch_size: int,
                     device: str) -> dict[str, float]:
    """Images/s of encode_batch and decode_batch; for staged codecs also the host (range coding) share."""
    batches = batches_of(images, batch_size)
    codec.decode_batch(codec.encode_batch(batches[0][:1], rate))  # load the model, warm up kernels
    sync(device)
    enc = dec = host = 0.0
    staged = hasattr(codec, "encode_device")
    for batch in batches:
        if staged:  # the same work as encode_batch/decode_batch, timed per stage
            t0 = time.perf_counter()
            analysed = codec.encode_device(batch, rate)
            t1 = time.perf_counter()
            bitstreams, _ = codec.encode_host(analysed)
            t2 = time.perf_counter()
            parsed = codec.decode_host(bitstreams)
            t3 = time.perf_counter()
            codec.decode_device(parsed)
            sync(device)
            t4 = time.perf_counter()
            enc += t2 - t0
            dec += t4 - t2
            host += (t2 - t1) + (t3 - t2)
        else:
            t0 = time.perf_counter()
            bitstreams = codec.encode_batch(batch, rate)
            sync(device)
            t1 = time.perf_counter()
            codec.decode_batch(bitstreams)
            sync(device)
            t2 = time.perf_counter()
            enc += t1 - t0
            dec += t2 - t1
    n = len(images)
    out = {"enc_img_s": n / enc, "dec_img_s": n / dec}
    if staged:
        out["range_coding_share"] = host / (enc + dec)
    return out


@contextmanager
def timed(owner: Any, name: str, totals: dict[str, float], key: str) -> Iterator[None]:
    """Wrap ``owner.name`` so its calls add their duration to totals[key] (benchmark instrumentation)."""
    original = owner.__dict__[name]
    func = original.__func__ if isinstance(original, classmethod) else original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

    setattr(owner, name, classmethod(wrapper) if isinstance(original, classmethod) else wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def full_run(kodak: Path, device: str, max_images: int | None) -> dict[str, float]:
    """``lcbench.run(["importance_map"])`` wall time and the time spent in metrics within it."""
    import lcbench
    from lcbench import metrics, torch_metrics, worker

    worker._image_cache.clear()
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out, \
            timed(metrics.Reference, "of", totals, "metrics"), timed(worker, "compute_metrics", totals, "metrics"), \
            timed(torch_metrics.TorchReference, "of", totals, "metrics"), \
            timed(torch_metrics, "compute_metrics_batch", totals, "metrics"):
        t0 = time.perf_counter()
        df = lcbench.run(["importance_map"], str(kodak), out=out, device=device, max_images=max_images, use_cache=False,
                         image_glob="kodim*.png")
        sync(device)
        wall = time.perf_counter() - t0
    failed = int((df["error"] != "").sum())
    if failed:
        raise RuntimeError(f"{failed} jobs failed: {df.loc[df['error'] != '', 'error'].iloc[0]}")
    return {"jobs": len(df), "wall_s": wall, "metric_s": totals.get("metrics", 0.0),
            "metric_share": totals.get("metrics", 0.0) / wall, "backend": worker.metrics_backend_for(device)}


def device_path(kodak: Path, device: str, max_images: int | None, overlap: bool) -> float:
    """Wall time of worker.run_device_jobs (all shipped models, metrics included)."""
    from lcbench import store, worker
    from lcbench.dataset import folder_dataset, select_images
    from lcbench.jobs import plan_jobs

    dataset = select_images(folder_dataset(kodak), max_images=max_images, pattern="kodim*.png")
    codec = worker.get_codec("importance_map", device)
    jobs = plan_jobs([("importance_map", codec)], dataset)
    worker._image_cache.clear()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        for _ in worker.run_device_jobs(Path(out), "kodak", device, jobs, False, False, overlap=overlap):
            pass
        sync(device)
        wall = time.perf_counter() - t0
        store.close_writers()
    return wall


def metrics_mode(images: list[np.ndarray], device: str) -> list[dict[str, Any]]:
    from lcbench import metrics, torch_metrics

    jpeg = create_codec("jpeg")
    decoded = [jpeg.decode(jpeg.encode(im, 50)) for im in images]
    rows = []

    def per_image(make_ref: Callable[[np.ndarray], Any], compute: Callable[[Any, np.ndarray], Any]) -> tuple:
        make_ref(images[0]), compute(make_ref(images[0]), decoded[0])  # warm up (numba, kernels)
        sync(device)
        t_ref = t_img = 0.0
        values = []
        for im, dec in zip(images, decoded):
            t0 = time.perf_counter()
            ref = make_ref(im)
            sync(device)
            t1 = time.perf_counter()
            values.append(compute(ref, dec)[0])
            t2 = time.perf_counter()
            t_ref += t1 - t0
            t_img += t2 - t1
        return t_ref / len(images), t_img / len(images), values

    ref_s, img_s, cpu_values = per_image(metrics.Reference.of, metrics.compute_metrics)
    rows.append({"implementation": "metrics.py (CPU, streaming float32 kernel)", "ref_ms": 1e3 * ref_s, "image_ms": 1e3 * img_s,
                 "max_d_ssim": 0.0, "max_d_ms_ssim": 0.0, "max_d_psnr_y": 0.0})
    for dtype in (torch.float64, torch.float32):
        ref_s, img_s, values = per_image(lambda im: torch_metrics.TorchReference.of(im, device, dtype=dtype),
                                         torch_metrics.compute_metrics)

        def worst(k: str) -> float:
            return max(abs(a[k] - b[k]) for a, b in zip(values, cpu_values))

        rows.append({"implementation": f"torch_metrics on {device} ({str(dtype).replace('torch.', '')})",
                     "ref_ms": 1e3 * ref_s, "image_ms": 1e3 * img_s, "max_d_ssim": worst("ssim"),
                     "max_d_ms_ssim": worst("ms_ssim"), "max_d_psnr_y": worst("psnr_y")})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--kodak", default=str(DEFAULT_KODAK))
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--max-images", type=int, default=None, help="first N Kodak images (default: all 24)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--metrics", action="store_true", help="time torch_metrics vs metrics.py instead")
    ap.add_argument("--skip-run", action="store_true", help="codec throughput only (no device-path/full runs)")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    kodak = Path(args.kodak)
    files = sorted(kodak.glob("kodim*.png"))[: args.max_images]
    if not files:
        print(f"no kodim*.png under {kodak}", file=sys.stderr)
        return 2
    images = [load_image(f).pixels for f in files]
    machine = (f"{torch.cuda.get_device_name()}" if args.device == "cuda" else "cpu") + \
        f", torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"
    print(f"# {len(images)} Kodak images, device {args.device} ({machine})\n")
    report: dict[str, Any] = {"device": args.device, "machine": machine, "images": len(images)}

    if args.metrics:
        rows = metrics_mode(images, args.device)
        print_table(rows)
        report["metrics"] = rows
    else:
        rows = []
        imap = create_codec("importance_map", device=args.device)
        comcnn = create_codec("comcnn+jpeg", device=args.device)
        comcnn_rate = statistics.median(comcnn.default_rates)
        autoenc = create_codec("autoencoder", device=args.device)
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            for model in imap.default_rates:
                rows.append({"codec": f"importance_map model {model:g}", "batch": bs,
                             **codec_throughput(imap, model, images, bs, args.device)})
            rows.append({"codec": f"comcnn+jpeg q{comcnn_rate:g}", "batch": bs, "range_coding_share": float("nan"),
                         **codec_throughput(comcnn, comcnn_rate, images, bs, args.device)})
            for model in (min(autoenc.default_rates), max(autoenc.default_rates)):
                rows.append({"codec": f"autoencoder model {model:g}", "batch": bs, "range_coding_share": float("nan"),
                             **codec_throughput(autoenc, model, images, bs, args.device)})
        print_table(rows)
        report["throughput"] = rows
        if not args.skip_run:
            runs = []
            for overlap in (False, True):
                wall = device_path(kodak, args.device, args.max_images, overlap)
                runs.append({"device path (all models, metrics)": f"overlap={overlap}", "wall_s": wall,
                             "img_per_s": len(images) * len(imap.default_rates) / wall})
            print_table(runs)
            full = full_run(kodak, args.device, args.max_images)
            print_table([{"lcbench run --codecs importance_map": f"{full['jobs']} jobs", "wall_s": full["wall_s"],
                          "metric_s": full["metric_s"], "metric_share": full["metric_share"],
                          "metrics_backend": full["backend"]}])
            report["device_path"] = runs
            report["full_run"] = full
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
