"""``comcnn`` step: ComCNN before a standard codec, RecCNN after it (Jiang et al., TCSVT 2017).

``comcnn+jpeg``: ComCNN turns the image into a compact image of half width and height, the
codec codes it, and after decoding RecCNN restores the bicubic-upsampled (Pillow, float, as
in training) decoded image. The networks are reduced for CPU (lcbench.comcnn.model says how).

Weights: by default ``codecs/weights/comcnn_<inner codec name>.pt`` (shipped: ``jpeg``),
trained by ``lcbench train comcnn --codec jpeg`` with that codec in the loop; option
``weights=FILE`` uses another file (``comcnn:weights=my.pt+jpeg``). The version is the
weights file's sha256. Loaded with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lcbench.codec import Availability, Codec, CodecUnavailable
from lcbench.pipeline import Step, register_step
from lcbench.resample import resize_float, to_uint8

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_weights(codec_name: str) -> Path:
    return WEIGHTS_DIR / f"comcnn_{codec_name}.pt"


@register_step
class ComCNNStep(Step):
    """ComCNN (x1/2) before the codec, bicubic x2 + RecCNN residual after it."""

    name = "comcnn"
    scale = 2
    uses_device = True
    description = "Jiang et al. 2017 ComCNN/RecCNN around a standard codec (learned, reduced)"

    def __init__(self, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__()
        self.device = device
        if weights is not None and not str(weights).strip():
            # `comcnn:weights=+jpeg` would otherwise run the default weights under the label comcnn+jpeg
            raise ValueError("comcnn: option weights is empty; give a weights file (comcnn:weights=FILE+jpeg) "
                             "or leave the option out for the default weights of the inner codec")
        self.weights: Path | None = Path(str(weights)) if weights is not None else None
        if weights is not None:
            self.options["weights"] = str(weights)
        self._model: Any = None
        self._sha: str | None = None
        self._inner_name: str | None = None

    @classmethod
    def availability(cls) -> Availability:
        try:
            import torch  # noqa: F401
        except ImportError:
            return Availability.no("comcnn needs the Python package 'torch'", "pip install torch")
        return Availability.yes()

    def availability_here(self) -> Availability:
        """torch, and the weights file this step will load (after ``bind``: the inner codec's default
        ``comcnn_<codec>.pt`` unless ``weights=FILE`` was given) exists. Never raises."""
        avail = type(self).availability()
        if not avail:
            return avail
        missing = self._missing_weights()
        return Availability.no(*missing) if missing else Availability.yes()

    def _missing_weights(self) -> tuple[str, str] | None:
        """(reason, fix) when no weights file is chosen or it does not exist, else None."""
        if self.weights is None:
            return "no weights chosen", "use it inside a pipeline, e.g. comcnn+jpeg"
        if self.weights.is_file():
            return None
        codec = self._inner_name or "CODEC"
        shipped = sorted(p.stem[len("comcnn_"):] for p in WEIGHTS_DIR.glob("comcnn_*.pt"))
        reason = (f"weights file {self.weights} is missing (shipped weights exist for "
                  f"{', '.join(shipped) or 'no codec'} only: {', '.join(f'comcnn+{c}' for c in shipped) or '-'})")
        if "weights" in self.options:
            fix = f"check the path given as comcnn:weights=, or train weights with `lcbench train comcnn --codec {codec} ...`"
        else:
            fix = (f"train weights with `lcbench train comcnn --codec {codec} --data DIR --out {self.weights}`, "
                   f"or pass comcnn:weights=FILE")
        return reason, fix

    def bind(self, inner: Codec) -> None:
        """Pick the weights trained with the inner codec unless a file was given."""
        self._inner_name = inner.name
        if self.weights is None:
            self.weights = default_weights(inner.name)

    def _path(self) -> Path:
        missing = self._missing_weights()
        if missing:
            raise CodecUnavailable(f"comcnn: {missing[0]}; {missing[1]}")
        assert self.weights is not None
        return self.weights

    def version(self) -> str:
        """The weights file's sha256. The runner asks for it before any job runs, so the file is
        also checked here: a corrupt one is bad input naming the file (CodecUnavailable), not an
        error in every job."""
        from lcbench.comcnn.weights import WeightsError, load, sha256_of

        if self._sha is None:
            path = self._path()
            if self._model is None:
                try:
                    load(path)  # on the CPU, then dropped: _net() loads it onto the device when used
                except WeightsError as exc:
                    raise CodecUnavailable(f"comcnn: {exc}") from None
            self._sha = sha256_of(path)
        return f"weights-sha256:{self._sha}"

    def _net(self) -> Any:
        if self._model is None:
            from lcbench.comcnn.weights import WeightsError, load

            from lcbench.codec import CodecError
            from lcbench.comcnn.weights import sha256_of

            path = self._path()
            try:
                model, _ = load(path)
            except WeightsError as exc:
                raise CodecUnavailable(f"comcnn: {exc}") from exc
            sha = sha256_of(path)
            if self._sha is not None and sha != self._sha:  # results are filed under version()'s hash
                raise CodecError(f"comcnn: weights file {path} changed during the run (sha256 {self._sha[:12]} "
                                 f"when the run started, {sha[:12]} now); run again")
            self._model = model.to(self.device)
        return self._model

    def preload(self) -> None:
        """Load the network onto the device now (the runner does this before timing a job)."""
        self._net()

    def to(self, device: str) -> "ComCNNStep":
        self.device = device
        if self._model is not None:
            self._model.to(device)
        return self

    def _tensor(self, image: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)

    @staticmethod
    def _array(t: Any) -> np.ndarray:
        return t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0

    def forward(self, image: np.ndarray) -> tuple[np.ndarray, bytes]:
        import torch

        with torch.inference_mode():
            compact = self._net().com(self._tensor(image))
        return to_uint8(self._array(compact)), b""

    def inverse(self, image: np.ndarray, side: bytes, height: int, width: int) -> np.ndarray:
        import torch

        if side:
            raise ValueError(f"comcnn: unexpected {len(side)} bytes of side information")
        up = resize_float(image, width, height, "bicubic")  # the upsampler used in training
        with torch.inference_mode():
            restored = self._net().rec(self._tensor(up))
        return to_uint8(self._array(restored))
