"""``lcbench.run(...)``: the same run as the CLI, from Python (notebooks), returning a DataFrame."""
from __future__ import annotations

import hashlib
import inspect
import math
import numbers
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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
    _check_in_process_codecs(codecs, jobs, backend)
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


def _check_in_process_codecs(specs: Sequence[str], jobs: int | None, backend: str) -> None:
    """Codec (and pipeline step) classes defined in the calling script or notebook, not in a
    plugin file or an installed package, exist in this process only: worker processes, which
    load the built-in codecs, entry points and plugin files, failed every such task with
    "unknown codec" (and a warm cache hid it, so it looked flaky). They are refused up front
    when the run would use workers, and run here with jobs=1; those of a script, notebook or file
    loaded by path get their versions tagged with a hash of their source, as plugin files do, so
    an edited class is never served old results."""
    from .backends import _n_workers

    n = _n_workers(jobs)
    workers = ("backend='dask' runs it on Dask workers" if backend == "dask"
               else f"jobs={jobs!r} runs it in {n} worker processes" if n > 1 else "")
    for spec in specs:
        try:
            found, runs_here = _in_process_classes(spec)
        except (KeyError, ValueError, ImportError):
            continue  # an unknown codec or a bad spec: the run reports it, naming it
        if not found:
            continue
        if workers and not runs_here:
            cls = found[0]
            raise ValueError(
                f"codec {spec!r}: {cls.__qualname__} is defined in this process ({_where(cls)}), not in a plugin "
                f"file or an installed package, so lcbench's worker processes cannot load it ({workers}): pass "
                f"jobs=1 (and the default backend) to run it in this process, or put it in a file and pass "
                f"plugins=['that_file.py'] (worker processes load plugin files) to run it in parallel")
        for cls in found:
            if not _importable(cls):  # a module on sys.path is versioned by its version(), like a package
                _tag_source(cls)
        # this process's cached instances of the spec may be of an earlier definition of the class
        # (a notebook cell run again): they would encode with the old code
        from . import worker

        for cache in (worker._codec_cache, worker._decoder_cache):
            for key in [k for k in cache if k[0] == spec]:
                del cache[key]


def _in_process_classes(spec: str) -> tuple[list[type], bool]:
    """The classes of a codec spec (a pipeline's steps and inner codec) that only this process
    has, and whether the codec runs in this process anyway (learned codecs, on their device)."""
    from . import registry
    from .registry import parse_codec_spec

    name, _ = parse_codec_spec(spec)
    if "+" in name:
        from .pipeline import pipeline_class, split_pipeline_spec, steps

        step_specs, (inner, _) = split_pipeline_spec(name)
        entries = [steps.entry(n) for n, _ in step_specs] + [registry.codecs.entry(inner)]
        runs_here = bool(pipeline_class(name).uses_device)
    else:
        entries = [registry.codecs.entry(name)]
        runs_here = bool(getattr(entries[0].load(), "uses_device", False))
    found = [e.load() for e in entries if e.target is None and not _known_to_workers(e.load())]
    return found, runs_here


def _known_to_workers(cls: type) -> bool:
    """Whether a fresh worker process registers this class: built-ins, plugin files and entry
    points (also one whose module this process imported itself, registering it by decorator)."""
    from importlib.metadata import entry_points

    from .registry import loaded_plugins

    module = getattr(cls, "__module__", "") or ""
    if module.split(".")[0] in ("lcbench", "lcbench_codecs"):
        return True
    if getattr(sys.modules.get(module), "__file__", None) in dict(loaded_plugins()):
        return True
    for group in ("lcbench.codecs", "lcbench.steps"):
        for ep in entry_points(group=group):
            ep_module, _, attr = ep.value.partition(":")
            if (ep_module.strip(), attr.split("[")[0].strip()) == (module, cls.__qualname__):
                return True
    return False


def _importable(cls: type) -> bool:
    """Whether the class's module is one any process can import by name (on sys.path), unlike
    ``__main__`` (a script, a notebook) or a file loaded by path."""
    from importlib.machinery import PathFinder

    module = getattr(cls, "__module__", "") or "__main__"
    return module != "__main__" and PathFinder.find_spec(module.split(".")[0]) is not None


def _where(cls: type) -> str:
    try:
        return f"{Path(inspect.getsourcefile(cls) or '?').name}:{inspect.getsourcelines(cls)[1]}"
    except (OSError, TypeError):
        return f"module {cls.__module__}"


_SOURCE_TAG = re.compile(r" source-sha256:\S+")


def _tag_source(cls: type) -> None:
    """Append a hash of the class's source to its version(), as plugin files get the hash of the
    file: a user who edits the class but not its version() string must not be served the old
    code's results (run directory or result cache). The source is that of the class, its bases
    and the functions and classes of its module that its methods name (helpers); without
    source (code typed into ``python -c``) the tag is new in every process, so nothing is reused
    from another one. Computed once per class object: the code that runs is the one defined then."""
    if "_lcbench_source_sha256" in vars(cls):
        return
    digest = _source_digest(cls)
    original = getattr(cls, "version", None)
    if not callable(original):
        return
    bound = isinstance(inspect.getattr_static(cls, "version"), (classmethod, staticmethod))

    def version(self: Any, _original: Callable[..., str] = original, _bound: bool = bound) -> str:
        text = _original() if _bound else _original(self)
        # once, also when it calls (or inherits) the version() of a class tagged already: this
        # class's digest covers its bases
        return _SOURCE_TAG.sub("", text) + f" source-sha256:{digest}"

    cls._lcbench_source_sha256 = digest  # type: ignore[attr-defined]
    cls.version = version  # type: ignore[attr-defined]


def _source_digest(cls: type) -> str:
    """sha256 (12 hex digits) over the source of the class, its bases in its module, and the
    functions and classes of that module that their methods name. (A base in a plugin file or
    lcbench is versioned by its own version(), which the tagged one calls or inherits.)"""
    seen: set[int] = set()
    parts: list[str] = []
    todo: list[Any] = [c for c in cls.__mro__ if c.__module__ == cls.__module__]
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):
            return f"unhashed-{uuid.uuid4().hex[:12]}"  # no source: no reuse across processes
        functions = [obj] if inspect.isfunction(obj) else [
            f for v in vars(obj).values()
            for f in (getattr(v, "__func__", v), getattr(v, "fget", None), getattr(v, "fset", None))
            if inspect.isfunction(f)]
        for func in functions:
            for name in _names(func.__code__):
                ref = func.__globals__.get(name)
                if (inspect.isfunction(ref) or inspect.isclass(ref)) and ref.__module__ == obj.__module__:
                    todo.append(ref)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _names(code: Any) -> set[str]:
    """Global names a code object (and the functions and comprehensions inside it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names
