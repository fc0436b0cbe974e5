"""ComCNN/RecCNN: shipped weights, comcnn+jpeg round trips, what RecCNN adds, training smoke test."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lcbench.codec import CodecUnavailable
from lcbench.comcnn.model import ComRecPair, ModelConfig
from lcbench.comcnn.train import codec_round_trip, phase_plan, pipeline_loss, to_tensor
from lcbench.comcnn.train_cli import main as train_main
from lcbench.comcnn.weights import WeightsError, load
from lcbench.metrics import psnr_from_mse
from lcbench.registry import create_codec
from lcbench.resample import resize_uint8
from lcbench_codecs.comcnn import default_weights
from support import photo

SHIPPED = default_weights("jpeg")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b) ** 2)))


def test_shipped_weights_are_small_plain_tensors_trained_on_wikipedia() -> None:
    assert SHIPPED.is_file() and SHIPPED.stat().st_size < 2_000_000
    blob = torch.load(SHIPPED, map_location="cpu", weights_only=True)  # no pickled code
    assert blob["format"] == "lcbench-comcnn" and blob["meta"]["codec"] == "jpeg"
    assert Path(blob["meta"]["data"]).name == "train-wikipedia" and blob["meta"]["finished"]
    model, meta = load(SHIPPED)
    assert meta["qualities"] == [float(q) for q in range(10, 91, 10)]
    assert not model.training


def test_version_is_the_weights_sha256() -> None:
    c = create_codec("comcnn+jpeg")
    sha = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert c.version() == f"comcnn weights-sha256:{sha} | jpeg " + create_codec("jpeg").version() + " | pipeline-format 3"
    assert c.label() == "comcnn+jpeg" and c.uses_device and c.default_rates == create_codec("jpeg").default_rates


@pytest.mark.parametrize("size", [(37, 53), (5, 7), (1, 1)])
def test_round_trip_odd_sizes_and_grey(size: tuple[int, int]) -> None:
    c = create_codec("comcnn+jpeg")
    img = photo("chelsea", size)
    grey = np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    for im in (img, grey):
        out = c.decode(c.encode(im, 50))
        assert out.shape == im.shape and out.dtype == np.uint8


def test_compact_image_is_half_size_and_coded_by_the_real_codec() -> None:
    c = create_codec("comcnn+jpeg")
    img = photo("astronaut", (96, 130))
    data = c.encode(img, 70)
    step = c.steps[0]
    compact, side = step.forward(img)
    assert compact.shape == (48, 65, 3) and side == b""
    inner = create_codec("jpeg").encode(compact, 70)
    # tag byte, chain check, varints 96 and 130, the weights' tag, no side information
    assert data.endswith(inner) and len(data) == len(inner) + 1 + 2 + 1 + 2 + 4 + 1
    assert data[6:10] == hashlib.sha256(SHIPPED.read_bytes()).digest()[:4]


def _rescaled_copy(src: Path, dst: Path, factor: float) -> None:
    """A weights file like src with RecCNN's last layer scaled: other weights, same format."""
    blob = torch.load(src, map_location="cpu", weights_only=True)
    last = [k for k in blob["state_dict"] if k.startswith("rec") and k.endswith("weight")][-1]
    blob["state_dict"][last] = blob["state_dict"][last] * factor
    torch.save(blob, dst)


def test_bitstream_names_the_weights_by_content_not_by_path(tmp_path: Path) -> None:
    """Format 2 checked sha256(label), and the label holds the weights *path*: weights overwritten in
    the same file decoded silently (pixels off by up to 80), while the same weights at another path
    were refused. The header now carries 4 bytes of the weights' sha256 and the chain check leaves
    the path out."""
    import shutil

    from lcbench.codec import CodecError

    w = tmp_path / "w.pt"
    shutil.copy(SHIPPED, w)
    img = photo("astronaut", (40, 56))
    first = create_codec(f"comcnn:weights={w}+jpeg")
    data = first.encode(img, 50)
    decoded = first.decode(data)
    assert data[3:5] == bytes([40, 56])  # the size, then the weights' tag
    assert data[5:9] == hashlib.sha256(SHIPPED.read_bytes()).digest()[:4]
    # the same weights under another path, or as the default weights: the same pixels
    moved = tmp_path / "elsewhere" / "copy.pt"
    moved.parent.mkdir()
    shutil.copy(SHIPPED, moved)
    assert np.array_equal(create_codec(f"comcnn:weights={moved}+jpeg").decode(data), decoded)
    assert np.array_equal(create_codec("comcnn+jpeg").decode(data), decoded)
    # other weights under the same path: refused, naming the step and both tags
    _rescaled_copy(SHIPPED, w, 3.0)
    other = create_codec(f"comcnn:weights={w}+jpeg")
    assert other.label() == first.label() and other.version() != first.version()
    with pytest.raises(CodecError, match=rf"written with other comcnn weights \(weights tag {data[5:9].hex()};"):
        other.decode(data)
    # and other steps are still refused by the chain check
    with pytest.raises(CodecError, match="other steps or another codec"):
        create_codec(f"comcnn:weights={moved}+webp").decode(data)


