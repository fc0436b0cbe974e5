"""Training loop for the importance-map codec: random crops, MSE, the paper's rate control.

Rate control (MC ``imp_map_layer``): when the batch's mean mask occupancy exceeds the
target r, gamma * mean(p) is added to the loss, i.e. gamma is added to every p's
gradient; below r the map only follows the distortion. Training can start with the
map off (all channels kept) and turn it on later, as in third-party reimplementations.

Every run writes a CSV of loss/PSNR/occupancy/rate curves and a resumable checkpoint
next to the output file; the output file itself is the shipped-weights format.
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

from lcbench.learned.model import ImportanceMapNet, ModelConfig, count_parameters
from lcbench.learned import weights as weights_io
from lcbench.training import (CheckpointError, CropSampler, DivergenceGuard, check_lr, check_out_path, check_positive,
                              checkpoint_mismatch, list_images, load_checkpoint, load_images, lr_at,
                              refuse_nonfinite_checkpoint)


def check_width(width: float) -> None:
    """--width must give the decoder valid channel counts: PixelShuffle(2) needs round(512 * width)
    (at least 4) divisible by 4 and PixelShuffle(4) needs round(256 * width) divisible by 16."""
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"--width {width}: must be a positive number (1 = the paper's network)")
    cfg = ModelConfig(width=width)
    c256, c512 = cfg.ch(256), cfg.ch(512)
    if c256 % 16 or c512 % 4:
        raise ValueError(f"--width {width}: gives {c256} and {c512} decoder channels, but its depth-to-space "
                         f"layers need a multiple of 16 and of 4 (round(256 * width) and round(512 * width)); "
                         f"use a multiple of 1/16, e.g. 0.0625, 0.125 or 0.25")


@dataclasses.dataclass
class TrainConfig:
    data: str
    out: str
    steps: int = 6000
    map_off_steps: int = 0  # the first steps train without the importance map
    rate_target: float = 0.25  # r: mean mask occupancy above which the rate penalty acts
    gamma: float = 0.02  # weight of mean(p) when occupancy > r
    msssim_weight: float = 0.0  # alpha: loss = MSE + alpha * (1 - MS-SSIM), both on the 0..1 scale
    lr: float = 2e-4
    lr_final: float = 2e-5  # cosine decay to this
    batch: int = 8
    crop: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    init: str | None = None  # start from these weights (fresh optimizer)
    resume: str | None = None  # continue this checkpoint (model, optimizer, step, RNG)
    checkpoint_every: int = 500
    log_every: int = 50
    n: int = 128
    levels: int = 32
    width: float = 0.25
    entropy_crops: int = 64  # crops used to fit the entropy coder's context model at the end

    def paths(self) -> tuple[Path, Path]:
        """(checkpoint, curves) beside ``out``; ValueError when ``out`` would be one of them."""
        out = Path(self.out)
        ckpt, curves = out.with_suffix(".ckpt"), out.with_suffix(".csv")
        check_out_path(self.out, ckpt, curves)
        return ckpt, curves

    def check(self) -> None:
        """Options that would fail only after training started (or never train): ValueError naming them."""
        check_positive(steps=self.steps, batch=self.batch, log_every=self.log_every,
                       checkpoint_every=self.checkpoint_every, n=self.n, levels=self.levels,
                       entropy_crops=self.entropy_crops)
        check_lr(lr=self.lr)
        if not (math.isfinite(self.lr_final) and self.lr_final >= 0):
            raise ValueError(f"--lr-final {self.lr_final}: must be a number >= 0")
        check_width(self.width)
        if self.map_off_steps < 0:
            raise ValueError(f"--map-off-steps {self.map_off_steps}: must be >= 0")
        for name, value in (("gamma", self.gamma), ("msssim-weight", self.msssim_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name} {value}: must be a number >= 0")
        if not 0 <= self.rate_target <= 1:
            raise ValueError(f"--rate-target {self.rate_target}: must be between 0 and 1 (a mask occupancy)")


# ---------------------------------------------------------------------------------------
# Never train on evaluation sets: the named sets' folders, and any image whose pixels a
# dataset manifest records (pixel SHA-256, lcbench.verify's definition).


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume), write the checkpoint, the CSV curves and the final weights file."""
    cfg.check()
    ckpt_path, csv_path = cfg.paths()
    torch.set_num_threads(max(1, cfg.threads))
    _seed_all(cfg.seed)

    step = 0
    sampler_state = None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, "importance_map")
        saved = ckpt["train_config"]
        try:
            mcfg = ModelConfig.from_dict(ckpt["model_config"])
            model = ImportanceMapNet(mcfg)
            model.load_state_dict(ckpt["model"])
            step = int(ckpt["step"])
            if not all(key in saved for key in ("n", "levels", "width")):
                raise KeyError("train_config has no n/levels/width")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise checkpoint_mismatch(cfg.resume, "importance_map", exc) from exc
        refuse_nonfinite_checkpoint(cfg.resume, model)
        sampler_state = ckpt["sampler_rng"]
        for key in ("n", "levels", "width"):
            if saved[key] != getattr(cfg, key):
                log(f"resume: using the checkpoint's {key}={saved[key]}")
                setattr(cfg, key, saved[key])
    elif cfg.init:
        model = _load_init(cfg.init)
        mcfg = model.config
        cfg.n, cfg.levels, cfg.width = mcfg.n, mcfg.levels, mcfg.width
    else:
        mcfg = ModelConfig(n=cfg.n, levels=cfg.levels, width=cfg.width)
        model = ImportanceMapNet(mcfg)
    images = load_images(list_images(cfg.data))  # refuses evaluation images before anything is written
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)  # only once the start point and data loaded
    model.to(cfg.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if cfg.resume:
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])

    sampler = CropSampler(images, cfg.crop, cfg.seed)
    if sampler_state is not None:
        sampler.rng.bit_generator.state = sampler_state
    log(f"training importance_map: {count_parameters(model)} parameters, n={mcfg.n}, L={mcfg.levels}, "
        f"width={mcfg.width}, {len(sampler.images)} images, steps {step}..{cfg.steps}, r={cfg.rate_target}")

    fields = ["step", "loss", "mse", "psnr", "occupancy", "raw_bpp", "map_on", "lr", "elapsed_s"]
    new_csv = not (cfg.resume and csv_path.exists())
    if not new_csv:  # drop rows logged after the checkpoint, so curves have no duplicate steps
        with open(csv_path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(kept)
    csv_file = open(csv_path, "w" if new_csv else "a", newline="")
    writer = csv.DictWriter(csv_file, fieldnames=fields)
    if new_csv:
        writer.writeheader()
    t0 = time.perf_counter()
    acc: dict[str, float] = {"loss": 0.0, "mse": 0.0, "occ": 0.0, "count": 0}
    guard = DivergenceGuard("importance_map", cfg, ckpt_path, step if cfg.resume else None)
    try:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            x = model.scale_in(sampler.batch(cfg.batch)).to(cfg.device)
            use_map = step >= cfg.map_off_steps
            out = model(x, use_map=use_map)
            # MSE on the 0..1 scale (x is in [-1, 1]).
            mse = ((out["x_hat"] - x) ** 2).mean() / 4
            occupancy = out["mask"].mean()
            loss = mse
            if cfg.msssim_weight > 0:
                loss = loss + cfg.msssim_weight * _msssim_term(out["x_hat"], x)
            if use_map and occupancy.item() > cfg.rate_target:
                loss = loss + cfg.gamma * out["p"].mean()
            guard.loss(loss.item(), step + 1)  # before the update: the weights are still the last step's
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            acc["loss"] += loss.item()
            acc["mse"] += mse.item()
            acc["occ"] += occupancy.item()
            acc["count"] += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                k = acc["count"]
                m = acc["mse"] / k
                row = {"step": step, "loss": acc["loss"] / k, "mse": m, "psnr": -10 * math.log10(max(m, 1e-12)),
                       "occupancy": acc["occ"] / k, "raw_bpp": acc["occ"] / k * mcfg.n / 64, "map_on": int(use_map),
                       "lr": lr_at(cfg, step), "elapsed_s": round(time.perf_counter() - t0, 1)}
                writer.writerow(row)
                csv_file.flush()
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                acc = {"loss": 0.0, "mse": 0.0, "occ": 0.0, "count": 0}
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                guard.weights(model, step)
                _save_checkpoint(ckpt_path, model, opt, step, sampler, cfg)
                guard.saved(step)
    finally:
        csv_file.close()

    guard.weights(model, step, half=True)  # the weights file stores float16
    # The context model is fitted on CPU codes, whatever the training device (fitting the crops on a
    # CUDA model failed: CPU input, CUDA weights), and codes are what the shipped file gives on the CPU.
    model = model.cpu().eval()
    from lcbench.learned.entropy import fit_context_model

    # Codes of larger crops give the context model realistic neighbourhoods; small data still works.
    side = min(256, min(min(im.shape[:2]) for im in sampler.images) // 16 * 16)
    crops = CropSampler(images, side, cfg.seed + 1)
    entropy = fit_context_model(model, [crops.one() for _ in range(cfg.entropy_crops)], use_map=cfg.map_off_steps < cfg.steps)
    meta = {"rate_target": cfg.rate_target, "gamma": cfg.gamma, "steps": cfg.steps, "map_off_steps": cfg.map_off_steps,
            "seed": cfg.seed, "data": Path(cfg.data).name, "msssim_weight": cfg.msssim_weight, "crop": cfg.crop, "batch": cfg.batch, "lr": cfg.lr}
    weights_io.save(cfg.out, model, entropy, meta)
    log(f"wrote {cfg.out} ({Path(cfg.out).stat().st_size / 1e6:.2f} MB), curves in {csv_path}")
    return {"out": cfg.out, "csv": str(csv_path), "checkpoint": str(ckpt_path), "steps": step}


def _load_init(path: str) -> ImportanceMapNet:
    """Network weights to start from: a shipped-weights file or a training checkpoint."""
    try:
        model, _ = weights_io.load_model(path)
        return model
    except weights_io.WeightsError as weights_exc:
        try:
            ckpt = load_checkpoint(path, "importance_map")
        except CheckpointError:
            raise weights_exc from None  # neither a weights file nor a checkpoint: the weights error says why
        try:
            model = ImportanceMapNet(ModelConfig.from_dict(ckpt["model_config"]))
            model.load_state_dict(ckpt["model"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise weights_io.WeightsError(f"--init {path}: an importance_map checkpoint whose network does "
                                          f"not load ({type(exc).__name__}: {exc})") from exc
        refuse_nonfinite_checkpoint(path, model)
        return model


def _msssim_term(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM on the 0..1 scale; window 7 so that 5 scales fit 128-pixel crops."""
    try:
        from pytorch_msssim import ms_ssim
    except ImportError as exc:
        raise ImportError("--msssim-weight needs pytorch-msssim: pip install pytorch-msssim") from exc
    return 1 - ms_ssim((x_hat + 1) / 2, (x + 1) / 2, data_range=1.0, win_size=7)


def _save_checkpoint(path: Path, model: ImportanceMapNet, opt: torch.optim.Optimizer, step: int,
                     sampler: CropSampler, cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "model_config": model.config.to_dict(), "train_config": dataclasses.asdict(cfg),
                "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint
