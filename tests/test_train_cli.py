"""``lcbench train``: a file that is not a checkpoint given to --resume, and options the chosen
model does not use, are bad input (exit 2, message naming the file or option, no traceback)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lcbench.cli import build_parser, main
from lcbench.cli.train import check_options
from lcbench.learned.train import CHECKPOINT_KEYS, CheckpointError, load_checkpoint


def _train(tmp_path: Path, model: str, *extra: str) -> list[str]:
    return ["train", model, "--data", str(tmp_path), "--out", str(tmp_path / "w" / "m.pt"), *extra]


@pytest.mark.parametrize("model", ["importance_map", "autoencoder"])
def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, capsys, model):
    junk = tmp_path / "notes.ckpt"
    junk.write_text("this is not a checkpoint\n")
    assert main(_train(tmp_path, model, "--resume", str(junk))) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {junk}: not a training checkpoint" in err
    assert "Traceback" not in err
    assert not (tmp_path / "w").exists()  # failed before creating anything


def test_resume_from_a_missing_file_or_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"cannot resume from .*nope\.ckpt: no such file"):
        load_checkpoint(tmp_path / "nope.ckpt", "autoencoder")
    with pytest.raises(CheckpointError, match=r"not a file"):
        load_checkpoint(tmp_path, "autoencoder")


def test_resume_from_a_torch_file_without_checkpoint_keys(tmp_path, capsys):
    p = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, p)
    assert main(_train(tmp_path, "autoencoder", "--resume", str(p))) == 2
    err = capsys.readouterr().err
    assert f"{p}: not a training checkpoint of autoencoder (missing model, optimizer" in err


def test_resume_autoencoder_from_an_importance_map_checkpoint(tmp_path, capsys):
    p = tmp_path / "im.ckpt"
    ckpt = {k: None for k in CHECKPOINT_KEYS}
    ckpt.update(model_config={"n": 128, "levels": 32, "width": 0.25}, model={}, step=3)
    torch.save(ckpt, p)
    assert main(_train(tmp_path, "autoencoder", "--resume", str(p))) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {p}: the checkpoint's network is not autoencoder's" in err


@pytest.mark.parametrize("model, option, owner", [
    ("autoencoder", ["--rate-target", "0.2"], "importance_map"),
    ("autoencoder", ["--rate-target", "0.25"], "importance_map"),  # the other model's default value too
    ("autoencoder", ["--channels", "8"], "comcnn"),
    ("importance_map", ["--lmbda", "0.1"], "autoencoder"),
    ("importance_map", ["--codec", "jpeg"], "comcnn"),
    ("comcnn", ["--lr-final", "1e-5"], "autoencoder, importance_map"),
    ("comcnn", ["--n", "64"], "importance_map"),
    ("comcnn", ["--init", "x.pt"], "autoencoder, importance_map"),
])
def test_options_of_another_model_are_rejected(tmp_path, capsys, model, option, owner):
    assert main(_train(tmp_path, model, *option)) == 2
    err = capsys.readouterr().err
    assert f"lcbench train {model} does not use {option[0]} (used by {owner})" in err
    assert not (tmp_path / "w").exists()  # nothing started


def test_several_unused_options_are_all_named(tmp_path, capsys):
    assert main(_train(tmp_path, "autoencoder", "--gamma", "0.1", "--levels", "16")) == 2
    err = capsys.readouterr().err
    assert "--gamma (used by importance_map)" in err and "--levels (used by importance_map)" in err


def test_chosen_model_keeps_its_defaults_and_values():
    args = build_parser().parse_args(["train", "importance_map", "--data", "d", "--out", "o.pt", "--n", "64"])
    check_options(args)
    assert (args.n, args.rate_target, args.levels, args.gamma) == (64, 0.25, 32, 0.02)
    assert args.lmbda is None and args.codec is None  # other models' options stay unset
    args = build_parser().parse_args(["train", "autoencoder", "--data", "d", "--out", "o.pt"])
    check_options(args)
    assert (args.lmbda, args.hidden_channels, args.latent_channels) == (0.01, 64, 96)
    args = build_parser().parse_args(["train", "comcnn", "--data", "d", "--out", "o.pt"])
    check_options(args)
    assert (args.codec, args.rounds, args.com_lr, args.channels, args.rec_layers) == ("jpeg", 3, 1e-4, 32, 10)


def test_init_from_a_file_that_is_neither_weights_nor_checkpoint(tmp_path, capsys):
    junk = tmp_path / "base.pt"
    junk.write_text("not weights\n")
    assert main(_train(tmp_path, "importance_map", "--init", str(junk))) == 2
    err = capsys.readouterr().err
    assert f"importance_map weights file {junk} is corrupt or not a torch file" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("codec,qualities,bad", [("jpeg", "30,500", "quality 500 is outside the codec's range"),
                                                 ("jpeg", "50.5", "quality 50.5: the codec takes whole numbers"),
                                                 ("webp", "50,101", "quality 101 is outside the codec's range")])
def test_comcnn_qualities_are_checked_by_the_codec(tmp_path, capsys, codec, qualities, bad):
    """`lcbench train comcnn --qualities 500` trained silently on a quality jpeg refuses in `lcbench run`."""
    (tmp_path / "a.png").write_bytes(b"")  # never read: the check comes first
    assert main(_train(tmp_path, "comcnn", "--codec", codec, "--qualities", qualities)) == 2
    err = capsys.readouterr().err
    assert f"--qualities: {codec}: {bad}" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()