def test_reccnn_restores_better_than_bicubic() -> None:
    """The trained RecCNN beats plain bicubic upsampling of the same decoded compact image."""
    c = create_codec("comcnn+jpeg")
    step = c.steps[0]
    img = photo("astronaut", (256, 256))
    jpeg = create_codec("jpeg")
    for q in (20, 50, 90):
        decoded = jpeg.decode(jpeg.encode(step.forward(img)[0], q))
        gain = psnr(img, step.inverse(decoded, b"", 256, 256)) - psnr(img, resize_uint8(decoded, 256, 256))
        assert gain > 0.2, f"quality {q}: RecCNN gains only {gain:.2f} dB over bicubic"


def test_missing_weights_are_named() -> None:
    with pytest.raises(CodecUnavailable, match="comcnn_webp.pt is missing.*jpeg only"):
        create_codec("comcnn+webp").version()
    with pytest.raises(CodecUnavailable, match="nope.pt is missing"):
        create_codec("comcnn:weights=nope.pt+jpeg").encode(photo("coffee", (16, 16)), 50)


@pytest.mark.parametrize("inner", ["jpeg2000", "webp", "webp:method=4"])
def test_availability_finds_the_missing_default_weights(inner: str, capsys) -> None:
    """Only comcnn_jpeg.pt ships: `lcbench steps comcnn+webp` said "available" and `run` then refused."""
    from lcbench.cli import main

    name = inner.split(":")[0]
    avail = create_codec(f"comcnn+{inner}").availability_here()
    assert not avail
    assert f"comcnn_{name}.pt is missing" in avail.reason and "jpeg only" in avail.reason
    assert f"lcbench train comcnn --codec {name} " in avail.fix
    assert main(["steps", f"comcnn+{inner}"]) == 0
    out = capsys.readouterr().out
    assert f"comcnn+{inner}: UNAVAILABLE: comcnn: weights file " in out
    assert f"comcnn_{name}.pt is missing" in out and f"Fix: train weights with `lcbench train comcnn --codec {name}" in out
    assert create_codec("comcnn+jpeg").availability_here()
    assert main(["steps", "comcnn+jpeg"]) == 0
    assert "comcnn+jpeg: available; rate grid quality" in capsys.readouterr().out


def test_missing_weights_file_option_is_unavailable(tmp_path: Path) -> None:
    avail = create_codec(f"comcnn:weights={tmp_path / 'nope.pt'}+jpeg").availability_here()
    assert not avail and "nope.pt is missing" in avail.reason and "comcnn:weights=" in avail.fix
    assert create_codec(f"comcnn:weights={SHIPPED}+jpeg").availability_here()


@pytest.mark.parametrize("spec", ["comcnn:weights=+jpeg", "comcnn:weights= +jpeg"])
def test_empty_weights_option_is_refused(spec: str, capsys) -> None:
    """`comcnn:weights=+jpeg` used the default weights under the label comcnn+jpeg."""
    from lcbench.cli import main

    with pytest.raises(ValueError, match="comcnn: option weights is empty"):
        create_codec(spec)
    assert main(["steps", spec]) == 2
    assert "option weights is empty" in capsys.readouterr().err


def test_corrupt_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="bad.pt is corrupt"):
        load(bad)


