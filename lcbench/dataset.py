"""``--dataset NAME_OR_PATH`` -> an ordered list of images with stable ids.

Resolution order: an existing folder (recursive, common image extensions, sorted);
the embedded offline set ``sample``; a registered named set (see ``lcbench.named_datasets``,
cache, $LCBENCH_DATA mirrors, download).
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from .images import IMAGE_EXTENSIONS


class DatasetError(RuntimeError):
    """A dataset could not be resolved; the message says which and how to fix it."""


@dataclass(frozen=True)
class ImageRef:
    """One image of a dataset: a stable id (path relative to the dataset root) and its file."""

    id: str
    path: Path
    pixels_sha256: str | None = None  # known in advance for manifest datasets
    shape: tuple[int, int] | None = None  # (height, width), known in advance for manifest datasets


@dataclass
class Dataset:
    name: str
    root: Path
    images: list[ImageRef] = field(default_factory=list)
    # files under a folder dataset's root that are not benchmarked (other extensions, lcbench
    # run directories, hidden files and folders, second links to a listed file or folder):
    # reported to the user, never skipped silently
    ignored: list[Path] = field(default_factory=list)
    ignored_reasons: dict[Path, str] = field(default_factory=dict)  # why each of ``ignored`` is

    def __len__(self) -> int:
        return len(self.images)


SAMPLE_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png")


def sample_dataset() -> Dataset:
    """Natural RGB photos shipped inside scikit-image's wheel: needs no network, no cache."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    missing = [n for n in SAMPLE_IMAGES if not (root / n).is_file()]
    if missing:  # a 'sample' of fewer images would be compared with the four-image one under one name
        raise DatasetError(f"the 'sample' dataset needs scikit-image's bundled images {', '.join(SAMPLE_IMAGES)}; "
                           f"{', '.join(missing)} not found in {root} (scikit-image {skimage.__version__})")
    return Dataset("sample", root, [ImageRef(Path(n).stem, root / n) for n in SAMPLE_IMAGES])


def is_run_directory(path: Path) -> bool:
    """An lcbench run directory (run.json + records/): its decoded PNGs are outputs, not sources."""
    return (path / "run.json").is_file() and (path / "records").is_dir()


def _walk(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """(image files, {file or folder not benchmarked: why}) under root, following symlinked
    folders once. A link to a file or folder that is also under root by its own path is not
    listed twice: the real path is kept (so ids do not depend on which name sorts first) and the
    link is ignored. Hidden files and folders are ignored, and said so."""
    images: list[Path] = []
    ignored: dict[Path, str] = {}
    root_real = os.path.realpath(root)

    def shown(path: str | Path) -> str:  # relative to root where it is under root
        for base in (root, root_real):
            try:
                return Path(path).relative_to(base).as_posix()
            except ValueError:
                pass
        return str(path)

    # folders under root by their own path (no link followed but root itself)
    real_dirs: set[str] = set()
    for dirpath, dirnames, _ in os.walk(root):
        real_dirs.add(os.path.realpath(dirpath))
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not is_run_directory(Path(dirpath) / d)]
    visited: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = os.path.realpath(here)
        if real in visited:  # a symlink loop, or two links to one folder outside root
            ignored[here] = f"symbolic link to a folder already listed as {shown(visited[real])}"
            dirnames[:] = []
            continue
        visited[real] = here
        keep = []
        for d in sorted(dirnames):
            p = here / d
            if d.startswith("."):
                ignored[p] = "hidden folder"
            elif is_run_directory(p):
                ignored[p] = "lcbench run directory"
            elif p.is_symlink() and os.path.realpath(p) in real_dirs:
                ignored[p] = (f"symbolic link to the folder {shown(os.path.realpath(p))}, whose images are "
                              "listed under their own path")
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            broken = p.is_symlink() and not p.exists()
            if f.startswith("."):
                ignored[p] = "hidden file"
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored[p] = "broken symbolic link" if broken else "not an image type lcbench reads"
            elif broken or p.is_file():  # a broken link is an unreadable image: its jobs fail, naming it
                images.append(p)
            else:
                ignored[p] = "not a regular file"
    # a file linked under a second name: keep the name with no link in it (else the first)
    by_target: dict[str, list[Path]] = {}
    for p in images:
        if p.exists():
            by_target.setdefault(os.path.realpath(p), []).append(p)
    for target, paths in by_target.items():
        if len(paths) > 1:
            direct = [p for p in paths if os.path.join(root_real, os.path.relpath(p, root)) == target]
            kept = (direct or sorted(paths))[0]
            for p in paths:
                if p != kept:
                    ignored[p] = f"symbolic link to {shown(kept)}, which is benchmarked under that name"
    images = [p for p in images if p not in ignored]
    return sorted(images), dict(sorted(ignored.items()))


