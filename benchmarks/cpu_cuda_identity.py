"""Do learned codecs give the same bytes and pixels on CPU and on CUDA?

    python benchmarks/cpu_cuda_identity.py [--kodak DIR] [--max-images N] [--codecs importance_map,autoencoder,comcnn+jpeg]

For each codec, rate point and image: encode on the CPU, decode that bitstream on the CPU and
on CUDA, and report how many pixels differ and by how much (the entropy-decoded code is the
same by construction; the synthesis network is floating point). Also encodes on CUDA and
says whether the bitstream equals the CPU one (a different one is still valid: it decodes
everywhere, but the rate may differ slightly). Then, on CUDA, whether a bitstream decodes to
the same pixels in a batch of all images as alone (on the CPU lcbench decodes one image at a
time because oneDNN's kernel choice depends on the batch size; on CUDA it batches). Prints
tables; exits 1 when no CUDA device is visible, so it cannot pass by skipping.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from lcbench.images import load_image
from lcbench.registry import create_codec

DEFAULT_KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"


def compare(spec: str, images: list[np.ndarray]) -> list[dict]:
    cpu, gpu = create_codec(spec, device="cpu"), create_codec(spec, device="cuda")
    rows = []
    for rate in cpu.default_rates:
        for k, img in enumerate(images):
            stream = cpu.encode(img, rate)
            a, b = cpu.decode(stream), gpu.decode(stream)
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            rows.append({"codec": spec, "rate": rate, "image": k, "bytes": len(stream),
                         "pixels_differing": int((diff > 0).sum()), "max_abs_diff": int(diff.max()),
                         "cuda_encode_same_bytes": gpu.encode(img, rate) == stream})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=DEFAULT_KODAK)
    ap.add_argument("--max-images", type=int, default=4)
    ap.add_argument("--codecs", default="importance_map,autoencoder,comcnn+jpeg")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible: this comparison needs one")
    paths = sorted(args.kodak.glob("*.png"))[: args.max_images]
    if not paths:
        sys.exit(f"no images in {args.kodak} (use --kodak DIR)")
    images = [load_image(p).pixels for p in paths]
    print(f"# {len(images)} Kodak images, {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"{'codec':<16} {'rate':>5} {'img':>4} {'bytes':>8} {'px differing':>13} {'max |diff|':>10}  cuda encode same bytes")
    total = 0
    for spec in [c for c in args.codecs.split(",") if c]:
        for r in compare(spec, images):
            total += r["pixels_differing"]
            print(f"{r['codec']:<16} {r['rate']:>5g} {r['image']:>4} {r['bytes']:>8} {r['pixels_differing']:>13} "
                  f"{r['max_abs_diff']:>10}  {r['cuda_encode_same_bytes']}")
    print(f"\ntotal differing pixel values: {total}")
    print(f"\n# CUDA: batch of all images vs one image alone (same bitstreams)")
    print(f"{'codec':<16} {'rate':>5} {'px differing':>13} {'max |diff|':>10}")
    for spec in [c for c in args.codecs.split(",") if c]:
        gpu = create_codec(spec, device="cuda")
        for rate in gpu.default_rates:
            streams = [gpu.encode(img, rate) for img in images]
            together = gpu.decode_batch(streams)
            alone = [gpu.decode_batch([s])[0] for s in streams]
            diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(together, alone)]
            print(f"{spec:<16} {rate:>5g} {sum(int((d > 0).sum()) for d in diffs):>13} "
                  f"{max(int(d.max()) for d in diffs):>10}")


if __name__ == "__main__":
    main()
