"""Name -> codec class registry, after lm-evaluation-harness and timm.

Three sources, all ending in ``codecs.register``:
- built-in modules in ``lcbench_codecs`` (the repo's ``codecs/`` folder) register with
  the ``@register_codec`` decorator when imported;
- third-party distributions declare ``[project.entry-points."lcbench.codecs"]``
  ``name = "module:Class"``; entries are imported lazily on first use;
- ``--plugin path/to/file.py`` imports a one-file codec that uses the decorator.
"""
from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

# Built-in codec modules, imported on first use of the registry (cheap: heavy imports
# such as torch happen inside the codecs, not at module import).
BUILTIN_MODULES = (
    "lcbench_codecs.pillow_codecs",
    "lcbench_codecs.bpg",
    "lcbench_codecs.hevc",
    "lcbench_codecs.jpegxl",
    "lcbench_codecs.importance_map",
    "lcbench_codecs.autoencoder",
)
ENTRY_POINT_GROUP = "lcbench.codecs"
# Codec and step names become result labels, folder and file names (--save-bitstreams, the report's
# compressai/NAME.json) and parts of specs, so ASCII letters, digits, '_', '-', '.' only, and no
# leading '.' or '-' (a hidden file, ``../x``; a name read as a command-line option).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(kind: str, name: Any) -> None:
    """Raise ValueError unless ``name`` is a valid codec or step name."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} must be a non-empty string of ASCII letters, digits, '_', '-' "
                         "and '.', starting with a letter or digit (it becomes result labels, file names and "
                         "part of specs, where ':', '+', ',', '=', '*', '/' and spaces have other meanings)")


def settle_name(kind: str, key: str, cls: type) -> None:
    """The registered name and the class's ``name`` (what its results are labelled with) must agree:
    a class that only inherits ``name`` takes the registered one; one that sets its own other name
    is an error (``JpegOpt(JPEG)`` registered as jpeg_opt wrote its results as ``jpeg``)."""
    own = cls.__dict__.get("name")
    if own is None:
        cls.name = key  # type: ignore[attr-defined]
    elif own != key:
        raise ValueError(f"{kind} class {cls.__name__} sets name = {own!r} but is registered as {key!r}; its "
                         f"results would be labelled {own!r}: use one name for both")


def _split_target(target: str) -> tuple[str, str]:
    """``"module:attr [extras]"`` -> ("module", "attr")."""
    module, _, attr = target.partition(":")
    return module.strip(), attr.split("[")[0].strip()


def _resolve(module: types.ModuleType, attr: str) -> Any:
    obj: Any = module
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class UnknownNameError(KeyError):
    """An unknown registry name; the message suggests the closest ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass
class Entry(Generic[T]):
    name: str
    origin: str  # "file.py:line", "entry point from dist==1.0", ...
    obj: T | None = None
    target: str | None = None  # lazy "module:object"
    kind: str = "codec"
    # Checks a lazily loaded object (entry points): raises TypeError/ValueError saying what is wrong.
    check: Callable[[str, Any], None] | None = field(default=None, repr=False)
    error: str | None = None  # why this name cannot be used (e.g. claimed twice); load() raises it
    loading: bool = field(default=False, repr=False)  # its module is being imported right now

    def load(self) -> T:
        if self.error is not None:
            raise ValueError(self.error)
        if self.obj is None:
            assert self.target is not None
            what = f"cannot load {self.kind} {self.name!r} ({self.origin})"
            module, attr = _split_target(self.target)
            self.loading = True  # a decorator in the module registering this very name fills it in
            try:
                try:
                    mod = importlib.import_module(module)
                except Exception as exc:  # not only ImportError: a module that raises must be named too
                    raise ImportError(f"{what}: importing {module} raised {type(exc).__name__}: {exc}") from exc
                try:
                    obj = _resolve(mod, attr)
                except AttributeError:
                    raise ImportError(f"{what}: module {module} has no attribute {attr!r}") from None
                if self.obj is not None and self.obj is not obj:
                    raise ImportError(f"{what}: importing {module} registered another {self.kind} "
                                      f"({_origin_of(self.obj)}) under the same name")
                if self.check is not None:
                    try:
                        self.check(self.name, obj)
                    except (TypeError, ValueError) as exc:
                        raise ImportError(f"{what}: {exc}") from exc
                self.obj = obj
            except BaseException:
                self.obj = None  # nothing half-loaded is served by a later call
                raise
            finally:
                self.loading = False
        return self.obj