def _utf8(text: str) -> bool:
    """False for a name that is not valid UTF-8 (undecodable bytes come as surrogates): it
    cannot be written to results.csv, and the run failed there after every job had run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def folder_dataset(root: Path, name: str | None = None) -> Dataset:
    """Every image file under ``root`` (recursive, symlinked folders followed), sorted by
    relative path; ids are those paths without extension, and must be unique."""
    root = Path(root)
    if is_run_directory(root):
        raise DatasetError(f"--dataset {root} is an lcbench run directory (results, not source images)")
    files, ignored = _walk(root)
    bad = [repr(os.fsencode(p.relative_to(root).as_posix())) for p in files
           if not _utf8(p.relative_to(root).as_posix())]
    if bad:
        raise DatasetError(f"dataset {root}: {len(bad)} image file name(s) are not valid UTF-8 ({', '.join(bad[:5])}"
                           f"{', ...' if len(bad) > 5 else ''}); an image's name is its id in results.csv, so "
                           "rename it (in UTF-8)")
    images = [ImageRef(_image_id(p.relative_to(root)), p) for p in files]
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    by_id: dict[str, list[Path]] = {}
    for im in images:
        by_id.setdefault(im.id, []).append(im.path)
    clashes = {i: ps for i, ps in by_id.items() if len(ps) > 1}
    if clashes:
        shown = "; ".join(f"{i}: {', '.join(p.name for p in ps)}" for i, ps in sorted(clashes.items())[:5])
        raise DatasetError(f"dataset {root}: {len(clashes)} image id(s) name more than one file ({shown}); "
                           "an image's id is its path without extension, so rename or move one of each")
    # the folder's own name, as given (a symlinked folder keeps its link's name); '.' and '..'
    # have none, so those take the name of the folder they stand for
    own = root.name if root.name not in ("", ".", "..") else root.resolve().name
    if name is None and not _utf8(own):
        raise DatasetError(f"dataset folder {root}: its name {os.fsencode(own)!r} is not valid UTF-8; it is the "
                           "dataset's name in results.csv, so rename it (in UTF-8)")
    return Dataset(name or own, root, images, list(ignored), ignored)


def _image_id(rel: Path) -> str:
    """kodim01.png -> kodim01; sub/a.png -> sub/a (stable across machines)."""
    return rel.with_suffix("").as_posix()


def resolve_dataset(name_or_path: str, *, download: bool = True) -> Dataset:
    """Resolve ``--dataset``: folder path, ``sample``, or a registered name."""
    if not name_or_path.strip():
        raise DatasetError("--dataset is empty: give a folder, 'sample' or a dataset name")
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        if _bare_name(name_or_path) and _is_named(name_or_path):
            # a folder ./kodak here would otherwise be benchmarked and labelled as the named set
            raise DatasetError(f"--dataset {name_or_path}: both a folder here ({path.resolve()}) and the named "
                               f"dataset {name_or_path!r}; write --dataset ./{name_or_path} for the folder, or "
                               f"run from another directory for the named set")
        checked = _checked_named_copy(path)
        return checked if checked is not None else folder_dataset(path)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DatasetError(f"--dataset {name_or_path}: is an image file, not a folder; give the folder that holds "
                           f"it (--dataset {path.parent}, with --images {path.name} for this image alone)")
    if name_or_path == "sample":
        return sample_dataset()
    try:
        from . import named_datasets
    except ImportError:
        named_datasets = None  # type: ignore[assignment]
    if named_datasets is not None and hasattr(named_datasets, "resolve_named"):
        return named_datasets.resolve_named(name_or_path, download=download)
    if path.exists():
        raise DatasetError(f"--dataset {name_or_path}: not a folder")
    raise DatasetError(f"--dataset {name_or_path!r}: no such folder and not a known dataset name (try 'sample')")


def _checked_named_copy(path: Path) -> Dataset | None:
    """A folder named like a named set (``/data/kodak``, as the docs suggest for offline use) is a
    copy of that set: checked against its manifest like ``--dataset kodak``, or refused. It was
    benchmarked unchecked under the set's name (a tampered, partial or mixed copy as "set5")."""
    name = path.resolve().name
    if not _is_named(name) or name == "sample":
        return None
    from . import cache
    from .named_datasets import _manifest_for
    from .verify import check_copy

    m = _manifest_for(name)
    report = check_copy(m, path, full=False, records=cache.VerificationRecords(m.name))
    if not report.ok:
        shown = "; ".join(report.problems[:5]) + (f"; ... ({len(report.problems)} in all)"
                                                  if len(report.problems) > 5 else "")
        raise DatasetError(f"--dataset {path}: a folder named {name!r} is taken as a copy of the dataset {name!r} "
                           f"and checked against its manifest ({m.origin}): {shown}. `lcbench datasets verify "
                           f"{name} --path {path}` lists every problem; to benchmark the folder as it is, give it "
                           f"another name")
    return report.dataset()


def _bare_name(text: str) -> bool:
    """A word like ``kodak``, not a path like ``./kodak``, ``~/kodak`` or ``data/kodak``."""
    return not (os.sep in text or (os.altsep and os.altsep in text) or text.startswith((".", "~")))


def _is_named(name: str) -> bool:
    if name == "sample":
        return True
    try:
        from .named_datasets import dataset_names
    except ImportError:
        return False
    return name in dataset_names()


def select_images(dataset: Dataset, *, max_images: int | None = None, pattern: str | None = None) -> Dataset:
    """Subset for quick runs: ids matching a glob (several separated by commas), then the first
    ``max_images``."""
    images = dataset.images
    if pattern:
        globs = [g.strip() for g in pattern.split(",") if g.strip()]
        images = [im for im in images
                  if any(fnmatch.fnmatch(im.id, g) or fnmatch.fnmatch(im.path.name, g) for g in globs)]
        if not images:
            raise DatasetError(f"no image of dataset {dataset.name!r} matches {pattern!r}")
    if max_images is not None:
        if max_images < 1:
            raise DatasetError(f"--max-images must be >= 1, got {max_images}")
        images = images[:max_images]
    return Dataset(dataset.name, dataset.root, list(images), dataset.ignored, dataset.ignored_reasons)
