"""What every trainer (importance_map, autoencoder, comcnn) shares: option and output-path checks,
safe checkpoint loading, training-image listing and loading with the refusal of evaluation images,
random crops, the divergence guard and the cosine learning-rate schedule.

Each model's own loop, config and checkpoint layout live beside the model
(``lcbench.learned.train``, ``lcbench.autoencoder.train``, ``lcbench.comcnn.train``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lcbench.weights_file import load_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
CHECKPOINT_KEYS = ("model", "optimizer", "step", "model_config", "train_config", "sampler_rng", "torch_rng")

class CheckpointError(ValueError):
    """A file given to resume from is not a training checkpoint of this model; names the file."""

class TrainingDiverged(RuntimeError):
    """The loss (or the weights) stopped being finite: training stopped, nothing non-finite was saved."""

class EvaluationDataError(ValueError):
    """The training data is (or holds images of) an evaluation set; names the image and the set."""

def check_out_path(out: str | Path, checkpoint: Path | None, curves: Path) -> None:
    """Refuse an output file that is also where the checkpoint, its temporary file or the curves go
    (``--out m.csv`` wrote the weights over the curves, ``--out m.ckpt`` over the checkpoint)."""
    p = Path(out)
    clash = {curves: "the curves (CSV)"}
    if checkpoint is not None:
        clash.update({checkpoint: "the checkpoint", checkpoint.with_suffix(".tmp"): "the checkpoint's temporary file"})
    for path, what in clash.items():
        if p == path:
            raise ValueError(f"--out {out}: a run writes {what} to {path}, which is --out itself; give a "
                             f"weights file name ending in .pt, e.g. --out {p.with_suffix('.pt')}")

def check_positive(**options: float) -> None:
    """Each ``option_name=value`` (the option without its dashes, _ for -) must be at least 1."""
    for name, value in options.items():
        if value is None or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least 1")

def check_lr(**options: float | None) -> None:
    """Learning rates: finite and positive (None: not set)."""
    for name, value in options.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be a positive number")

def load_checkpoint(path: str | Path, model: str) -> dict[str, Any]:
    """A checkpoint written by ``lcbench train MODEL`` (``FILE.ckpt``), checked for the keys resuming
    needs. Anything else (missing, a folder, garbage, a weights file) raises CheckpointError."""
    p = Path(path)
    hint = f"resume from the .ckpt file an earlier `lcbench train {model}` wrote beside its --out"
    if not p.exists():
        raise CheckpointError(f"cannot resume from {p}: no such file")
    if not p.is_file():
        raise CheckpointError(f"cannot resume from {p}: not a file; {hint}")
    try:
        # weights_only=True: a checkpoint is tensors and plain values (the sampler state is a dict of
        # ints), and a file someone hands over must not run pickled code
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage/truncated files
        raise CheckpointError(f"cannot resume from {p}: not a training checkpoint "
                              f"({load_reason(exc)}); {hint}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"cannot resume from {p}: not a training checkpoint of {model} "
                              f"(missing {', '.join(missing)}); {hint}")
    return ckpt

def checkpoint_mismatch(path: str | Path, model: str, exc: Exception) -> CheckpointError:
    """The error for a checkpoint whose network does not build or load: another model's checkpoint."""
    return CheckpointError(f"cannot resume from {path}: the checkpoint's network is not {model}'s "
                           f"(another model's checkpoint?) ({type(exc).__name__}: {exc})")

def list_images(folder: str | Path) -> list[Path]:
    refuse_evaluation_folder(folder)
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files

def load_images(files: Sequence[Path], min_side: int = 0) -> list[np.ndarray]:
    """Decoded RGB arrays (those at least ``min_side`` px on both sides); EvaluationDataError when
    any has the pixels of an evaluation image. Shared by every trainer."""
    from PIL import Image

    check = EvaluationImageCheck()
    out = []
    for f in files:
        with Image.open(f) as im:
            check.see(f, im)
            arr = np.asarray(im.convert("RGB"))
        if min(arr.shape[:2]) >= min_side:
            out.append(arr)
    check.refuse()
    if min_side and not out:
        raise ValueError(f"no training image is at least {min_side} px on both sides")
    return out

def refuse_evaluation_folder(data: str | Path) -> None:
    """EvaluationDataError when ``data`` names a registered (evaluation) dataset, or is, holds or lies
    in a copy of one: the cache's ``datasets/<name>``, an ``$LCBENCH_DATA`` mirror, or a folder
    with the marker of a fetched copy."""
    from lcbench import named_datasets
    from lcbench.manifest import manifest_names

    names = manifest_names()
    p = Path(data).expanduser()
    if not p.is_dir():
        if str(data) in names:
            raise EvaluationDataError(f"--data {data}: {str(data)!r} is an evaluation dataset, never trained on; "
                                      f"give a folder of training images")
        return
    root = p.resolve()
    for folder in (root, *root.parents):
        if (folder / named_datasets.MARKER).is_file():
            raise EvaluationDataError(f"--data {data}: {folder} is a fetched copy of an evaluation dataset "
                                      f"({folder / named_datasets.MARKER}), never trained on")
    for name in names:
        for loc in named_datasets.candidates(name):
            try:
                copy = loc.root.resolve()
            except OSError:
                continue
            if copy.is_dir() and (copy == root or copy in root.parents or root in copy.parents):
                raise EvaluationDataError(f"--data {data}: {copy} is the {loc.where} copy of the evaluation "
                                          f"dataset {name!r}, never trained on; give a folder of training images")

