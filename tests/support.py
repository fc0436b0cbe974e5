"""Helpers that tests import (tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import numpy as np


def photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> np.ndarray:
    """A real RGB photo from scikit-image, optionally cropped to (height, width)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if size:
        h, w = size
        img = img[:h, :w]
    return np.ascontiguousarray(img[:, :, :3])
