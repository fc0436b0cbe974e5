"""How long ``--dataset kodak`` takes to resolve from an LCBENCH_DATA mirror: cold, warm, full verify.

Target: a warm ``lcbench run`` on Kodak under 2 s in total, so resolution itself must stay well
under that. Run: ``python benchmarks/datasets_resolve.py [MIRROR_DIR]`` (default ../shared/datasets).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mirror", nargs="?", type=Path,
                    default=Path(__file__).resolve().parents[1].parent / "shared" / "datasets",
                    help="a folder holding kodak/ (default ../shared/datasets)")
    mirror = ap.parse_args().mirror
    if not (mirror / "kodak").is_dir():
        print(f"no kodak/ under {mirror}; pass the mirror folder", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LCBENCH_CACHE"] = cache
        os.environ["LCBENCH_DATA"] = str(mirror)
        from lcbench.dataset import resolve_dataset
        from lcbench.named_datasets import verify

        for label in ("cold (no verification records)", "warm (records: size+mtime)", "warm again"):
            t = time.perf_counter()
            ds = resolve_dataset("kodak")
            print(f"resolve kodak, {label:<32} {len(ds)} images  {1000 * (time.perf_counter() - t):7.1f} ms")
        t = time.perf_counter()
        report = verify("kodak")
        print(f"full verify (decode every image)        {report.checked} images  "
              f"{1000 * (time.perf_counter() - t):7.1f} ms  {'OK' if report.ok else report.problems}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
