"""``lcbench.run(...)``: the same run as the CLI, from Python (notebooks), returning a DataFrame."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .dataset import Dataset
from .runner import RunOptions, execute


def run(codecs: Sequence[str] | str, dataset: str | Path | Dataset = "sample", *, out: str | Path | None = None,
        quality: float | str | Sequence[float] | Mapping[str, Sequence[float]] | None = None, jobs: int | None = None, device: str | None = None,
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
    ``df.attrs["lcbench"]`` says what the CLI prints beside its table: the run directory, jobs
    planned, reused, served from the cache and failed, the files under the dataset folder not
    benchmarked (with why), and rows left out of results.csv as measured by an older version.
    """
    if isinstance(codecs, str):
        codecs = [c.strip() for c in codecs.split(",") if c.strip()]
    codecs = list(codecs)
    if not codecs:
        raise ValueError("codecs: no codec given")
    per_codec: dict[str, tuple[float, ...]] = {}
    every = None
    if isinstance(quality, Mapping):
        if not quality:
            raise ValueError("quality: an empty mapping (leave it out for the codecs' default grids)")
        per_codec = {str(k): _grid(v, f"quality[{k!r}]") for k, v in quality.items()}
    elif quality is not None:
        every = _grid(quality, "quality")
    options = RunOptions(
        codecs=codecs, dataset=dataset if isinstance(dataset, Dataset) else str(dataset),
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
    frame = outcome.frame
    # what the CLI prints beside the table, for a notebook: nothing left out without a word
    frame.attrs["lcbench"] = {
        "run_dir": str(outcome.run_dir), "planned": outcome.planned, "reused": outcome.skipped,
        "from_cache": outcome.from_cache, "failed": len(outcome.failures),
        "ignored_files": dict(outcome.ignored_reasons) or {p: "" for p in outcome.ignored},
        "rows_left_out_as_older": dict(outcome.old_version_rows)}
    return frame


def _grid(value, what: str) -> tuple[float, ...]:
    """A rate grid given as a number, a sequence of numbers, or the CLI's text ("5:95:5")."""
    from .rates import parse_rate_list

    if isinstance(value, str):
        return parse_rate_list(value)
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        grid = tuple(float(q) for q in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: expected numbers, got {value!r}") from exc
    if not grid:
        raise ValueError(f"{what}: an empty rate grid (leave it out for the codec's default grid)")
    return grid