class Registry(Generic[T]):
    """A small generic registry with lazy entries, origins and 'did you mean' errors."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = (), entry_point_group: str | None = None,
                 check: Callable[[str, Any], None] | None = None):
        self.kind = kind
        self._check = check  # run on each entry point's object when it is loaded
        self._entries: dict[str, Entry[T]] = {}
        self._builtin_modules = builtin_modules
        self._entry_point_group = entry_point_group
        self._loaded = False
        self.import_errors: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, target: str | None = None, origin: str = "") -> None:
        check_name(self.kind, name)
        if name in self._entries:
            old = self._entries[name]
            if old.loading and old.obj is None and obj is not None:
                # the entry point's own module registering its class with the decorator too (the
                # README's pattern): the same codec, not a clash; Entry.load checks it is the target
                old.obj = obj
                return
            same = obj is not None and old.obj is not None and getattr(old.obj, "__qualname__", None) == getattr(
                obj, "__qualname__", None) and old.origin == origin
            if not same:  # re-importing the same module (e.g. a reloaded plugin) is harmless
                raise ValueError(f"{self.kind} {name!r} registered twice: {old.origin} and {origin}")
        self._entries[name] = Entry(name, origin, obj, target, kind=self.kind, check=self._check)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # a broken optional module must not hide the others
                self.import_errors[module] = f"{type(exc).__name__}: {exc}"
        if self._entry_point_group:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=self._entry_point_group):
            dist = getattr(ep, "dist", None)
            origin = f"entry point {ep.value} from {dist.name}=={dist.version}" if dist else f"entry point {ep.value}"
            old = self._entries.get(ep.name)
            if old is None:
                try:
                    self.register(ep.name, target=ep.value, origin=origin)
                except ValueError as exc:  # a bad name: listed, and an error when used, never dropped
                    self._entries[ep.name] = Entry(ep.name, origin, target=ep.value, kind=self.kind,
                                                   error=f"{self.kind} {ep.name!r} ({origin}): {exc}")
            elif old.target == ep.value or (old.obj is not None and self._is_imported(ep.value, old.obj)):
                continue  # the same object: a distribution seen twice, or its module imported (and registered) first
            else:
                # Neither may run under this name: whichever ran, the results would carry a label the
                # user may think is the other one (a package reusing 'jpeg' would otherwise be dropped
                # without a word, or run instead of the built-in). Listed by `lcbench codecs`.
                old.error = (old.error or f"{self.kind} {ep.name!r} is claimed twice: {old.origin}") + (
                    f" and {origin}; rename the entry point (built-in names are reserved) or uninstall "
                    f"{dist.name if dist else 'its distribution'}")

    @staticmethod
    def _is_imported(target: str, obj: Any) -> bool:
        """Whether the already imported ``module:attr`` of an entry point is ``obj``."""
        module, attr = _split_target(target)
        try:
            return module in sys.modules and _resolve(sys.modules[module], attr) is obj
        except AttributeError:
            return False

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class CodecRegistry(Registry[type]):
    """Codec names, plus pipeline specs (``bicubic-x2+jpeg``) whose classes lcbench.pipeline builds on request."""

    def entry(self, name: str) -> Entry[type]:
        if "+" in name:
            from .pipeline import pipeline_class

            return Entry(name, "lcbench.pipeline", pipeline_class(name))
        return super().entry(name)


def check_codec_class(key: str, c: Any) -> None:
    """What a codec class must be, checked when it is registered (``@register_codec``) or loaded
    (entry point): a mistake is then an error naming the codec, not a crash deep inside a run."""
    from .codec import MATCHED_RATE_PARAM, Codec

    if not (isinstance(c, type) and issubclass(c, Codec)):
        raise TypeError(f"{getattr(c, '__name__', c)!r} ({type(c).__name__}) is not a subclass of lcbench.Codec")
    settle_name("codec", key, c)
    what = f"codec {key!r} ({c.__name__})"
    if not isinstance(c.rate_param, str) or not c.rate_param:
        raise ValueError(f"{what}: rate_param {c.rate_param!r} must be a non-empty string such as 'quality'")
    if c.rate_param == MATCHED_RATE_PARAM:
        raise ValueError(f"{what} names its rate parameter {MATCHED_RATE_PARAM!r}, which is reserved for "
                         "--target-bpp rate matching; call it something else (jpeg2000 uses 'nominal_bpp')")
    rates = c.default_rates
    if not isinstance(rates, property):  # a grid computed per instance (ModelPerRateCodec) is checked when used
        if not (isinstance(rates, (tuple, list)) and all(_is_number(r) for r in rates)):
            raise ValueError(f"{what}: default_rates {rates!r} must be a tuple of finite numbers, e.g. (25, 50, 75), "
                             "or () for none")
    for attr in ("rate_range", "accepted_rates"):
        limits = getattr(c, attr)
        if limits is not None and not (isinstance(limits, (tuple, list)) and len(limits) == 2
                                       and all(_is_number(v) for v in limits) and limits[0] <= limits[1]):
            raise ValueError(f"{what}: {attr} {limits!r} must be None or (lo, hi), two numbers with lo <= hi")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


codecs: Registry[type] = CodecRegistry("codec", BUILTIN_MODULES, ENTRY_POINT_GROUP, check=check_codec_class)


def _origin_of(obj: Any) -> str:
    try:
        return f"{Path(inspect.getsourcefile(obj) or '?').name}:{inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return getattr(obj, "__module__", "?")


def register_codec(cls: type | None = None, *, name: str | None = None) -> Callable[[type], type] | type:
    """Class decorator: ``@register_codec`` registers under ``cls.name``; ``@register_codec(name=...)``
    under that name, which the class then carries (it must not set another ``name`` of its own)."""

    def wrap(c: type) -> type:
        key = name or getattr(c, "name", None)
        try:
            check_name("codec", key)
            check_codec_class(key, c)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"@register_codec: {exc}") from None
        codecs.register(key, c, origin=_origin_of(c))
        return c

    return wrap(cls) if cls is not None else wrap


# Plugins loaded in this process, in order: resolved path -> source text. Worker processes
# (loky, Dask) get this list with each task and load the same code before building codecs.
_plugins: dict[str, str] = {}


def load_plugin(path: str | Path) -> None:
    """Import a one-file codec plugin; its ``@register_codec`` classes join the registry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plugin file not found: {path}")
    if path.suffix != ".py":
        raise ImportError(f"cannot load plugin {path}: not a .py file")
    key = str(path.resolve())
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError(f"cannot read plugin {path}: {exc}") from exc
    if key in _plugins:
        if _plugins[key] != source:  # a notebook editing the file: its old code would run, silently
            raise ImportError(f"plugin {path} changed since this process loaded it; its codecs cannot be "
                              "registered again here: restart the Python process (the notebook's kernel) "
                              "to run the new code")
        return
    _exec_plugin(key, source)
    _plugins[key] = source


