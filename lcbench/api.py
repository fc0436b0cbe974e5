"""``lcbench.run(...)``: the same run as the CLI, from Python (notebooks), returning a DataFrame."""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Mapping, Sequence

from .dataset import Dataset
from .runner import RunOptions, execute


def run(codecs: Sequence[str] | str, dataset: str | Path | Dataset = "sample", *, out: str | Path | None = None,
        quality: float | str | Sequence[float] | Mapping[str, Sequence[float]] | None = None, jobs: int | None = None, device: str | None = None,
        max_images: int | None = None, image_glob: str | None = None, save_bitstreams: bool = False,
        save_decoded: bool = False, progress: bool = False, raise_on_failure: bool = False,
        target_bpp: Sequence[float] | None = None, backend: str = "loky", scheduler: str | None = None,
        use_cache: bool = True, metrics_backend: str | None = None, plugins: Sequence[str | Path] = ()):
    """Run codecs over a dataset and return the per-image results (pandas DataFrame).

    ``quality`` is one rate grid for every codec, or a mapping codec -> grid; a rate point given
    twice is run once (as with ``-q``). ``target_bpp`` (rate matching) replaces the grid: giving
    both is an error. ``plugins`` are one-file codec plugins, loaded as ``--plugin`` loads them.
    A codec class defined in the calling script or notebook (not in a plugin file or an installed
    package) runs only with ``jobs=1``: worker processes cannot load it; its version is tagged with
    a hash of its source (``source-sha256:``), so an edited class is not served old results.
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
    targets = _grid(target_bpp, "target_bpp") if target_bpp is not None else None
    if targets:
        if quality is not None:  # it was dropped without a word: the CLI refuses -q with --target-bpp
            raise ValueError("target_bpp= replaces the rate grid: do not combine it with quality=")
        bad = [t for t in targets if not (math.isfinite(t) and t > 0)]
        if bad:
            raise ValueError(f"target_bpp={bad[0]:g}: a target rate must be a positive number of bits per pixel")
    _check_arguments(out, max_images, device, jobs, backend, scheduler)
    from .registry import load_plugin

    for plugin in plugins if not isinstance(plugins, (str, Path)) else [plugins]:
        load_plugin(plugin)
    from .in_process_codecs import check_in_process_codecs

    check_in_process_codecs(codecs, jobs, backend)
    options = RunOptions(
        codecs=codecs, dataset=dataset if isinstance(dataset, Dataset) else str(dataset),
        out=Path(out) if out else None, rates=every, codec_rates=per_codec, jobs=jobs,
        device=device, max_images=max_images, image_glob=image_glob, save_bitstreams=save_bitstreams,
        save_decoded=save_decoded, progress=progress, backend=backend, scheduler=scheduler, use_cache=use_cache,
        metrics_backend=metrics_backend,
        target_bpp=targets, command_line=f"lcbench.run(codecs={list(codecs)!r}, ...)",
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


def _check_arguments(out: str | Path | None, max_images: int | None, device: str | None, jobs: int | None,
                     backend: str, scheduler: str | None) -> None:
    """What the CLI checks of its options, named as this function's arguments, before anything runs."""
    if out is not None:  # a bare "[Errno 17] File exists" named no argument
        path = Path(out).absolute()
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    where = "is a file" if p == path else f"lies under the file {p}"
                    raise ValueError(f"out={str(out)!r}: {where}; give a folder for the run (created if missing)")
                break
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, numbers.Integral)
                                   or max_images < 1):
        raise ValueError(f"max_images={max_images!r}: must be a whole number >= 1 (or None for every image)")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral)):
        raise ValueError(f"jobs={jobs!r}: must be a whole number (None or 0: all cores; -1 too)")
    if backend not in ("loky", "dask"):
        raise ValueError(f"backend={backend!r}: use 'loky' (processes here) or 'dask'")
    if scheduler and backend == "dask" and jobs is not None:  # (without backend='dask' the run refuses scheduler=)
        import warnings

        warnings.warn("jobs= is ignored with scheduler=: the cluster's workers run the jobs (their number is set "
                      "where they are started: dask worker --nworkers N --nthreads 1)", stacklevel=3)
    if device is not None:
        from .runner import check_device

        try:
            check_device(device)
        except ValueError as exc:  # its messages name the CLI's option
            raise ValueError(str(exc).replace("--device ", "device=")) from None
