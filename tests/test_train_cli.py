"""``lcbench train``: a file that is not a checkpoint given to --resume, and options the chosen
model does not use, are bad input (exit 2, message naming the file or option, no traceback)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lcbench.cli import build_parser, main
from lcbench.cli.train import check_options
from lcbench.training import CHECKPOINT_KEYS, CheckpointError, load_checkpoint


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


# -- training that diverges, non-finite and malformed weights files ---------------------------------

import re  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lcbench.registry import create_codec  # noqa: E402
from support import photo  # noqa: E402

TINY_ARGS = {"importance_map": ["--n", "16", "--levels", "4", "--width", "0.125"],
             "autoencoder": ["--hidden-channels", "8", "--latent-channels", "4"],
             "comcnn": ["--channels", "4", "--rec-layers", "2", "--qualities", "50"]}


def _data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    Image.fromarray(photo("astronaut", (96, 96))).save(d / "a.png")
    Image.fromarray(photo("coffee", (80, 120))).save(d / "b.png")
    return d


def _tiny_run(tmp_path: Path, model: str, out: Path, *extra: str) -> list[str]:
    return ["train", model, "--data", str(_data(tmp_path)), "--out", str(out), "--batch", "2", "--crop", "32",
            "--log-every", "1", "--checkpoint-every", "1", *TINY_ARGS[model], *extra]


@pytest.mark.parametrize("model", ["importance_map", "autoencoder"])
def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, model):
    """--lr 1e6: the autoencoder wrote a weights file of 39/39 NaN tensors, importance_map crashed with an
    IndexError after training; now training stops at the first non-finite loss (exit 1), writes no weights
    and leaves the checkpoint of the step before, which has finite weights and resumes."""
    out = tmp_path / "w" / "m.pt"
    assert main(_tiny_run(tmp_path, model, out, "--lr", "1e6", "--steps", "3")) == 1
    err = capsys.readouterr().err
    m = re.search(rf"{model} training diverged at step (\d+): the loss is nan", err)
    assert m, err
    assert "Traceback" not in err and f"{out} was not written" in err and "Try a lower --lr" in err
    assert not out.exists()
    ckpt = torch.load(out.with_suffix(".ckpt"), weights_only=True)
    assert ckpt["step"] == int(m.group(1)) - 1 >= 1
    assert f"the last good checkpoint, {out.with_suffix('.ckpt')} (step {ckpt['step']}), is kept" in err
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values() if v.is_floating_point())
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(1, ckpt["step"] + 1)]  # no nan row


def test_diverging_comcnn_keeps_the_last_weights_it_saved(tmp_path, capsys):
    from lcbench.comcnn import weights as comcnn_weights

    out = tmp_path / "w" / "c.pt"
    assert main(_tiny_run(tmp_path, "comcnn", out, "--steps", "3", "--rounds", "2", "--lr", "1e-3",
                          "--com-lr", "1e9")) == 1
    err = capsys.readouterr().err
    assert "comcnn training diverged at step 2" in err and "Traceback" not in err
    assert f"the last good checkpoint, {out} (step 1), is kept" in err
    _, meta = comcnn_weights.load(out)  # finite, loads
    assert meta["trained_steps"] == 1 and not meta["finished"]


def _tiny_importance_map_file(path: Path) -> None:
    from lcbench.learned import entropy, weights
    from lcbench.learned.model import ImportanceMapNet, ModelConfig

    torch.manual_seed(0)
    net = ImportanceMapNet(ModelConfig(n=16, levels=4, width=0.125)).eval()
    img = photo("astronaut", (64, 128))
    weights.save(path, net, entropy.fit_context_model(net, [img[:, :64].copy(), img[:, 64:].copy()]), {})


def _tiny_autoencoder_file(path: Path) -> None:
    from lcbench.autoencoder import weights
    from lcbench.autoencoder.model import AutoEncoder, ModelConfig

    torch.manual_seed(0)
    weights.save(path, AutoEncoder(ModelConfig(channels=8, latent=4)).eval(), {})


def _rewrite(path: Path, change) -> None:
    blob = torch.load(path, weights_only=True)
    change(blob)
    torch.save(blob, path)


@pytest.mark.parametrize("model", ["importance_map", "autoencoder"])
def test_weights_file_with_nan_tensors_is_refused_before_a_run(tmp_path, model):
    """A NaN weights file passed load and availability (every job then failed or gave ~8 dB)."""
    d = tmp_path / "w"
    d.mkdir()
    path = d / f"{model}_1.pt"
    (_tiny_importance_map_file if model == "importance_map" else _tiny_autoencoder_file)(path)
    codec = create_codec(model, weights_dir=str(d))
    assert codec.availability_here()  # the intact file is fine

    def poison(blob):
        name = sorted(blob["state_dict"])[0]
        blob["state_dict"][name] = torch.full_like(blob["state_dict"][name], float("nan"))

    _rewrite(path, poison)
    if model == "importance_map":
        from lcbench.learned.weights import WeightsError, load_model as load
    else:
        from lcbench.autoencoder.weights import WeightsError, load
    with pytest.raises(WeightsError, match=rf"{model} weights file {re.escape(str(path))} contains NaN/inf weights"):
        load(path)
    avail = create_codec(model, weights_dir=str(d)).availability_here()
    assert not avail and str(path) in avail.reason and "NaN/inf" in avail.reason


def test_saving_nan_or_float16_overflowing_weights_is_refused(tmp_path):
    from lcbench.autoencoder import weights
    from lcbench.autoencoder.model import AutoEncoder, ModelConfig
    from lcbench.autoencoder.tables import EntropyTableError, build_tables

    net = AutoEncoder(ModelConfig(channels=8, latent=4))
    with torch.no_grad():
        next(net.density.parameters()).fill_(float("nan"))
    with pytest.raises(EntropyTableError, match="NaN/inf probabilities"):
        build_tables(net.density)  # was: a RuntimeWarning and garbage integer tables
    with pytest.raises(ValueError, match="NaN/inf in float16"):
        weights.save(tmp_path / "a.pt", net, {})
    net = AutoEncoder(ModelConfig(channels=8, latent=4))
    with torch.no_grad():
        next(net.parameters()).fill_(1e6)  # finite in float32, inf in the float16 file
    with pytest.raises(ValueError, match="NaN/inf in float16"):
        weights.save(tmp_path / "b.pt", net, {})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("model", ["importance_map", "autoencoder"])
def test_resume_from_a_checkpoint_with_nan_weights_is_refused(tmp_path, capsys, model):
    out = tmp_path / "w" / "m.pt"
    assert main(_tiny_run(tmp_path, model, out, "--steps", "1")) == 0
    ckpt = out.with_suffix(".ckpt")
    _rewrite(ckpt, lambda b: b["model"][sorted(b["model"])[0]].fill_(float("inf")))
    assert main(_tiny_run(tmp_path / "w", model, out, "--steps", "2", "--resume", str(ckpt))) == 2
    err = capsys.readouterr().err
    assert f"cannot start from {ckpt}: it contains NaN/inf weights" in err and "Traceback" not in err


@pytest.mark.parametrize("change, message", [
    (lambda b: b.__setitem__("entropy", [1, 2, 3]), "'entropy' is a list, not a dict"),
    (lambda b: b["entropy"].__setitem__("bit_weights", b["entropy"]["bit_weights"].tolist()),
     "entropy table 'bit_weights' is a list, not a tensor"),
    (lambda b: b["entropy"].__setitem__("map_counts", b["entropy"]["map_counts"].float()),
     "entropy table 'map_counts' is torch.float32, not integers"),
    (lambda b: b.__setitem__("state_dict", list(b["state_dict"].values())), "'state_dict' is a list"),
])
def test_malformed_importance_map_file_is_named(tmp_path, change, message):
    """'entropy' stored as a list gave a TypeError and a table stored as a list an AttributeError,
    neither naming the file."""
    from lcbench.learned.weights import WeightsError, load_model

    path = tmp_path / "importance_map_1.pt"
    _tiny_importance_map_file(path)
    _rewrite(path, change)
    with pytest.raises(WeightsError, match=re.escape(str(path))) as info:
        load_model(path)
    assert message in str(info.value)
    avail = create_codec("importance_map", weights_dir=str(tmp_path)).availability_here()
    assert not avail and str(path) in avail.reason and message in avail.reason


def test_context_model_rejects_tables_that_are_not_integer_tensors():
    from lcbench.learned import entropy

    with pytest.raises(entropy.EntropyModelError, match="'bit_weights' is a list"):
        entropy.ContextModel({"bit_weights": [[0]], "logistic_table": torch.zeros(3), "map_counts": []}, 16, 4)
    with pytest.raises(entropy.EntropyModelError, match="tables are a list"):
        entropy.ContextModel([1, 2], 16, 4)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.__setitem__("tables", [1, 2]), "the entropy tables are a list, not a dict"),
    (lambda b: b["tables"].__setitem__("counts", b["tables"]["counts"].tolist()),
     "entropy table 'counts' is a list, not an integer tensor"),
    (lambda b: b.pop("tables"), "has no entropy tables"),
])
def test_malformed_autoencoder_file_is_named(tmp_path, change, message):
    from lcbench.autoencoder.weights import WeightsError, load

    path = tmp_path / "autoencoder_1.pt"
    _tiny_autoencoder_file(path)
    _rewrite(path, change)
    with pytest.raises(WeightsError, match=re.escape(str(path))) as info:
        load(path)
    assert message in str(info.value)
    avail = create_codec("autoencoder", weights_dir=str(tmp_path)).availability_here()
    assert not avail and str(path) in avail.reason


# -- option values ------------------------------------------------------------------------------

@pytest.mark.parametrize("model, option, message", [
    ("importance_map", ["--log-every", "0"], "--log-every 0: must be at least 1"),
    ("autoencoder", ["--log-every", "0"], "--log-every 0: must be at least 1"),
    ("comcnn", ["--log-every", "0"], "--log-every 0: must be at least 1"),
    ("importance_map", ["--checkpoint-every", "0"], "--checkpoint-every 0: must be at least 1"),
    ("autoencoder", ["--checkpoint-every", "0"], "--checkpoint-every 0: must be at least 1"),
    ("importance_map", ["--levels", "0"], "--levels 0: must be at least 1"),
    ("importance_map", ["--n", "0"], "--n 0: must be at least 1"),
    ("importance_map", ["--width", "0"], "--width 0.0: must be a positive number"),
    ("importance_map", ["--width", "0.05"], "--width 0.05: gives 13 and 26 decoder channels"),
    ("autoencoder", ["--hidden-channels", "0"], "--hidden-channels 0: must be at least 1"),
    ("autoencoder", ["--latent-channels", "0"], "--latent-channels 0: must be at least 1"),
    ("autoencoder", ["--lr", "-1"], "--lr -1.0: must be a positive number"),
    ("comcnn", ["--channels", "0"], "--channels 0: must be at least 1"),
    ("comcnn", ["--threads", "0"], "--threads 0: must be at least 1"),
])
def test_bad_option_values_are_refused_before_training(tmp_path, capsys, model, option, message):
    """These gave ZeroDivisionError/IndexError tracebacks or torch errors after training had started."""
    _data(tmp_path)
    args = ["train", model, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "w" / "m.pt"),
            "--batch", "2", "--crop", "32", "--steps", "2", *option]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_width_check_matches_the_network():
    """check_width accepts exactly the widths whose network runs (its depth-to-space layers need
    round(256 w) divisible by 16 and round(512 w) by 4)."""
    from lcbench.learned.model import ImportanceMapNet, ModelConfig
    from lcbench.learned.train import check_width

    accepted = []
    for width in [0.01, 0.03, 0.0625, 0.0637, 0.07, 0.1, 0.125, 0.1875, 0.2, 0.25, 0.3, 0.375]:
        try:
            check_width(width)
            ok = True
        except ValueError:
            ok = False
        try:
            with torch.no_grad():
                ImportanceMapNet(ModelConfig(n=8, levels=4, width=width)).synthesise(torch.zeros(1, 8, 2, 2))
            runs = True
        except RuntimeError:
            runs = False
        assert ok == runs, width
        accepted += [width] if ok else []
    assert accepted == [0.0625, 0.125, 0.1875, 0.25, 0.375]


# -- --out beside its own curves and checkpoint ---------------------------------------------------

@pytest.mark.parametrize("model, name, clash", [("importance_map", "m.csv", "the curves (CSV)"),
                                                ("importance_map", "m.ckpt", "the checkpoint"),
                                                ("autoencoder", "m.ckpt", "the checkpoint"),
                                                ("autoencoder", "m.csv", "the curves (CSV)"),
                                                ("comcnn", "m.csv", "the curves (CSV)")])
def test_out_that_is_its_own_curves_or_checkpoint_is_refused(tmp_path, capsys, model, name, clash):
    """--out x.csv wrote the weights over the curves; --out x.ckpt the final weights over the checkpoint."""
    out = tmp_path / "w" / name
    assert main(_tiny_run(tmp_path, model, out, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: a run writes {clash} to {out}, which is --out itself" in err
    assert f"--out {out.with_suffix('.pt')}" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


# -- never train on evaluation sets ----------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def eval_sets() -> Path:
    if not (SHARED / "set5" / "bird.png").is_file() or not (SHARED / "set14" / "bridge.png").is_file():
        pytest.skip("shared Set5/Set14 copies not present")
    return SHARED


@pytest.mark.parametrize("model", ["importance_map", "autoencoder", "comcnn"])
def test_evaluation_images_in_the_training_data_are_refused(tmp_path, capsys, eval_sets, model):
    """A copy of an evaluation image (same pixels, whatever the file: another name, RGBA, or greyscale
    bridge.png saved as RGB) among ordinary training images is named, with its set; nothing is written."""
    d = _data(tmp_path)
    (d / "sub").mkdir()
    Image.open(eval_sets / "set5" / "bird.png").save(d / "renamed.png")
    Image.open(eval_sets / "set5" / "baby.png").convert("RGBA").save(d / "baby_rgba.png")
    Image.open(eval_sets / "set14" / "bridge.png").convert("RGB").save(d / "sub" / "x.png")
    out = tmp_path / "w" / "m.pt"
    assert main(["train", model, "--data", str(d), "--out", str(out), "--steps", "1", "--batch", "2",
                 "--crop", "32", *TINY_ARGS[model]]) == 2
    err = capsys.readouterr().err
    assert "the training data holds evaluation images" in err and "Traceback" not in err
    assert f"{d / 'renamed.png'} is set5's bird.png" in err
    assert f"{d / 'baby_rgba.png'} is set5's baby.png" in err
    assert f"{d / 'sub' / 'x.png'} is set14's bridge.png" in err
    assert f"{d / 'a.png'}" not in err
    assert not (tmp_path / "w").exists()


def test_an_evaluation_set_folder_or_name_is_refused(tmp_path, capsys, eval_sets, monkeypatch):
    out = tmp_path / "w" / "m.pt"
    common = ["--out", str(out), "--steps", "1", "--batch", "2", "--crop", "32", *TINY_ARGS["importance_map"]]
    assert main(["train", "importance_map", "--data", str(eval_sets / "kodak"), *common]) == 2
    assert f"{eval_sets / 'kodak' / 'kodim01.png'} is kodak's kodim01.png" in capsys.readouterr().err
    assert main(["train", "importance_map", "--data", "set14", *common]) == 2
    assert "--data set14: 'set14' is an evaluation dataset" in capsys.readouterr().err
    # a set without recorded pixel checksums is known by where lcbench keeps it: an $LCBENCH_DATA mirror...
    mirror = tmp_path / "mirrors" / "div2k-valid"
    mirror.mkdir(parents=True)
    Image.fromarray(photo("chelsea", (64, 64))).save(mirror / "0801.png")
    monkeypatch.setenv("LCBENCH_DATA", str(tmp_path / "mirrors"))
    assert main(["train", "importance_map", "--data", str(mirror), *common]) == 2
    assert "copy of the evaluation dataset 'div2k-valid'" in capsys.readouterr().err
    assert main(["train", "importance_map", "--data", str(tmp_path / "mirrors"), *common]) == 2  # a folder above it
    assert "copy of the evaluation dataset 'div2k-valid'" in capsys.readouterr().err
    # ...or the cache
    from lcbench import cache

    cached = cache.datasets_dir() / "bsd100"
    cached.mkdir(parents=True)
    try:
        Image.fromarray(photo("chelsea", (64, 64))).save(cached / "x.png")
        assert main(["train", "importance_map", "--data", str(cached), *common]) == 2
        assert "copy of the evaluation dataset 'bsd100'" in capsys.readouterr().err
    finally:
        (cached / "x.png").unlink()
        cached.rmdir()
    assert not (tmp_path / "w").exists()


def test_comcnn_needs_images_at_least_one_crop_in_size(tmp_path, capsys):
    from PIL import Image

    from support import photo

    Image.fromarray(photo("astronaut", (40, 40))).save(tmp_path / "a.png")
    assert main(_train(tmp_path, "comcnn", "--codec", "jpeg", "--steps", "1", "--crop", "64", "--batch", "1")) == 2
    assert "no training image is at least 64 px on both sides" in capsys.readouterr().err
