"""The file every learned model ships in: one ``torch.save`` dict, read without pickled code.

Shared by importance_map, autoencoder and ComCNN/RecCNN. A file is a dict with ``format``
(which model), ``format_version``, ``config`` and ``state_dict`` (float16 to keep files small,
loaded as float32), plus what the model adds (entropy tables, training notes). Reading
uses ``torch.load(..., weights_only=True)`` and turns every failure into the caller's error
class with the file named; writing is atomic, so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any


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
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise error(f"{what} weights file {path} is corrupt or not a torch file, so not a valid weights "
                    f"file (torch.load: {load_reason(exc)})") from None


def read_checked(path: str | Path, what: str, fmt: str, version: int, error: type[Exception]) -> dict[str, Any]:
    """The file's dict, after checking it exists, loads, and has this ``format`` and version;
    anything else raises ``error`` naming the file (``what`` is the model's name in messages)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} weights file {path} is missing")
    blob = torch_load_dict(path, what, error)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise error(f"{path} is not {article} {what} weights file (format {fmt!r} expected)")
    if blob.get("format_version") != version:
        raise error(f"{path} has {what} weights format version {blob.get('format_version')}, "
                    f"this lcbench reads version {version}")
    bad = nonfinite_entries(blob.get("state_dict"))
    if bad:
        raise error(f"{what} weights file {path} contains NaN/inf weights ({len(bad)} tensors, e.g. {bad[0]!r}): "
                    f"written by a training run that diverged; retrain (e.g. with a lower --lr) or use another file")
    return blob


def nonfinite_entries(state: Any) -> list[str]:
    """Names of the floating-point tensors of a state_dict that hold NaN or inf (anything that is not
    a dict of tensors is left to loading, which names what does not match)."""
    import torch

    if not isinstance(state, dict):
        return []
    return [str(k) for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def half_state(model: Any) -> dict[str, Any]:
    """A module's weights as float16 CPU tensors (what ships; loaded back as float32)."""
    import torch

    state = {k: v.detach().cpu().to(torch.float16) for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:  # NaN/inf already, or beyond float16's range (65504): the file would not load
        raise ValueError(f"the weights cannot be shipped: {len(bad)} tensors are NaN/inf in float16 "
                         f"(e.g. {bad[0]!r}; values beyond +-65504 overflow), so no weights file was written")
    return state


def load_state(model: Any, blob: dict[str, Any]) -> None:
    """Shipped (float16) weights into ``model`` as float32; a mismatch raises the module's error
    (TypeError for a state_dict that is not a dict of tensors)."""
    import torch

    state = blob["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"'state_dict' is a {type(state).__name__}, not a dict of tensors")
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise TypeError(f"state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
    model.load_state_dict({k: v.float() for k, v in state.items()})


def write_atomic(path: str | Path, blob: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name, then rename: readers never see half a file."""
    import torch

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
