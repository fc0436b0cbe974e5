"""Training of the autoencoder codec: minimise rate + lambda * distortion on random crops.

    loss = bpp + lmbda * 255^2 * MSE          (MSE on the 0..1 scale; lmbda sets the rate point)

bpp is the entropy model's estimate on noisy latents (model.py). Crops, flips and the
cosine learning-rate schedule come from lcbench.training, shared by every trainer.

Files written for ``--out FILE.pt``: FILE.pt (the shipped-weights format, with the integer
entropy tables built at the end), FILE.csv (curves: loss, bpp estimate, PSNR per
``log_every`` steps) and FILE.ckpt (model, optimiser, step and random states, every
``checkpoint_every`` steps; ``resume`` continues from it with the same results as an
uninterrupted run up to the random crops already drawn).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lcbench.autoencoder import weights as weights_io
from lcbench.autoencoder.model import AutoEncoder, ModelConfig, count_parameters
from lcbench.training import (CropSampler, DivergenceGuard, check_lr, check_out_path, check_positive,
                              checkpoint_mismatch, list_images, load_checkpoint, load_images, lr_at,
                              refuse_nonfinite_checkpoint)

CSV_FIELDS = ["step", "loss", "bpp", "mse", "psnr", "lr", "elapsed_s"]


@dataclasses.dataclass
class TrainConfig:
    data: str
    out: str
    lmbda: float = 0.01
    steps: int = 3000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-3
    lr_final: float = 1e-4  # cosine decay to this
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    init: str | None = None  # start from these weights (fresh optimiser), e.g. a model at another lambda
    resume: str | None = None  # continue this checkpoint
    checkpoint_every: int = 250
    log_every: int = 25
    channels: int = 64
    latent: int = 96

    def paths(self) -> tuple[Path, Path]:
        """(checkpoint, curves) beside ``out``; ValueError when ``out`` would be one of them."""
        out = Path(self.out)
        ckpt, curves = out.with_suffix(".ckpt"), out.with_suffix(".csv")
        check_out_path(self.out, ckpt, curves)
        return ckpt, curves

    def check(self) -> None:
        """Options that would fail only after training started: ValueError naming them."""
        check_positive(steps=self.steps, batch=self.batch, log_every=self.log_every,
                       checkpoint_every=self.checkpoint_every, hidden_channels=self.channels,
                       latent_channels=self.latent)
        check_lr(lr=self.lr, lmbda=self.lmbda)
        if not (math.isfinite(self.lr_final) and self.lr_final >= 0):
            raise ValueError(f"--lr-final {self.lr_final}: must be a number >= 0")


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume); write checkpoint, CSV curves and the final weights file."""
    cfg.check()
    ckpt_path, csv_path = cfg.paths()
    torch.set_num_threads(max(1, cfg.threads))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    step, ckpt = 0, None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, "autoencoder")
        try:
            model = AutoEncoder(ModelConfig.from_dict(ckpt["model_config"]))
            model.load_state_dict(ckpt["model"])
            step = int(ckpt["step"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise checkpoint_mismatch(cfg.resume, "autoencoder", exc) from exc
        refuse_nonfinite_checkpoint(cfg.resume, model)
    elif cfg.init:
        model, _ = weights_io.load(cfg.init)
    else:
        model = AutoEncoder(ModelConfig(channels=cfg.channels, latent=cfg.latent))
    images = load_images(list_images(cfg.data))  # refuses evaluation images before anything is written
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)  # only once the start point and data loaded
    model.to(cfg.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = CropSampler(images, cfg.crop, cfg.seed)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        sampler.rng.bit_generator.state = ckpt["sampler_rng"]
    log(f"training autoencoder: {count_parameters(model)} parameters, {model.config}, lambda={cfg.lmbda}, "
        f"{len(sampler.images)} images, steps {step}..{cfg.steps}")

    csv_file = _open_curves(csv_path, resumed_at=step if cfg.resume else None)
    writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
    t0 = time.perf_counter() - (float(ckpt.get("elapsed_s", 0.0)) if ckpt else 0.0)
    acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "n": 0}
    guard = DivergenceGuard("autoencoder", cfg, ckpt_path, step if cfg.resume else None)
    try:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            x = sampler.batch(cfg.batch).to(cfg.device).float() / 255.0
            out = model(x)
            mse = torch.mean((out["x_hat"] - x) ** 2)
            bpp = out["bits"].sum() / (x.shape[0] * x.shape[2] * x.shape[3])
            loss = bpp + cfg.lmbda * 255 ** 2 * mse
            guard.loss(loss.item(), step + 1)  # before the update: the weights are still the last step's
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # early GDN steps can spike
            if not math.isfinite(float(grad_norm)):  # clipping a NaN/inf gradient would make every weight NaN
                guard.stop(f"the gradient norm is {float(grad_norm)}", step + 1)
            opt.step()
            step += 1
            for k, v in (("loss", loss), ("bpp", bpp), ("mse", mse)):
                acc[k] += v.item()
            acc["n"] += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = acc["n"]
                row = {"step": step, "loss": acc["loss"] / n, "bpp": acc["bpp"] / n, "mse": acc["mse"] / n,
                       "psnr": -10 * math.log10(max(acc["mse"] / n, 1e-12)), "lr": lr_at(cfg, step),
                       "elapsed_s": round(time.perf_counter() - t0, 1)}
                writer.writerow(row)
                csv_file.flush()
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "n": 0}
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                guard.weights(model, step)
                _save_checkpoint(ckpt_path, model, opt, step, sampler, cfg, time.perf_counter() - t0)
                guard.saved(step)
    finally:
        csv_file.close()

    guard.weights(model, step, half=True)  # the weights file stores float16

    meta = {"lmbda": cfg.lmbda, "steps": step, "batch": cfg.batch, "crop": cfg.crop, "lr": cfg.lr, "seed": cfg.seed,
            "data": Path(cfg.data).name, "init": Path(cfg.init).name if cfg.init else None,
            "train_seconds": round(time.perf_counter() - t0, 1)}
    weights_io.save(cfg.out, model.cpu().eval(), meta)  # builds the integer tables from the stored weights
    log(f"wrote {cfg.out} ({Path(cfg.out).stat().st_size / 1e6:.2f} MB), curves in {csv_path}")
    return {"out": cfg.out, "csv": str(csv_path), "checkpoint": str(ckpt_path), "steps": step}


def _open_curves(csv_path: Path, resumed_at: int | None):
    """Open the CSV for appending; on resume, drop rows logged after the checkpoint's step."""
    if resumed_at is not None and csv_path.exists():
        with open(csv_path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_at]
    else:
        kept = []
    f = open(csv_path, "w", newline="")
    w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    w.writeheader()
    w.writerows(kept)
    return f


def _save_checkpoint(path: Path, model: AutoEncoder, opt: torch.optim.Optimizer, step: int,
                     sampler: CropSampler, cfg: TrainConfig, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "model_config": model.config.to_dict(), "train_config": dataclasses.asdict(cfg),
                "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "elapsed_s": elapsed}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint
