"""Helpers every learned codec needs around its network: padding to the network's multiple,
batching images of equal padded size, and reproducible synthesis."""
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


def network_batches(shapes: Sequence[tuple[int, int]], multiple: int, device: str) -> list[list[int]]:
    """Indices of images that go through a network together.

    On CUDA, all images of one padded size (throughput). On the CPU, one image at a time:
    oneDNN picks its convolution kernel by batch size, so a bitstream decoded in a batch came
    out up to 1 off in a few pixels from the same bitstream decoded alone (in a fresh process,
    or with other images beside it), and an image's PSNR depended on its neighbours. One at a
    time costs nothing measurable on the CPU (0.39 s for four 512x768 decodes either way).
    """
    groups = group_by_padded_shape(shapes, multiple)
    if str(device).startswith("cuda"):
        return list(groups.values())
    return [[i] for idx in groups.values() for i in idx]


@contextlib.contextmanager
def reproducible_synthesis(device: str) -> Iterator[None]:
    """Run a decoder network so the same bitstream gives the same pixels every time.

    CPU: one thread, so float sums run in one order whatever the process's thread setting
    (with 2 or 4 threads, a few pixels of a Kodak image round the other way). CUDA: no TF32
    (on by default for cuDNN convolutions; its 10-bit mantissa moves many pixels) and
    deterministic cuDNN algorithms. CPU and CUDA still sum in different orders, so a pixel
    whose value lies within float32 rounding of .5 can differ by 1 between them; the decoded
    code (everything the entropy coder produces) is identical on both.
    """
    import torch

    if str(device).startswith("cuda"):
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved
        return
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
