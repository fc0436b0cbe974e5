"""``lcbench train autoencoder``: the autoencoder's entry in lcbench/cli/train.py's TRAINERS table.

The shared options (--data --out --steps --batch --crop --lr --lr-final --device --threads
--seed --resume --init --log-every --checkpoint-every) come from the
train command; this adds the rate-distortion weight and the network size.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("autoencoder")
    g.add_argument("--lmbda", type=float, default=0.01,
                   help="loss = bpp + LMBDA * 255^2 * MSE: larger means more bits, better quality "
                        "(default 0.01); autoencoder only")
    g.add_argument("--hidden-channels", type=int, default=64, help="N, channels of the transforms "
                   "(default 64); autoencoder only")
    g.add_argument("--latent-channels", type=int, default=96, help="M, latent channels (default 96); "
                   "autoencoder only")


def run(args: argparse.Namespace) -> int:
    from lcbench.autoencoder.train import TrainConfig, train

    if args.crop % 16:
        raise ValueError(f"--crop {args.crop}: the autoencoder needs a multiple of 16")
    if args.lmbda <= 0:
        raise ValueError(f"--lmbda {args.lmbda}: must be positive")
    cfg = TrainConfig(data=args.data, out=args.out, lmbda=args.lmbda, steps=args.steps, batch=args.batch,
                      crop=args.crop, lr=args.lr, seed=args.seed, device=args.device, threads=args.threads,
                      init=getattr(args, "init", None), resume=args.resume, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every, channels=args.hidden_channels,
                      latent=args.latent_channels)
    if args.lr_final is not None:
        cfg.lr_final = args.lr_final
    train(cfg, log=lambda s: print(s, flush=True))
    return 0
