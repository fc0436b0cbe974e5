"""``lcbench train MODEL``: train a learned codec's weights on a folder of images.

Each trainable model is one entry in ``TRAINERS``: a function that adds its options to the
parser and one that runs the training from the parsed arguments. Another model (for
example ComCNN) adds itself by adding an entry here.
"""
from __future__ import annotations

import argparse
from typing import Callable

COMMAND = "train"
HELP = "train a learned codec's weights (logs curves, resumes from checkpoints)"


def _importance_map_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("importance_map")
    g.add_argument("--rate-target", type=float, default=0.25, metavar="R",
                   help="r: mean mask occupancy (kept fraction of the n channels) above which the rate "
                        "penalty acts (default 0.25)")
    g.add_argument("--gamma", type=float, default=0.02, help="weight of mean(p) above the target (default 0.02)")
    g.add_argument("--msssim-weight", type=float, default=0.0, metavar="ALPHA",
                   help="mixed loss MSE + ALPHA * (1 - MS-SSIM) (default 0: MSE as in the paper)")
    g.add_argument("--map-off-steps", type=int, default=0,
                   help="train this many first steps with the importance map off (all channels kept)")
    g.add_argument("--n", type=int, default=128, help="code channels (default 128)")
    g.add_argument("--levels", type=int, default=32, help="importance levels L (default 32)")
    g.add_argument("--width", type=float, default=0.25, help="network width relative to the paper's (default 0.25)")


def _importance_map_run(args: argparse.Namespace) -> int:
    from lcbench.learned.train import TrainConfig, train

    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, map_off_steps=args.map_off_steps,
                      rate_target=args.rate_target, gamma=args.gamma, msssim_weight=args.msssim_weight, lr=args.lr, batch=args.batch, crop=args.crop,
                      seed=args.seed, device=args.device, threads=args.threads, init=args.init, resume=args.resume,
                      n=args.n, levels=args.levels, width=args.width, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every)
    if args.lr_final is not None:
        cfg.lr_final = args.lr_final
    train(cfg, log=lambda s: print(s, flush=True))
    return 0


# model name -> (add its options, run it)
TRAINERS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "importance_map": (_importance_map_arguments, _importance_map_run),
}
from lcbench.comcnn import train_cli as _comcnn_cli  # noqa: E402

TRAINERS["comcnn"] = (_comcnn_cli.add_arguments, _comcnn_cli.run)
from lcbench.autoencoder import train_cli as _autoencoder_cli  # noqa: E402

TRAINERS["autoencoder"] = (_autoencoder_cli.add_arguments, _autoencoder_cli.run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=sorted(TRAINERS), help="which model to train")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of training images (never the test sets: "
                   "a named evaluation set, or any image with the pixels of one, is refused)")
    p.add_argument("--out", required=True, metavar="FILE", help="weights file to write, e.g. m.pt; FILE.csv (curves) "
                   "and FILE.ckpt (checkpoint) are written beside it, so FILE cannot end in .csv or .ckpt")
    p.add_argument("--steps", type=int, default=6000, help="total optimizer steps (default 6000)")
    p.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels (default 128)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate, cosine-decayed (default 2e-4)")
    p.add_argument("--lr-final", type=float, default=None, help="learning rate at the last step (default 2e-5; "
                   "importance_map, autoencoder)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint written by an earlier run "
                   "(importance_map, autoencoder)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (fresh optimizer), e.g. a base model "
                   "(importance_map, autoencoder)")
    p.add_argument("--log-every", type=int, default=50, help="steps per CSV row (default 50)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    for model, (add, _) in TRAINERS.items():
        before = len(p._actions)
        add(p)
        for action in p._actions[before:]:
            # Parsed as None so that run() can tell an option given for another model from its
            # default; run() restores the default for the chosen model.
            _MODEL_OPTIONS[action.dest] = ({model}, action.option_strings[0], action.default)
            action.default = None


# dest -> (models that use it, option string, default): the options a model's run ignores are
# errors for it. Filled by add_arguments with each model's own options.
_MODEL_OPTIONS: dict[str, tuple[set[str], str, object]] = {}
# Common options not every model uses (their default is None).
_PARTLY_SHARED = {"resume": ("--resume", {"importance_map", "autoencoder"}),
                  "init": ("--init", {"importance_map", "autoencoder"}),
                  "lr_final": ("--lr-final", {"importance_map", "autoencoder"})}


def check_options(args: argparse.Namespace) -> None:
    """Reject an option the chosen model does not use (naming it and the models that do), and fill
    in the defaults of the chosen model's own options."""
    unused = []
    for dest, (models, option, default) in _MODEL_OPTIONS.items():
        if args.model in models:
            if getattr(args, dest, None) is None:
                setattr(args, dest, default)
        elif getattr(args, dest, None) is not None:
            unused.append(f"{option} (used by {', '.join(sorted(models))})")
    for dest, (option, models) in _PARTLY_SHARED.items():
        if args.model not in models and getattr(args, dest, None) is not None:
            unused.append(f"{option} (used by {', '.join(sorted(models))})")
    if unused:
        raise ValueError(f"lcbench train {args.model} does not use {'; '.join(unused)}: remove "
                         f"{'it' if len(unused) == 1 else 'them'}")


def check_values(args: argparse.Namespace) -> None:
    """Values that would fail only once training started (or never train), checked before anything
    runs: ValueError naming the option."""
    import math

    if args.steps <= 0 or args.batch <= 0 or args.crop < 16 or args.crop % 8:
        raise ValueError("--steps and --batch must be positive and --crop a multiple of 8, at least 16")
    counts = {"--log-every": args.log_every, "--checkpoint-every": args.checkpoint_every, "--threads": args.threads}
    if args.model == "importance_map":
        counts.update({"--n": args.n, "--levels": args.levels})
    elif args.model == "autoencoder":
        counts.update({"--hidden-channels": args.hidden_channels, "--latent-channels": args.latent_channels})
    elif args.model == "comcnn":
        counts.update({"--channels": args.channels, "--rounds": args.rounds})
        if args.rec_layers < 2:
            raise ValueError(f"--rec-layers {args.rec_layers}: RecCNN needs at least 2 layers")
    for option, value in counts.items():
        if value < 1:
            raise ValueError(f"{option} {value}: must be at least 1")
    rates = {"--lr": args.lr, "--com-lr": getattr(args, "com_lr", None)}
    for option, value in rates.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} {value}: must be a positive number")
    if args.lr_final is not None and not (math.isfinite(args.lr_final) and args.lr_final >= 0):
        raise ValueError(f"--lr-final {args.lr_final}: must be a number >= 0")
    if args.model == "importance_map":
        from lcbench.learned.train import check_width

        check_width(args.width)
    from lcbench.runner import check_device

    check_device(args.device)  # --device cuda on a machine without a GPU: named, before any data loads


def run(args: argparse.Namespace) -> int:
    """Exit 2 for bad input (options, data, files); 1 when training diverged (loss or weights not finite)."""
    from lcbench.training import TrainingDiverged

    _, run_model = TRAINERS[args.model]
    check_options(args)
    check_values(args)
    try:
        return run_model(args)
    except TrainingDiverged as exc:  # the run failed (not bad input): what was kept is in the message
        import sys

        print(f"lcbench train: error: {exc}", file=sys.stderr)
        return 1