def test_corrupt_weights_file_stops_the_run_before_any_job(image_folder: Path, tmp_path: Path, capsys) -> None:
    """comcnn:weights=FILE with a text file: bad input (exit 2) naming the file before the run, not an
    error in every job (exit 1), and without torch's advice to load it with weights_only=False."""
    from lcbench.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_text("not a torch file at all")
    with pytest.raises(CodecUnavailable, match=r"bad\.pt is corrupt or not a torch file, so not a valid weights file"):
        create_codec(f"comcnn:weights={bad}+jpeg").version()
    code = main(["run", "--codecs", f"comcnn:weights={bad}+jpeg", "--dataset", str(image_folder),
                 "--out", str(tmp_path / "run"), "-q", "50", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "bad.pt" in err and "not a valid weights file" in err
    assert "weights_only=False" not in err and "Re-running" not in err and "will likely succeed" not in err


def test_phase_plan() -> None:
    assert phase_plan(10, 2) == [("rec", 4), ("com", 3), ("rec", 3)]
    assert phase_plan(5, 1) == [("rec", 5)]


def test_straight_through_gradient_reaches_comcnn_only_when_asked() -> None:
    torch.manual_seed(0)
    model = ComRecPair(ModelConfig(channels=8, rec_layers=3))
    x = to_tensor(photo("astronaut", (32, 32))[None], "cpu")
    jpeg = create_codec("jpeg")
    loss, _, bits = pipeline_loss(model, x, jpeg, [50], random.Random(0), train_com=True)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.com.parameters())
    # the forward value is the real codec's: bits are those of JPEG on the compact image
    compact = (model.com(x).detach().clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255)
    compact = np.clip(np.rint(compact), 0, 255).astype(np.uint8)
    assert bits == 8 * len(jpeg.encode(compact, 50))
    model.zero_grad(set_to_none=True)
    loss, _, _ = pipeline_loss(model, x, jpeg, [50], random.Random(0), train_com=False)
    loss.backward()
    assert all(p.grad is None for p in model.com.parameters())
    assert all(p.grad is not None for p in model.rec.parameters())


def test_codec_round_trip_uses_the_qualities() -> None:
    lows = np.stack([photo("coffee", (16, 16))] * 3)
    jpeg = create_codec("jpeg")
    dec, bits = codec_round_trip(jpeg, lows, [35], random.Random(1))
    assert bits == 3 * 8 * len(jpeg.encode(lows[0], 35))
    assert np.array_equal(dec[0], jpeg.decode(jpeg.encode(lows[0], 35)))


def test_training_smoke(tmp_path: Path) -> None:
    data = tmp_path / "train"
    data.mkdir()
    Image.fromarray(photo("astronaut", (80, 96))).save(data / "a.png")
    Image.fromarray(photo("coffee", (64, 70))).save(data / "b.png")
    out = tmp_path / "w.pt"
    assert train_main(["--data", str(data), "--out", str(out), "--steps", "3", "--batch", "2", "--crop", "32",
                       "--rounds", "2", "--channels", "8", "--rec-layers", "3", "--qualities", "20,60",
                       "--log-every", "1"]) == 0
    model, meta = load(out)
    assert meta["finished"] and meta["trained_steps"] == 3 and meta["qualities"] == [20.0, 60.0]
    assert model.config == ModelConfig(channels=8, rec_layers=3)
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("step,phase,loss") and [r.split(",")[1] for r in rows[1:]] == ["rec", "com", "rec"]
    c = create_codec(f"comcnn:weights={out}+jpeg")
    img = photo("chelsea", (21, 34))
    assert c.decode(c.encode(img, 50)).shape == img.shape
    with pytest.raises(ValueError, match="multiple of 16"):
        train_main(["--data", str(data), "--out", str(out), "--crop", "40"])


def test_lcbench_train_comcnn_through_the_train_command(tmp_path: Path, monkeypatch) -> None:
    """The entry the lead adds to lcbench/cli/train.py's TRAINERS, exercised through the real CLI."""
    from lcbench.cli import main as cli_main
    from lcbench.cli import train as train_cmd
    from lcbench.comcnn import train_cli

    monkeypatch.setitem(train_cmd.TRAINERS, "comcnn", (train_cli.add_arguments, train_cli.run))
    data = tmp_path / "train"
    data.mkdir()
    Image.fromarray(photo("astronaut", (64, 64))).save(data / "a.png")
    out = tmp_path / "c.pt"
    assert cli_main(["train", "comcnn", "--codec", "jpeg", "--data", str(data), "--out", str(out), "--steps", "2",
                     "--batch", "1", "--crop", "32", "--channels", "4", "--rec-layers", "2", "--rounds", "1"]) == 0
    _, meta = load(out)
    assert meta["codec"] == "jpeg" and meta["trained_steps"] == 2 and meta["rounds"] == 1
    assert cli_main(["train", "comcnn", "--data", str(data), "--out", str(out), "--resume", "x.ckpt"]) == 2


def test_comcnn_weights_rewritten_after_the_version_was_taken_are_refused(tmp_path):
    import shutil

    from lcbench.codec import CodecError
    from lcbench.registry import create_codec

    shipped = Path(__file__).resolve().parents[1] / "codecs" / "weights" / "comcnn_jpeg.pt"
    w = tmp_path / "w.pt"
    shutil.copy(shipped, w)
    codec = create_codec(f"comcnn:weights={w}+jpeg")
    codec.version()
    import torch

    blob = torch.load(w, weights_only=True)
    key = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][key] = blob["state_dict"][key] * 2
    torch.save(blob, w)
    with pytest.raises(CodecError, match=r"w\.pt changed during the run"):
        codec.encode(np.zeros((64, 64, 3), np.uint8), 50)
