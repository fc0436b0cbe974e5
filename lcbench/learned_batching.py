"""Helpers every learned codec needs around its network: padding to the network's multiple,
batching images of equal padded size, and deterministic CPU synthesis."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np


def padded(n: int, multiple: int) -> int:
    """n rounded up to the multiple."""
    return -(-n // multiple) * multiple


def pad_image(image: np.ndarray, multiple: int) -> np.ndarray:
    """Replicate the last row/column up to the multiple (any size, even 1x1); crop back after decoding."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, padded(h, multiple) - h), (0, padded(w, multiple) - w), (0, 0)), mode="edge")


def group_by_padded_shape(shapes: Sequence[tuple[int, int]], multiple: int) -> dict[tuple[int, int], list[int]]:
    """Indices of images that share a padded size, so they can run as one batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(shapes):
        groups.setdefault((padded(h, multiple), padded(w, multiple)), []).append(i)
    return groups


@contextlib.contextmanager
def one_cpu_thread(device: str) -> Iterator[None]:
    """Synthesise on one CPU thread: float sums then run in one order whatever the process's
    thread setting, so a second process decodes identical pixels (with 2 or 4 threads, a few
    pixels of a Kodak image round the other way). No effect on other devices."""
    import torch

    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
