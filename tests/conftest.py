"""Shared fixtures (helpers importable by tests live in support.py): real photos (scikit-image's bundled ones), the shared Kodak copy when present."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from support import photo

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture
def kodak_dir() -> Path:
    d = SHARED_DATASETS / "kodak"
    if not (d / "kodim01.png").is_file():
        pytest.skip("shared Kodak copy not present (../shared/datasets/kodak)")
    return d


@pytest.fixture
def set14_dir() -> Path:
    d = SHARED_DATASETS / "set14"
    if not d.is_dir():
        pytest.skip("shared Set14 copy not present")
    return d


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three small real-photo PNGs of different sizes (one odd-sized)."""
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(photo("astronaut", (192, 256))).save(d / "a.png")
    Image.fromarray(photo("coffee", (200, 300))).save(d / "b.png")
    Image.fromarray(photo("chelsea", (171, 233))).save(d / "c.png")
    return d


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test session gets its own $LCBENCH_CACHE: no results leak in from earlier runs."""
    import os

    old = os.environ.get("LCBENCH_CACHE")
    os.environ["LCBENCH_CACHE"] = str(tmp_path_factory.mktemp("lcbench-cache"))
    yield
    if old is None:
        os.environ.pop("LCBENCH_CACHE", None)
    else:
        os.environ["LCBENCH_CACHE"] = old
