"""Dataset manifests: what a named test set is, where it comes from, and how to check a copy.

A manifest is a JSON file (``datasets/<name>.json``, installed as package ``lcbench_datasets``).
Checksums are of the decoded pixel array, ``sha256(numpy.asarray(PIL.Image.open(p)).tobytes())``,
so a copy re-encoded by another mirror still verifies; the file SHA-256 is kept beside it as a
fast path (an identical file needs no decoding).

Tests and users can add manifests at run time: ``register_manifest(path_or_manifest)``,
``unregister_manifest(name)``, or pass ``--dataset path/to/manifest.json``.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .dataset import DatasetError

FORMAT_VERSION = 1
SOURCE_KINDS = ("file", "zip", "tar")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(DatasetError):
    """A manifest is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Source:
    """One download: a single file, or an archive whose ``subdir`` holds the images."""

    url: str
    kind: str = "file"
    path: str | None = None  # file: where it goes in the dataset folder; archive: name to save it as (default: URL basename)
    subdir: str | None = None  # archive: folder holding the images, matched as a path suffix
    sha256: str | None = None  # of the downloaded file, when recorded
    size: int | None = None  # bytes of the downloaded file, when recorded
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)

    @property
    def filename(self) -> str:
        return self.path or PurePosixPath(self.url.split("?", 1)[0]).name or "download"


@dataclass(frozen=True)
class ImageEntry:
    """One image of a set: its path in the dataset folder and what it must decode to."""

    path: str
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    bytes: int | None = None
    file_sha256: str | None = None
    pixels_sha256: str | None = None
    # SHA-256 of the HxWx3 uint8 array lcbench.images.load_image returns (what codecs and the
    # runner see); recorded only where it differs from pixels_sha256, i.e. for non-RGB files.
    rgb_sha256: str | None = None

    @property
    def loaded_sha256(self) -> str | None:
        """Hash of the pixels as loaded for a run (ImageRef.pixels_sha256), when known."""
        if self.rgb_sha256:
            return self.rgb_sha256
        # Only an 8-bit RGB file loads to exactly its raw array; with the mode unknown, say nothing
        # rather than give the runner a hash that a greyscale image would fail.
        return self.pixels_sha256 if self.mode == "RGB" else None

    @property
    def id(self) -> str:
        """kodim01.png -> kodim01, the same id a folder dataset gives the file."""
        return PurePosixPath(self.path).with_suffix("").as_posix()


@dataclass(frozen=True)
class DatasetManifest:
    name: str
    title: str
    image_count: int
    sources: tuple[Source, ...]
    images: tuple[ImageEntry, ...] = ()
    description: str = ""
    homepage: str = ""
    licence: str = ""
    image_sizes: str = ""
    download_bytes: int | None = None  # approximate, for `datasets list` before fetching
    checksums_note: str = ""
    citation: str = ""
    origin: str = "<memory>"  # file it was loaded from, for messages
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def has_pixel_checksums(self) -> bool:
        return bool(self.images) and all(im.pixels_sha256 for im in self.images)


# --------------------------------------------------------------------------- parsing


def _req(d: dict, key: str, typ: type | tuple, where: str) -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, typ):
        raise ManifestError(f"{where}: field {key!r} must be {_typename(typ)}, got {type(value).__name__}")
    return value


def _opt(d: dict, key: str, typ: type | tuple, where: str, default: Any = None) -> Any:
    value = d.get(key, default)
    if value is None or value is default:
        return value
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ManifestError(f"{where}: field {key!r} must be {_typename(typ)}, got {type(value).__name__}")
    return value


def _typename(typ: type | tuple) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _sha(value: str | None, where: str, key: str) -> str | None:
    if value is None:
        return None
    value = value.lower()
    if not _SHA_RE.match(value):
        raise ManifestError(f"{where}: {key} must be 64 hex digits (SHA-256), got {value!r}")
    return value


def check_relative_path(path: str, where: str) -> str:
    """A path inside the dataset folder: relative, forward slashes, no '..'."""
    p = PurePosixPath(path)
    if not path or "\\" in path or p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", path):
        raise ManifestError(f"{where}: path {path!r} must be relative, use '/', and not contain '..'")
    return p.as_posix()


