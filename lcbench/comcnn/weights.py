"""The ComCNN/RecCNN weights file: one ``torch.save`` dict of tensors and plain values.

Readable with ``torch.load(..., weights_only=True)`` (no pickled code). Weights are stored
as float16 (small files) and loaded as float32. ``meta`` records how they were trained:
the codec in the loop, its quality set, the data folder, steps and seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lcbench.comcnn.model import ComRecPair, ModelConfig
from lcbench.weights_file import half_state, load_state, read_checked, write_atomic
from lcbench.weights_file import sha256_of  # noqa: F401  (the codec and trainer read it from here)

FORMAT = "lcbench-comcnn"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not a ComCNN/RecCNN pair; the message names it."""


def save(path: str | Path, model: ComRecPair, meta: dict[str, Any]) -> None:
    write_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                        "state_dict": half_state(model), "meta": meta})


def read(path: str | Path) -> dict[str, Any]:
    return read_checked(path, "ComCNN", FORMAT, FORMAT_VERSION, WeightsError)


def load(path: str | Path) -> tuple[ComRecPair, dict[str, Any]]:
    """Weights file -> (float32 pair in eval mode, training metadata)."""
    blob = read(path)
    try:
        model = ComRecPair(ModelConfig.from_dict(blob["config"]))
        load_state(model, blob)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"ComCNN weights file {path} does not match the networks: {exc}") from exc
    model.eval()
    return model, dict(blob.get("meta") or {})