def loaded_plugins() -> tuple[tuple[str, str], ...]:
    """(path, source) of every plugin loaded here, for worker processes (``ensure_plugins``)."""
    return tuple(_plugins.items())


def ensure_plugins(plugins: tuple[tuple[str, str], ...]) -> None:
    """Load the main process's plugins into this (worker) process, from their source text, so a
    remote worker needs no copy of the file; each once per process."""
    for key, source in plugins:
        if key not in _plugins:
            _exec_plugin(key, source)
            _plugins[key] = source


def _exec_plugin(path: str, source: str) -> None:
    # built-ins first: a plugin that reuses a built-in name then fails here, naming both,
    # instead of taking the name and making the built-in module fail to load later. Steps too:
    # a plugin step named bicubic-x2 replaced the built-in one and gave its numbers under that label.
    from .pipeline import steps  # here: lcbench.pipeline imports this module

    codecs._ensure_loaded()
    steps._ensure_loaded()
    module_name = f"lcbench_plugin_{Path(path).stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except (Exception, SystemExit) as exc:  # SystemExit: a plugin calling sys.exit() must not end the run
        del sys.modules[module_name]
        raise ImportError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
    _tag_versions(module, hashlib.sha256(source.encode()).hexdigest()[:12], path)


def _tag_versions(module: types.ModuleType, digest: str, path: str = "") -> None:
    """Append the plugin source's hash to the version of every class it defines: a user who edits
    the plugin's code but not its version() string must not get the old code's cached results."""
    for obj in list(vars(module).values()):
        if not (isinstance(obj, type) and obj.__module__ == module.__name__):
            continue
        original = getattr(obj, "version", None)
        if not callable(original) or getattr(original, "_lcbench_plugin_source", None):
            continue  # no version, or inherited from a class of this plugin that is tagged already

        bound = isinstance(inspect.getattr_static(obj, "version"), (classmethod, staticmethod))

        def version(self: Any, _original: Callable[..., str] = original, _bound: bool = bound) -> str:
            text = _original() if _bound else _original(self)
            if not isinstance(text, str):  # not caught by .replace below: name the codec and file
                raise ValueError(f"{type(self).__name__} {getattr(self, 'name', '?')!r} (plugin {path}): "
                                 f"version() returned {text!r}, not a string (a library version or weights hash)")
            tag = f" plugin-sha256:{digest}"  # once, also when version() calls super().version()
            return text.replace(tag, "") + tag

        version._lcbench_plugin_source = digest  # type: ignore[attr-defined]
        obj.version = version  # type: ignore[attr-defined]


def parse_value(text: str) -> Any:
    """Option values from the command line: int, float, bool or string."""
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_codec_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"jpeg:subsampling=444:optimize=true"`` -> ("jpeg", {"subsampling": 444, "optimize": True}).

    A pipeline spec (``bicubic-x2+jpeg:subsampling=444``) is one name with no options here:
    lcbench.pipeline parses its parts.
    """
    if "+" in spec:
        return spec.strip(), {}
    name, *parts = spec.strip().split(":")
    options: dict[str, Any] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad option {part!r} in codec spec {spec!r}: expected key=value")
        options[key.strip()] = parse_value(value.strip())
    return name, options


def create_codec(spec: str, **runtime: Any) -> Any:
    """Build a codec object from a spec string. ``runtime`` (e.g. device) goes to learned codecs."""
    name, options = parse_codec_spec(spec)
    cls = codecs.get(name)
    if getattr(cls, "uses_device", False):
        options = {**runtime, **options}
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and name in str(exc):
            raise  # already names the codec
        raise ValueError(f"bad options for codec {name!r}: {exc}") from exc
