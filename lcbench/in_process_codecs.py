"""Codec classes defined in the calling process (a script, a notebook), not in a plugin file or
an installed package, for ``lcbench.run()``.

Worker processes load the built-in codecs, entry points and plugin files, so such a class is
unknown there: a run using workers is refused up front, naming the codec (it failed every task
with "unknown codec", and a warm cache hid it). With ``jobs=1`` it runs here, and its version is
tagged with a hash of its source, as plugin files are, so an edited class is never served the old
code's cached results.
"""
from __future__ import annotations

import hashlib
import inspect
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence


def check_in_process_codecs(specs: Sequence[str], jobs: int | None, backend: str) -> None:
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


_CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


def _source_digest(cls: type) -> str:
    """sha256 (12 hex digits) of the code a class runs. For a script or a file loaded by path, the
    whole file, as for plugin files (module constants and helpers included: a class that read an
    edited constant kept its tag). Otherwise (a notebook cell) the source of the class, or of its
    methods where the class's own is not available (Jupyter: inspect cannot find a class of
    ``__main__``), of its bases in its module and of the module's functions and classes its
    methods name, with the values of the plain constants they name. (A base in a plugin file or
    lcbench is versioned by its own version(), which the tagged one calls or inherits.)"""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        except OSError:
            pass
    seen: set[int] = set()
    parts: list[str] = []
    todo: list[Any] = [c for c in cls.__mro__ if c.__module__ == cls.__module__]
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        functions = [obj] if inspect.isfunction(obj) else [
            f for v in vars(obj).values()
            for f in (getattr(v, "__func__", v), getattr(v, "fget", None), getattr(v, "fset", None))
            if inspect.isfunction(f)]
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):
            try:  # a class in a notebook: its methods' sources (linecache has the cells) and plain attributes
                parts.append(obj.__qualname__)
                parts += [inspect.getsource(f) for f in functions]
                parts += [f"{k}={v!r}" for k, v in sorted(vars(obj).items())
                          if isinstance(v, _CONSTANT_TYPES) and not k.startswith("__")]
            except (OSError, TypeError):
                return f"unhashed-{uuid.uuid4().hex[:12]}"  # no source: no reuse across processes
        for func in functions:
            for name in sorted(_names(func.__code__)):
                ref = func.__globals__.get(name)
                if (inspect.isfunction(ref) or inspect.isclass(ref)) and ref.__module__ == obj.__module__:
                    todo.append(ref)
                elif isinstance(ref, _CONSTANT_TYPES):  # a module constant it reads (PAD = 7)
                    parts.append(f"{name}={ref!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _names(code: Any) -> set[str]:
    """Global names a code object (and the functions and comprehensions inside it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names
