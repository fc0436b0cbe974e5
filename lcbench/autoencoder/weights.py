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

from lcbench.autoencoder.model import AutoEncoder, ModelConfig
from lcbench.autoencoder.tables import EntropyTableError, EntropyTables, build_tables
from lcbench.weights_file import half_state, load_state, read_checked, torch_load_dict, write_atomic

FORMAT = "lcbench-autoencoder"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not an autoencoder model; the message names it."""


def save(path: str | Path, model: AutoEncoder, meta: dict[str, Any]) -> None:
    state = half_state(model)
    # Build the tables from the float16 weights that ship, not from the float32 training copy.
    shipped = AutoEncoder(model.config)
    load_state(shipped, {"state_dict": state})
    write_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                        "state_dict": state, "tables": build_tables(shipped.density), "meta": meta})


def load(path: str | Path) -> tuple[AutoEncoder, EntropyTables]:
    """Weights file -> (float32 network in eval mode, its integer entropy tables)."""
    blob = read_checked(path, "autoencoder", FORMAT, FORMAT_VERSION, WeightsError)
    try:
        model = AutoEncoder(ModelConfig.from_dict(blob["config"]))
        load_state(model, blob)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(f"autoencoder weights file {path} does not match the network: {exc}") from exc
    if "tables" not in blob:
        raise WeightsError(f"autoencoder weights file {path} has no entropy tables ('tables')")
    try:
        tables = EntropyTables(blob["tables"], model.config.latent)
    except EntropyTableError as exc:
        raise WeightsError(f"autoencoder weights file {path}: {exc}") from exc
    return model.eval(), tables


def meta_of(path: str | Path) -> dict[str, Any]:
    """Training notes stored in a weights file."""
    blob = torch_load_dict(Path(path), "autoencoder", WeightsError)
    return dict((blob.get("meta") if isinstance(blob, dict) else None) or {})
