"""Alternating training of ComCNN and RecCNN with the real codec in the loop.

The codec (e.g. JPEG) is not differentiable, so training alternates (WC README):
- RecCNN phases: ComCNN is fixed; each crop goes ComCNN -> uint8 -> real codec encode and
  decode (a random quality from the training set per crop) -> bicubic x2 up (the same
  Pillow resampler the pipeline uses) -> RecCNN; MSE against the original crop.
- ComCNN phases: RecCNN is fixed (its weights, not its gradient path). The forward pass
  is the same real pipeline; the backward pass treats the codec as the identity (straight
  through: the compact image's gradient is the gradient at the decoded image) and the
  Pillow upsampler as torch's bicubic upsampler. So the forward values are exactly what the
  codec produces, and the gradient reaches ComCNN through RecCNN and the upsampler.
  (WC's vl_nnloss.m skips RecCNN's Jacobian and uses the downscaled full-resolution error
  as ComCNN's gradient; ppooiiuuyh/ComRecCNN treats the codec as identity in the forward
  pass too. Ours keeps the real codec's output in the forward pass and differs from WC only
  by backpropagating through RecCNN.)
Phases run rec, com, rec, ..., rec (``rounds`` RecCNN phases), so the last RecCNN phase
sees the final ComCNN. There is no rate term, as in the paper: the rate comes from the
codec's quality setting and is measured on the real bitstream at evaluation.

Each run writes OUT (the weights file) after every phase and every ``checkpoint_every``
steps, and OUT.csv with the curves (loss, PSNR of the restored crop and of the bicubic-only
reconstruction on the same crops, bits per pixel of the codec on the compact crops).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lcbench.comcnn.model import ComRecPair, ModelConfig, count_parameters
from lcbench.comcnn import weights as weights_io
from lcbench.training import list_images, load_images  # the trainers' shared data loading and evaluation-set refusal
from lcbench.resample import resize_float, to_uint8



@dataclasses.dataclass
class TrainConfig:
    data: str
    out: str
    codec: str = "jpeg"
    qualities: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
    steps: int = 3000
    rounds: int = 3  # RecCNN phases; ComCNN phases between them
    batch: int = 8
    crop: int = 128
    lr: float = 5e-4  # RecCNN
    com_lr: float = 1e-4  # ComCNN (WC: 1e-4 -> 1e-5)
    lr_decay: float = 0.1  # cosine decay to lr * lr_decay within each phase
    channels: int = 32
    rec_layers: int = 10
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    log_every: int = 50
    checkpoint_every: int = 500

    def csv_path(self) -> Path:
        """The curves beside ``out``; ValueError when ``out`` is that file (--out x.csv)."""
        from lcbench.training import check_out_path

        curves = Path(self.out).with_suffix(".csv")
        check_out_path(self.out, None, curves)
        return curves

    def check(self) -> None:
        """Options that would fail only after training started: ValueError naming them."""
        from lcbench.training import check_lr, check_positive

        check_positive(steps=self.steps, batch=self.batch, log_every=self.log_every,
                       checkpoint_every=self.checkpoint_every, rounds=self.rounds, channels=self.channels,
                       threads=self.threads)
        check_lr(lr=self.lr, com_lr=self.com_lr)
        if self.rec_layers < 2:
            raise ValueError(f"--rec-layers {self.rec_layers}: RecCNN needs at least 2 layers")
        self.csv_path()


def sample_crops(images: Sequence[np.ndarray], n: int, size: int, rng: random.Random) -> np.ndarray:
    """n random crops with random flips and 90-degree turns -> n x size x size x 3 uint8."""
    crops = []
    for _ in range(n):
        im = images[rng.randrange(len(images))]
        y = rng.randrange(im.shape[0] - size + 1)
        x = rng.randrange(im.shape[1] - size + 1)
        c = im[y:y + size, x:x + size]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        c = np.rot90(c, rng.randrange(4))
        crops.append(np.ascontiguousarray(c))
    return np.stack(crops)


def codec_round_trip(codec: Any, lows: np.ndarray, qualities: Sequence[float], rng: random.Random
                     ) -> tuple[np.ndarray, int]:
    """Each compact crop through the real codec at a random quality -> (decoded crops, total bits)."""
    out = np.empty_like(lows)
    bits = 0
    for i, low in enumerate(lows):
        data = codec.encode(np.ascontiguousarray(low), rng.choice(list(qualities)))
        bits += 8 * len(data)
        out[i] = codec.decode(data)
    return out, bits


def upsample2(images: np.ndarray) -> np.ndarray:
    """N x h x w x 3 (0..255) -> N x 2h x 2w x 3 float32, Pillow bicubic (as in the pipeline)."""
    return np.stack([resize_float(im, im.shape[1] * 2, im.shape[0] * 2, "bicubic") for im in images])


def to_tensor(batch: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32) / 255.0).permute(0, 3, 1, 2).to(device)


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def phase_plan(steps: int, rounds: int) -> list[tuple[str, int]]:
    """[("rec", n), ("com", n), ..., ("rec", n)]: 2*rounds-1 phases sharing the steps."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    kinds = ["rec" if i % 2 == 0 else "com" for i in range(2 * rounds - 1)]
    base, extra = divmod(steps, len(kinds))
    return [(k, base + (1 if i < extra else 0)) for i, k in enumerate(kinds)]


