"""Rescaling steps ``bicubic-xS`` and ``lanczos-xS`` (S = 2, 3, 4) for pipelines.

``bicubic-x2+jpeg``: shrink by S with the kernel, let the codec code the small image,
enlarge the decoded image by S with the same kernel. No side information.

Resampling is Pillow's, on float32 planes with one rounding at the end (lcbench.resample
says why Pillow rather than OpenCV and how it differs from MATLAB ``imresize``, which the
super-resolution papers use: same kernel (Keys, a = -0.5) and antialiasing on shrinking,
different border handling (Pillow renormalises truncated taps, MATLAB mirrors)).
Lanczos is Pillow's 3-lobe LANCZOS.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image

from lcbench.pipeline import Step, register_step
from lcbench.resample import resize_uint8

SCALES = (2, 3, 4)


class Rescale(Step):
    """Shrink by ``scale`` before the codec, enlarge by ``scale`` after it."""

    kernel: ClassVar[str]

    def version(self) -> str:
        return f"Pillow {Image.__version__} {self.kernel} float"

    def forward(self, image: np.ndarray) -> tuple[np.ndarray, bytes]:
        h, w = image.shape[:2]
        if h % self.scale or w % self.scale:
            raise ValueError(f"{self.name}: image {w}x{h} is not a multiple of {self.scale} (the pipeline pads it)")
        return resize_uint8(image, w // self.scale, h // self.scale, self.kernel), b""

    def inverse(self, image: np.ndarray, side: bytes, height: int, width: int) -> np.ndarray:
        if side:
            raise ValueError(f"{self.name}: unexpected {len(side)} bytes of side information")
        return resize_uint8(image, width, height, self.kernel)


def _make(kernel: str, scale: int) -> type[Rescale]:
    name = f"{kernel}-x{scale}"
    cls = type(name.replace("-", "_"), (Rescale,), {
        "name": name, "kernel": kernel, "scale": scale, "__module__": __name__,
        "description": f"{kernel} down x{scale} before the codec, {kernel} up x{scale} after it (Pillow)",
        "__doc__": f"{kernel.capitalize()} x{scale} down/up rescaling.",
    })
    return register_step(cls)


for _kernel in ("bicubic", "lanczos"):
    for _scale in SCALES:
        globals()[f"{_kernel.capitalize()}X{_scale}"] = _make(_kernel, _scale)
