"""The ComCNN/RecCNN weights file: one ``torch.save`` dict of tensors and plain values.

Readable with ``torch.load(..., weights_only=True)`` (no pickled code). Weights are stored
as float16 (small files) and loaded as float32. ``meta`` records how they were trained:
the codec in the loop, its quality set, the data folder, steps and seed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from lcbench.comcnn.model import ComRecPair, ModelConfig
from lcbench.learned.weights import torch_load_dict

FORMAT = "lcbench-comcnn"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not a ComCNN/RecCNN pair; the message names it."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(path: str | Path, model: ComRecPair, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().to(torch.float16) for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "state_dict": state, "meta": meta}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"ComCNN weights file {path} is missing")
    blob = torch_load_dict(path, "ComCNN", WeightsError)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a ComCNN weights file (format {FORMAT!r} expected)")
    if blob.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has ComCNN weights format version {blob.get('format_version')}, "
                           f"this lcbench reads version {FORMAT_VERSION}")
    return blob


def load(path: str | Path) -> tuple[ComRecPair, dict[str, Any]]:
    """Weights file -> (float32 pair in eval mode, training metadata)."""
    blob = read(path)
    try:
        model = ComRecPair(ModelConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"ComCNN weights file {path} does not match the networks: {exc}") from exc
    model.eval()
    return model, dict(blob.get("meta") or {})
