"""The autoencoder's weights file: one ``torch.save`` dict of tensors and plain values.

    format, format_version     "lcbench-autoencoder", 1
    config                     ModelConfig as a dict
    state_dict                 network + density weights, float16 (small files), loaded as float32
    tables                     integer entropy tables (tables.py), built from exactly these weights
    meta                       how it was trained (lambda, steps, data folder, seed, seconds)

Readable with ``torch.load(..., weights_only=True)``: no pickled code runs on load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lcbench.autoencoder.model import AutoEncoder, ModelConfig
from lcbench.autoencoder.tables import EntropyTableError, EntropyTables, build_tables
from lcbench.learned.weights import torch_load_dict

FORMAT = "lcbench-autoencoder"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not an autoencoder model; the message names it."""


def save(path: str | Path, model: AutoEncoder, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().to(torch.float16) for k, v in model.state_dict().items()}
    # Build the tables from the float16 weights that ship, not from the float32 training copy.
    shipped = AutoEncoder(model.config)
    shipped.load_state_dict({k: v.float() for k, v in state.items()})
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "state_dict": state, "tables": build_tables(shipped.density), "meta": meta}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: readers never see half a file


def load(path: str | Path) -> tuple[AutoEncoder, EntropyTables]:
    """Weights file -> (float32 network in eval mode, its integer entropy tables)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"autoencoder weights file {path} is missing")
    blob = torch_load_dict(path, "autoencoder", WeightsError)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an autoencoder weights file (format {FORMAT!r} expected)")
    if blob.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has autoencoder weights format {blob.get('format_version')}, "
                           f"this lcbench reads {FORMAT_VERSION}")
    try:
        model = AutoEncoder(ModelConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
        tables = EntropyTables(blob["tables"], model.config.latent)
    except (KeyError, RuntimeError, TypeError, ValueError, EntropyTableError) as exc:
        raise WeightsError(f"autoencoder weights file {path} does not match the network: {exc}") from exc
    return model.eval(), tables


def meta_of(path: str | Path) -> dict[str, Any]:
    """Training notes stored in a weights file."""
    blob = torch_load_dict(Path(path), "autoencoder", WeightsError)
    return dict((blob.get("meta") if isinstance(blob, dict) else None) or {})
