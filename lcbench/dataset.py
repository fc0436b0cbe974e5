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


@dataclass
class Dataset:
    name: str
    root: Path
    images: list[ImageRef] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


SAMPLE_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png")


def sample_dataset() -> Dataset:
    """Natural RGB photos shipped inside scikit-image's wheel: needs no network, no cache."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    images = [ImageRef(Path(n).stem, root / n) for n in SAMPLE_IMAGES if (root / n).is_file()]
    if not images:
        raise DatasetError(f"the 'sample' dataset needs scikit-image's bundled images, none found in {root}")
    return Dataset("sample", root, images)


def folder_dataset(root: Path, name: str | None = None) -> Dataset:
    """Every image file under ``root`` (recursive), sorted by relative path; ids are those paths."""
    root = Path(root)
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    images = [ImageRef(_image_id(p.relative_to(root)), p) for p in files]
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return Dataset(name or root.name, root, images)


def _image_id(rel: Path) -> str:
    """kodim01.png -> kodim01; sub/a.png -> sub/a (stable across machines)."""
    return rel.with_suffix("").as_posix()


def resolve_dataset(name_or_path: str, *, download: bool = True) -> Dataset:
    """Resolve ``--dataset``: folder path, ``sample``, or a registered name."""
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        return folder_dataset(path)
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


def select_images(dataset: Dataset, *, max_images: int | None = None, pattern: str | None = None) -> Dataset:
    """Subset for quick runs: ids matching a glob, then the first ``max_images``."""
    images = dataset.images
    if pattern:
        images = [im for im in images if fnmatch.fnmatch(im.id, pattern) or fnmatch.fnmatch(im.path.name, pattern)]
        if not images:
            raise DatasetError(f"no image of dataset {dataset.name!r} matches {pattern!r}")
    if max_images is not None:
        if max_images < 1:
            raise DatasetError(f"--max-images must be >= 1, got {max_images}")
        images = images[:max_images]
    return Dataset(dataset.name, dataset.root, list(images))