def _evaluation_index() -> dict[tuple[int, int] | None, dict[str, tuple[str, str]]]:
    """(width, height) -> {pixel sha256: (set name, image path)} over every manifest's recorded images
    (the raw pixels, and the RGB pixels lcbench loads where a manifest records them); key None
    holds images whose size is not recorded."""
    from lcbench.manifest import all_manifests

    index: dict[tuple[int, int] | None, dict[str, tuple[str, str]]] = {}
    for m in all_manifests():
        for e in m.images:
            key = (e.width, e.height) if e.width and e.height else None
            for digest in (e.pixels_sha256, e.rgb_sha256):
                if digest:
                    index.setdefault(key, {})[digest] = (m.name, e.path)
    return index

class EvaluationImageCheck:
    """Fed every training image as it is opened; hashes only the images whose size is the size of a
    recorded evaluation image (header only for the rest), and ``refuse`` names any matches."""

    def __init__(self) -> None:
        self.index = _evaluation_index()
        self.found: list[str] = []

    def see(self, path: Path, im: Any) -> None:
        known = {**self.index.get(None, {}), **self.index.get(tuple(im.size), {})}
        if not known:
            return
        import hashlib

        im.load()
        arrays = [np.asarray(im)]
        if im.mode != "RGB":  # e.g. an RGBA or greyscale-as-RGB copy: compare what training sees too
            arrays.append(np.asarray(im.convert("RGB")))
        for arr in arrays:
            hit = known.get(hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest())
            if hit:
                self.found.append(f"{path} is {hit[0]}'s {hit[1]}")
                return

    def refuse(self) -> None:
        if self.found:
            more = f" and {len(self.found) - 5} more" if len(self.found) > 5 else ""
            raise EvaluationDataError(f"the training data holds evaluation images (identical pixels), never "
                                      f"trained on: {'; '.join(self.found[:5])}{more}; remove them from --data")

class CropSampler:
    """Random crops with random flips and random downscaling (0.5-1x), seeded."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}x{crop} pixels")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def one(self) -> np.ndarray:
        from PIL import Image

        im = self.images[self.rng.integers(len(self.images))]
        h, w = im.shape[:2]
        scale = 1.0 if self.rng.random() < 0.5 else float(self.rng.uniform(0.5, 1.0))
        size = min(int(round(self.crop / scale)), h, w)
        y = int(self.rng.integers(h - size + 1))
        x = int(self.rng.integers(w - size + 1))
        patch = im[y:y + size, x:x + size]
        if size != self.crop:
            patch = np.asarray(Image.fromarray(patch).resize((self.crop, self.crop), Image.BICUBIC))
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        return patch

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self.one() for _ in range(n)])
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)

def nonfinite_tensors(model: torch.nn.Module, half: bool = False) -> list[str]:
    """Names of the parameters and buffers holding NaN or inf (``half``: or that overflow float16,
    the precision weights files store)."""
    return [k for k, v in model.state_dict().items()
            if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v.half() if half else v).all())]

def refuse_nonfinite_checkpoint(path: str | Path, model: torch.nn.Module) -> None:
    bad = nonfinite_tensors(model)
    if bad:
        raise CheckpointError(f"cannot start from {path}: it contains NaN/inf weights ({len(bad)} tensors, e.g. "
                              f"{bad[0]}), written by a run that diverged; use an earlier checkpoint")

class DivergenceGuard:
    """Stops a training run whose loss or weights stop being finite (TrainingDiverged), before
    anything non-finite is written; the message says which checkpoint is the last good one."""

    def __init__(self, model: str, cfg: Any, checkpoint: Path | None, resumed_at: int | None,
                 final: str | None = "{out} was not written", hint: str = "--lr (this run: {lr:g})") -> None:
        self.model, self.checkpoint = model, checkpoint
        self.final = final.format(out=cfg.out) if final else None
        self.hint = hint.format(lr=cfg.lr, com_lr=getattr(cfg, "com_lr", 0.0))
        self.kept: tuple[str, int] | None = (str(cfg.resume), resumed_at) if resumed_at is not None else None

    def saved(self, step: int, path: Path | None = None) -> None:
        self.kept = (str(path or self.checkpoint), step)

    def stop(self, what: str, step: int) -> None:
        if self.kept:
            kept = f"the last good checkpoint, {self.kept[0]} (step {self.kept[1]}), is kept"
        else:
            kept = "no checkpoint had been written"
        final = f"; {self.final}" if self.final else ""
        raise TrainingDiverged(f"{self.model} training diverged at step {step}: {what}, so training stopped "
                               f"before saving anything non-finite; {kept}{final}. Try a lower {self.hint}")

    def loss(self, value: float, step: int) -> None:
        if not math.isfinite(value):
            self.stop(f"the loss is {value}", step)

    def weights(self, model: torch.nn.Module, step: int, half: bool = False) -> None:
        """Stop when a weight is NaN/inf (``half``: or beyond float16's range, before a weights file)."""
        bad = nonfinite_tensors(model, half)
        if bad:
            limit = " or beyond float16's +-65504" if half else ""
            self.stop(f"{len(bad)} weight tensors hold NaN/inf{limit} (e.g. {bad[0]})", step)

def lr_at(cfg: Any, step: int) -> float:
    """Cosine schedule from ``cfg.lr`` at step 0 to ``cfg.lr_final`` at ``cfg.steps``."""
    t = min(1.0, step / max(1, cfg.steps))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))
