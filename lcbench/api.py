"""``lcbench.run(...)``: the same run as the CLI, from Python (notebooks), returning a DataFrame."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .dataset import Dataset
from .runner import RunOptions, execute


def run(codecs: Sequence[str] | str, dataset: str | Path | Dataset = "sample", *, out: str | Path | None = None,
        quality: Sequence[float] | Mapping[str, Sequence[float]] | None = None, jobs: int | None = None, device: str | None = None,
        max_images: int | None = None, image_glob: str | None = None, save_bitstreams: bool = False,
        save_decoded: bool = False, progress: bool = False, raise_on_failure: bool = False,
        target_bpp: Sequence[float] | None = None, backend: str = "loky", scheduler: str | None = None,
        use_cache: bool = True, metrics_backend: str | None = None):
    """Run codecs over a dataset and return the per-image results (pandas DataFrame).

    ``quality`` is one rate grid for every codec, or a mapping codec -> grid.
    Failed jobs appear as rows with an ``error`` message; pass ``raise_on_failure=True``
    to get an exception instead. ``metrics_backend`` ("torch", "cpu", "auto") says where
    learned codecs' metrics run (default: torch on cuda, cpu otherwise). Results are also written to ``out`` (default
    ``reports/<dataset>``), and a repeated call resumes from what is stored there.
    """
    if isinstance(codecs, str):
        codecs = [c for c in codecs.split(",") if c.strip()]
    per_codec = {k: tuple(float(q) for q in v) for k, v in quality.items()} if isinstance(quality, Mapping) else {}
    every = tuple(float(q) for q in quality) if quality is not None and not per_codec else None
    options = RunOptions(
        codecs=list(codecs), dataset=dataset if isinstance(dataset, Dataset) else str(dataset),
        out=Path(out) if out else None, rates=every, codec_rates=per_codec, jobs=jobs,
        device=device, max_images=max_images, image_glob=image_glob, save_bitstreams=save_bitstreams,
        save_decoded=save_decoded, progress=progress, backend=backend, scheduler=scheduler, use_cache=use_cache,
        metrics_backend=metrics_backend,
        target_bpp=tuple(float(t) for t in target_bpp) if target_bpp else None, command_line=f"lcbench.run(codecs={list(codecs)!r}, ...)",
    )
    outcome = execute(options)
    if raise_on_failure and outcome.failures:
        first = outcome.failures[0]["error"]
        raise RuntimeError(f"{len(outcome.failures)} job(s) failed; first: {first}")
    return outcome.frame