def pipeline_loss(model: ComRecPair, x: torch.Tensor, codec: Any, qualities: Sequence[float], rng: random.Random,
                  train_com: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """MSE of the full pipeline on crops x, with the real codec -> (loss, bicubic-only image, codec bits).

    With ``train_com`` the loss carries a gradient to ComCNN: straight through the codec and
    the Pillow upsampler (forward values are the real ones, gradients those of the identity
    and of torch's bicubic upsampling). Without it only RecCNN's graph is kept.
    """
    device = x.device
    with torch.set_grad_enabled(train_com):
        compact = model.com(x)
    lows = to_uint8(compact.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0)
    decoded, bits = codec_round_trip(codec, lows, qualities, rng)
    up_np = to_tensor(upsample2(decoded), str(device))
    if train_com:
        dec_t = to_tensor(decoded, str(device))
        st = compact + (dec_t - compact).detach()
        up_t = F.interpolate(st, scale_factor=2, mode="bicubic", align_corners=False)
        up = up_t + (up_np - up_t).detach()
    else:
        up = up_np
    return F.mse_loss(model.rec(up), x), up_np, bits


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Run the alternating training; returns the weights file written to ``cfg.out``."""
    from lcbench.training import DivergenceGuard
    from lcbench.registry import create_codec

    cfg.check()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if cfg.crop % 16:
        raise ValueError(f"crop {cfg.crop} must be a multiple of 16 (the compact crop is coded in 8x8 blocks)")
    codec = create_codec(cfg.codec)
    files = list_images(cfg.data)
    images = load_images(files, cfg.crop)
    model = ComRecPair(ModelConfig(channels=cfg.channels, rec_layers=cfg.rec_layers)).to(cfg.device)
    log(f"comcnn: {len(images)} training images from {cfg.data}; codec {codec.label()} at "
        f"{', '.join(f'{q:g}' for q in cfg.qualities)}; ComCNN {count_parameters(model.com)} + RecCNN "
        f"{count_parameters(model.rec)} parameters; device {cfg.device}, {cfg.threads} thread(s)")
    opt_rec = torch.optim.Adam(model.rec.parameters(), lr=cfg.lr)
    opt_com = torch.optim.Adam(model.com.parameters(), lr=cfg.com_lr)
    meta: dict[str, Any] = {"codec": codec.label(), "codec_version": codec.version(),
                            "qualities": [float(q) for q in cfg.qualities], "data": str(cfg.data),
                            "images": len(images), "steps": cfg.steps, "rounds": cfg.rounds, "batch": cfg.batch,
                            "crop": cfg.crop, "lr": cfg.lr, "com_lr": cfg.com_lr, "seed": cfg.seed,
                            "gradient": "real codec forward, straight-through (identity) backward"}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_file = open(cfg.csv_path(), "w", newline="")
    writer = csv.writer(csv_file)
    writer.writerow(["step", "phase", "loss", "psnr_restored", "psnr_bicubic", "bpp", "lr", "seconds"])
    step = 0
    guard = DivergenceGuard("comcnn", cfg, out, None, final=None,
                            hint="--lr or --com-lr (this run: {lr:g} and {com_lr:g})")
    t_start = time.perf_counter()
    acc: dict[str, float] = {"loss": 0.0, "mse_up": 0.0, "bits": 0.0, "pixels": 0.0, "n": 0}
    try:
        for phase_index, (phase, n_steps) in enumerate(phase_plan(cfg.steps, cfg.rounds)):
            train_rec = phase == "rec"
            model.rec.requires_grad_(train_rec)
            model.com.requires_grad_(not train_rec)
            opt = opt_rec if train_rec else opt_com
            base_lr = cfg.lr if train_rec else cfg.com_lr
            for i in range(n_steps):
                lr = base_lr * (cfg.lr_decay + (1 - cfg.lr_decay) * 0.5 * (1 + math.cos(math.pi * i / max(1, n_steps))))
                for g in opt.param_groups:
                    g["lr"] = lr
                crops = sample_crops(images, cfg.batch, cfg.crop, rng)
                x = to_tensor(crops, cfg.device)
                loss, up_np, bits = pipeline_loss(model, x, codec, cfg.qualities, rng, train_com=not train_rec)
                guard.loss(loss.item(), step + 1)  # before the update: the weights are still the last step's
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                acc["loss"] += loss.item()
                acc["mse_up"] += float(F.mse_loss(up_np.clamp(0, 1), x))
                acc["bits"] += bits
                acc["pixels"] += x.shape[0] * x.shape[2] * x.shape[3]
                acc["n"] += 1
                if step % cfg.log_every == 0 or i == n_steps - 1:
                    n = acc["n"]
                    row = [step, phase, acc["loss"] / n, _psnr(acc["loss"] / n), _psnr(acc["mse_up"] / n),
                           acc["bits"] / acc["pixels"], lr, time.perf_counter() - t_start]
                    writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
                    csv_file.flush()
                    log(f"step {step}/{cfg.steps} [{phase} {phase_index + 1}] loss {row[2]:.5f} restored "
                        f"{row[3]:.2f} dB bicubic {row[4]:.2f} dB bpp {row[5]:.3f} ({row[7]:.0f} s)")
                    acc = {k: 0.0 for k in acc}
                if step % cfg.checkpoint_every == 0:
                    guard.weights(model, step, half=True)
                    weights_io.save(out, model, {**meta, "trained_steps": step, "finished": False})
                    guard.saved(step)
            guard.weights(model, step, half=True)
            weights_io.save(out, model, {**meta, "trained_steps": step, "finished": False})
            guard.saved(step)
    finally:
        csv_file.close()
    weights_io.save(out, model, {**meta, "trained_steps": step, "finished": True,
                                 "train_seconds": round(time.perf_counter() - t_start, 1)})
    log(f"comcnn: wrote {out} ({out.stat().st_size} bytes, sha256 {weights_io.sha256_of(out)[:16]}...)")
    return out
