"""The shipped-weights file: network weights, shape, entropy-model tables and training notes.

One ``torch.save`` dict of tensors and plain values, readable with
``torch.load(..., weights_only=True)`` (no pickled code). Network weights are stored as
float16 to keep files small and loaded as float32; the entropy model is integers only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lcbench.learned.model import ImportanceMapNet, ModelConfig
from lcbench.weights_file import half_state, load_state, read_checked, write_atomic
from lcbench.weights_file import sha256_of  # noqa: F401  (re-exported: older imports read it from here)

FORMAT = "lcbench-importance-map"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not an importance-map model; the message names it."""


def save(path: str | Path, model: ImportanceMapNet, entropy: dict[str, torch.Tensor] | None,
         meta: dict[str, Any]) -> None:
    write_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                        "state_dict": half_state(model), "entropy": entropy or {}, "meta": meta})


def read(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw dict; raises WeightsError with the file's name on any problem."""
    return read_checked(path, "importance_map", FORMAT, FORMAT_VERSION, WeightsError)


def load_model(path: str | Path) -> tuple[ImportanceMapNet, dict[str, torch.Tensor]]:
    """Weights file -> (float32 network in eval mode, entropy-model tables)."""
    blob = read(path)
    try:
        model = ImportanceMapNet(ModelConfig.from_dict(blob["config"]))
        load_state(model, blob)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"importance_map weights file {path} does not match the network: {exc}") from exc
    model.eval()
    return model, entropy_tables(path, blob.get("entropy"))


def entropy_tables(path: str | Path, entropy: Any) -> dict[str, torch.Tensor]:
    """The file's ``entropy`` entry: a dict of integer tensors (empty when absent); anything else
    raises WeightsError naming the file and the entry."""
    if entropy is None:
        return {}
    if not isinstance(entropy, dict):
        raise WeightsError(f"importance_map weights file {path}: 'entropy' is a {type(entropy).__name__}, "
                           f"not a dict of entropy-model tables")
    for name, table in entropy.items():
        if not torch.is_tensor(table):
            raise WeightsError(f"importance_map weights file {path}: entropy table {name!r} is a "
                               f"{type(table).__name__}, not a tensor")
        if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
            raise WeightsError(f"importance_map weights file {path}: entropy table {name!r} is {table.dtype}, "
                               f"not integers")
    return dict(entropy)