def parse_manifest(data: dict[str, Any], origin: str = "<memory>") -> DatasetManifest:
    """Validate a manifest dict (as loaded from JSON); errors name ``origin`` and the field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: a manifest must be a JSON object")
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ManifestError(f"{origin}: format_version {version!r} not supported (this lcbench reads {FORMAT_VERSION})")
    name = _req(data, "name", str, origin)
    if not _NAME_RE.match(name):
        raise ManifestError(f"{origin}: name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    where = f"{origin} ({name})"
    count = _req(data, "image_count", int, where)
    if count < 1:
        raise ManifestError(f"{where}: image_count must be >= 1")

    sources = []
    for i, s in enumerate(_req(data, "sources", list, where)):
        sw = f"{where} sources[{i}]"
        if not isinstance(s, dict):
            raise ManifestError(f"{sw}: must be an object")
        kind = _opt(s, "kind", str, sw, "file") or "file"
        if kind not in SOURCE_KINDS:
            raise ManifestError(f"{sw}: kind {kind!r} must be one of {', '.join(SOURCE_KINDS)}")
        path = _opt(s, "path", str, sw)
        subdir = _opt(s, "subdir", str, sw)
        if path is not None:
            check_relative_path(path, sw)
        if subdir is not None:
            check_relative_path(subdir, sw)
        mirrors = _opt(s, "mirrors", list, sw) or []
        if not all(isinstance(m, str) for m in mirrors):
            raise ManifestError(f"{sw}: mirrors must be a list of URLs")
        sources.append(Source(
            url=_req(s, "url", str, sw), kind=kind, path=path, subdir=subdir,
            sha256=_sha(_opt(s, "sha256", str, sw), sw, "sha256"), size=_opt(s, "size", int, sw),
            mirrors=tuple(mirrors),
        ))
    if not sources:
        raise ManifestError(f"{where}: sources must list at least one download")

    images = []
    for i, im in enumerate(_opt(data, "images", list, where) or []):
        iw = f"{where} images[{i}]"
        if not isinstance(im, dict):
            raise ManifestError(f"{iw}: must be an object")
        images.append(ImageEntry(
            path=check_relative_path(_req(im, "path", str, iw), iw),
            width=_opt(im, "width", int, iw), height=_opt(im, "height", int, iw),
            mode=_opt(im, "mode", str, iw), bytes=_opt(im, "bytes", int, iw),
            file_sha256=_sha(_opt(im, "file_sha256", str, iw), iw, "file_sha256"),
            pixels_sha256=_sha(_opt(im, "pixels_sha256", str, iw), iw, "pixels_sha256"),
            rgb_sha256=_sha(_opt(im, "rgb_sha256", str, iw), iw, "rgb_sha256"),
        ))
    if images and len(images) != count:
        raise ManifestError(f"{where}: image_count is {count} but {len(images)} images are listed")
    with_pixels = [im.path for im in images if im.pixels_sha256]
    if with_pixels and len(with_pixels) != len(images):
        # a partial list made the whole set count-only: every recorded checksum was ignored
        missing = [im.path for im in images if not im.pixels_sha256]
        raise ManifestError(f"{where}: pixels_sha256 is recorded for {len(with_pixels)} of {len(images)} images "
                            f"(not for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); record it for "
                            f"every image (`lcbench datasets info NAME --record DIR` prints them) or for none")
    ids = [im.id for im in images]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ManifestError(f"{where}: image ids listed twice: {', '.join(dup)}")

    known = {"format_version", "name", "title", "image_count", "sources", "images", "description", "homepage",
             "licence", "image_sizes", "download_bytes", "checksums_note", "citation"}
    return DatasetManifest(
        name=name, title=_opt(data, "title", str, where) or name, image_count=count,
        sources=tuple(sources), images=tuple(images),
        description=_opt(data, "description", str, where) or "", homepage=_opt(data, "homepage", str, where) or "",
        licence=_opt(data, "licence", str, where) or "", image_sizes=_opt(data, "image_sizes", str, where) or "",
        download_bytes=_opt(data, "download_bytes", int, where),
        checksums_note=_opt(data, "checksums_note", str, where) or "",
        citation=_opt(data, "citation", str, where) or "", origin=origin,
        extra={k: v for k, v in data.items() if k not in known},
    )


def load_manifest(path: str | Path) -> DatasetManifest:
    """Read and validate one manifest file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read dataset manifest {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"dataset manifest {path} is not valid JSON: {exc}") from exc
    return parse_manifest(data, origin=str(path))


