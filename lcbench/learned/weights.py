"""The shipped-weights file: network weights, shape, entropy-model tables and training notes.

One ``torch.save`` dict of tensors and plain values, readable with
``torch.load(..., weights_only=True)`` (no pickled code). Network weights are stored as
float16 to keep files small and loaded as float32; the entropy model is integers only.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from lcbench.learned.model import ImportanceMapNet, ModelConfig

FORMAT = "lcbench-importance-map"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or not an importance-map model; the message names it."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words, without torch's advice to
    retry with ``weights_only=False`` (that runs pickled code, and garbage does not load either way)."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s*Please use `torch\.serialization|\n\s*\n\s*Check the "
                  r"documentation|$)", text, re.S)
    detail = m.group(1) if m else text
    detail = " ".join(s for s in re.split(r"(?<=\.)\s+", " ".join(detail.split()))
                      if "weights_only" not in s and "Re-running" not in s)
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def torch_load_dict(path: Path, what: str, error: type[Exception]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure raises ``error`` naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise error(f"{what} weights file {path} is corrupt or not a torch file, so not a valid weights "
                    f"file (torch.load: {load_reason(exc)})") from None


def save(path: str | Path, model: ImportanceMapNet, entropy: dict[str, torch.Tensor] | None,
         meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().to(torch.float16) for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "state_dict": state, "entropy": entropy or {}, "meta": meta}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def read(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw dict; raises WeightsError with the file's name on any problem."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"importance_map weights file {path} is missing")
    blob = torch_load_dict(path, "importance_map", WeightsError)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an importance_map weights file (format {FORMAT!r} expected)")
    if blob.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has weights format version {blob.get('format_version')}, "
                           f"this lcbench reads version {FORMAT_VERSION}")
    return blob


def load_model(path: str | Path) -> tuple[ImportanceMapNet, dict[str, torch.Tensor]]:
    """Weights file -> (float32 network in eval mode, entropy-model tables)."""
    blob = read(path)
    try:
        model = ImportanceMapNet(ModelConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"importance_map weights file {path} does not match the network: {exc}") from exc
    model.eval()
    return model, dict(blob.get("entropy") or {})
