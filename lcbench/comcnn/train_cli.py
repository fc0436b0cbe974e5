"""``lcbench train comcnn``: the ComCNN/RecCNN entry for lcbench/cli/train.py's TRAINERS table.

``add_arguments`` adds the options specific to ComCNN (the shared ones, --data --out --steps
--batch --crop --lr --device --threads --seed --log-every --checkpoint-every, come from the
train command). ``main`` runs the same training standalone:
``python -m lcbench.comcnn.train_cli --codec jpeg --data DIR --out FILE``.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("comcnn")
    g.add_argument("--codec", default="jpeg",
                   help="codec spec in the loop, e.g. jpeg or jpeg2000 (default jpeg); comcnn only")
    g.add_argument("--qualities", default=None, metavar="LIST",
                   help="codec rate points sampled per crop during training (default for jpeg: 10:90:10; "
                        "otherwise the codec's default grid); comcnn only")
    g.add_argument("--rounds", type=int, default=3,
                   help="RecCNN phases, with ComCNN phases between them (default 3); comcnn only")
    g.add_argument("--com-lr", type=float, default=1e-4, help="ComCNN learning rate (default 1e-4); comcnn only")
    g.add_argument("--channels", type=int, default=32, help="feature channels (default 32); comcnn only")
    g.add_argument("--rec-layers", type=int, default=10, help="RecCNN conv layers (default 10); comcnn only")


def run(args: argparse.Namespace) -> int:
    from lcbench.comcnn.train import TrainConfig, train
    from lcbench.rates import parse_rate_list
    from lcbench.registry import create_codec

    if getattr(args, "resume", None) or getattr(args, "init", None):
        raise ValueError("lcbench train comcnn cannot resume or start from other weights (--resume/--init); "
                         "start a new run")
    codec = create_codec(args.codec)
    if args.qualities:
        qualities = parse_rate_list(args.qualities)
    elif codec.name == "jpeg":
        qualities = tuple(float(q) for q in range(10, 91, 10))
    else:
        qualities = tuple(codec.default_rates)
    for q in qualities:  # the codec's own rule, as `lcbench run -q` applies it (jpeg: 1..95, whole numbers)
        try:
            codec.check_rate(float(q))
        except ValueError as exc:
            raise ValueError(f"--qualities: {exc}") from None
    if args.crop % 16:
        raise ValueError(f"--crop {args.crop}: comcnn needs a multiple of 16")
    cfg = TrainConfig(data=args.data, out=args.out, codec=args.codec, qualities=qualities, steps=args.steps,
                      rounds=args.rounds, batch=args.batch, crop=args.crop, lr=args.lr, com_lr=args.com_lr,
                      channels=args.channels, rec_layers=args.rec_layers, seed=args.seed, device=args.device,
                      threads=args.threads, log_every=args.log_every, checkpoint_every=args.checkpoint_every)
    train(cfg, log=lambda s: print(s, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcbench.comcnn.train_cli", description=__doc__)
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4, help="RecCNN learning rate")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=250)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