def manifest_to_dict(m: DatasetManifest) -> dict[str, Any]:
    """The JSON form of a manifest (inverse of ``parse_manifest``), without empty fields."""
    def clean(d: dict) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v not in (None, "", (), [])}

    out: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": m.name, "title": m.title,
                           "description": m.description, "homepage": m.homepage, "licence": m.licence,
                           "citation": m.citation, "image_count": m.image_count, "image_sizes": m.image_sizes,
                           "download_bytes": m.download_bytes, "checksums_note": m.checksums_note}
    out = clean(out)
    out["sources"] = [clean(s.__dict__) for s in m.sources]
    if m.images:
        out["images"] = [clean(im.__dict__) for im in m.images]
    out.update(m.extra)
    return out


# --------------------------------------------------------------------------- registry

_builtin: dict[str, DatasetManifest] | None = None
_registered: dict[str, DatasetManifest] = {}


def _builtin_manifests() -> dict[str, DatasetManifest]:
    """Manifests shipped in package ``lcbench_datasets``, read once (importlib.resources)."""
    global _builtin
    if _builtin is None:
        from importlib import resources

        found: dict[str, DatasetManifest] = {}
        root = resources.files("lcbench_datasets")
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".json"):
                continue
            origin = f"lcbench_datasets/{entry.name}"
            try:
                data = json.loads(entry.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"built-in dataset manifest {origin} is not valid JSON: {exc}") from exc
            m = parse_manifest(data, origin=origin)
            if m.name in found:
                raise ManifestError(f"dataset {m.name!r} is defined twice: {found[m.name].origin} and {origin}")
            found[m.name] = m
        _builtin = found
    return _builtin


def register_manifest(manifest: DatasetManifest | str | Path | dict, *, replace: bool = False) -> DatasetManifest:
    """Make a manifest resolvable by name (a DatasetManifest, a dict, or a path to a JSON file)."""
    if isinstance(manifest, dict):
        manifest = parse_manifest(manifest)
    elif not isinstance(manifest, DatasetManifest):
        manifest = load_manifest(manifest)
    existing = _registered.get(manifest.name) or _builtin_manifests().get(manifest.name)
    if existing is not None and not replace:
        raise ManifestError(f"dataset {manifest.name!r} is already defined by {existing.origin}; "
                            f"pass replace=True to override it")
    _registered[manifest.name] = manifest
    return manifest


def unregister_manifest(name: str) -> None:
    """Forget a manifest added with ``register_manifest`` (built-ins stay)."""
    _registered.pop(name, None)


def manifest_names() -> list[str]:
    return sorted(set(_builtin_manifests()) | set(_registered))


def all_manifests() -> list[DatasetManifest]:
    return [get_manifest(n) for n in manifest_names()]


def get_manifest(name: str) -> DatasetManifest:
    """The manifest for ``name``; an unknown name gets a 'did you mean' and the ways out."""
    if name in _registered:
        return _registered[name]
    builtin = _builtin_manifests()
    if name in builtin:
        return builtin[name]
    raise DatasetError(unknown_name_message(name, manifest_names()))


def unknown_name_message(name: str, names: Iterable[str], *, option: str | None = "--dataset") -> str:
    """``option="--dataset"``: for a run's dataset argument (a folder, a name or a manifest file);
    ``option=None``: for ``lcbench datasets ACTION NAME`` (a name or a manifest file only)."""
    names = list(names)
    close = difflib.get_close_matches(name.lower(), names + ["sample"], n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if option is None:
        return (f"{name!r} is not a known dataset name.{hint} Known names: {', '.join(names)} "
                f"(see `lcbench datasets list`), or a manifest file (NAME.json).")
    return (f"{option} {name!r}: no such folder and not a known dataset name.{hint} "
            f"Known names: sample, {', '.join(names)} (see `lcbench datasets list`); "
            f"or pass a folder of images, or a manifest file (NAME.json).")
