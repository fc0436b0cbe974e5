"""importance_map: the network's mask rule, the entropy coder, the bitstream, the codec and training.

Fast: a tiny random-initialised network (weights written to tmp_path in the real file
format) for round trips; the shipped weights once, on one small real photo.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from lcbench.codec import CodecError, CodecUnavailable  # noqa: E402
from lcbench.learned import bitstream, entropy, weights  # noqa: E402
from lcbench.learned.model import (ImportanceMapNet, ModelConfig, _Binarize, _ImportanceMask,  # noqa: E402
                                   importance_mask, levels_of)
from lcbench.registry import create_codec  # noqa: E402
from support import photo  # noqa: E402

TINY = ModelConfig(n=16, levels=4, width=0.125)


@pytest.fixture(scope="module")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with importance_map_1.pt: random-init tiny network, context model fitted on real photo crops."""
    torch.manual_seed(0)
    net = ImportanceMapNet(TINY).eval()
    img = photo("astronaut")
    crops = [np.ascontiguousarray(img[y:y + 64, x:x + 64]) for y in (0, 200, 400) for x in (0, 150, 300)]
    d = tmp_path_factory.mktemp("imap_weights")
    weights.save(d / "importance_map_1.pt", net, entropy.fit_context_model(net, crops), {"note": "test"})
    return d


@pytest.fixture
def tiny_codec(tiny_weights_dir: Path):
    return create_codec("importance_map", weights_dir=str(tiny_weights_dir))


# -- network pieces ---------------------------------------------------------------------------

def test_mask_keeps_n_over_l_times_level_plus_one_channels() -> None:
    n, levels = 16, 4
    q = torch.tensor([0, 1, 2, 3]).view(1, 1, 1, 4)
    kept = importance_mask(q, n, levels).sum(dim=1).flatten().tolist()
    assert kept == [4, 8, 12, 16]  # (n/L)(q+1), at least n/L
    mask = importance_mask(q, n, levels)[0, :, 0, 1]  # q=1: channels 0..7 only, as a prefix
    assert mask.tolist() == [True] * 8 + [False] * 8
    assert levels_of(torch.tensor([0.0, 0.249, 0.25, 0.999, 1.0]), 4).tolist() == [0, 0, 1, 3, 3]


def test_binarizer_forward_thresholds_and_backward_is_identity() -> None:
    x = torch.tensor([0.1, 0.5, 0.51, 0.9], requires_grad=True)
    y = _Binarize.apply(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_mask_gradient_only_near_the_boundary() -> None:
    n, levels = 16, 4
    p = torch.full((1, 1, 1, 1), 0.3, requires_grad=True)  # L p = 1.2: kept channels 0..7
    m = _ImportanceMask.apply(p, n, levels)
    assert m.flatten().tolist() == [1.0] * 8 + [0.0] * 8
    grad = torch.zeros(1, n, 1, 1)
    grad[0, 15] = 1.0  # ceil(15*4/16) = 4 >= L p + 2 = 3.2: far above the boundary, no gradient
    m.backward(grad, retain_graph=True)
    assert p.grad.item() == 0.0
    p.grad = None
    grad = torch.zeros(1, n, 1, 1)
    grad[0, 8] = 1.0  # ceil(8*4/16) = 2 in [L p - 1, L p + 2): gradient L = 4
    m.backward(grad)
    assert p.grad.item() == 4.0


# -- entropy coder and bitstream --------------------------------------------------------------

def _context_model() -> entropy.ContextModel:
    rng = np.random.default_rng(3)
    w = rng.integers(-300, 300, size=(16, 4, entropy.N_FEATURES)).astype(np.int32)
    tables = {"bit_weights": torch.from_numpy(w), "logistic_table": torch.from_numpy(entropy.logistic_table()),
              "map_counts": torch.from_numpy(rng.integers(0, 50, size=(5, 4)))}
    return entropy.ContextModel(tables, 16, 4)


def test_entropy_coder_round_trip_and_length_near_ideal() -> None:
    cm = _context_model()
    rng = np.random.default_rng(4)
    h, w = 10, 14
    q = rng.integers(0, 4, size=(h, w))
    bits = (rng.random((16, h, w)) < 0.3).astype(np.uint8)
    words = cm.encode(bits, q)
    got_bits, got_q = cm.decode(words, h, w)
    mask = np.arange(16)[:, None, None] * 4 < 16 * (q[None] + 1)
    assert np.array_equal(got_q, q)
    assert np.array_equal(got_bits, bits * mask)
    # Bits outside the mask are not coded: changing them changes nothing.
    assert np.array_equal(cm.encode(np.where(mask, bits, 1 - bits), q), words)
    # The range coder spends about the model's information content (bits part) plus the map.
    ideal = cm.information_bits(bits, q)
    assert ideal < 32 * len(words) < ideal + 2 * h * w + 64


def _numpy_bit_coding(cm: entropy.ContextModel, bits: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coder's definition in numpy (entropy.phase_features, as training uses it), phase by
    phase: the (symbols, P(1)) sequence the compiled coder must reproduce exactly."""
    n, h, w = bits.shape
    mask = np.arange(n)[:, None, None] * cm.levels < n * (q[None] + 1)
    v = np.zeros((n, h + 2, w + 2), dtype=np.int8)
    v[:, 1:-1, 1:-1] = np.where(mask, 2 * bits.astype(np.int8) - 1, 0)
    cum = np.zeros((h, w), dtype=np.int32)
    symbols, probs = [], []
    for k in range(n):
        for s, (oy, ox) in enumerate(entropy.PHASES):
            sel = mask[k, oy::2, ox::2]
            feats = entropy.phase_features(v, k, s, q, cum)[sel]
            probs.append(entropy.bit_probabilities(feats, cm.weights[k, s], cm.table))
            symbols.append(bits[k, oy::2, ox::2][sel].astype(np.int32))
        cum += v[k, 1:-1, 1:-1]
    return np.concatenate(symbols), np.concatenate(probs)


@pytest.mark.parametrize("model", ["random", 1, 5])
def test_compiled_coder_codes_exactly_what_the_numpy_definition_does(model) -> None:
    """The numba loops replaced per-phase numpy code (~135 ms -> a few ms per Kodak-size image);
    their probabilities must equal the definition's bit for bit, or bitstreams would change."""
    import constriction

    from lcbench.learned import _context_kernels as kernels

    if model == "random":
        cm, rng = _context_model(), np.random.default_rng(5)
        q = rng.integers(0, 4, size=(12, 18))
        bits = (rng.random((16, 12, 18)) < 0.4).astype(np.uint8)
    else:  # a shipped model on the code of a real photo
        codec = create_codec("importance_map")
        analysed = codec.encode_device([photo("astronaut", (256, 384))], model)
        _, cm, _ = codec._model(analysed.model_id)
        (_, b, levels), = analysed.groups
        bits, q = b[0], levels[0].astype(np.int64)
    symbols, probs = _numpy_bit_coding(cm, bits, q)
    mask = np.arange(cm.n)[:, None, None] * cm.levels < cm.n * (q[None] + 1)
    v = np.zeros((cm.n, bits.shape[1] + 2, bits.shape[2] + 2), dtype=np.int8)
    v[:, 1:-1, 1:-1] = np.where(mask, 2 * bits.astype(np.int8) - 1, 0)
    got_symbols, got_probs = kernels.all_bits(v, bits, mask, q, cm.weights, cm.table, entropy.AVAILABLE,
                                              entropy.LOGIT_CLIP)
    assert len(symbols) > 1000 and np.array_equal(got_symbols, symbols) and np.array_equal(got_probs, probs)
    # and the whole stream: the numpy definition's range coding of the map and the bits, word for word
    enc = constriction.stream.queue.RangeEncoder()
    counts, prev = cm.map_prior.copy(), None
    for row in q:
        ctx = entropy.map_contexts(prev, q.shape[1], cm.levels)
        enc.encode(row.astype(np.int32), constriction.stream.model.Categorical(perfect=False),
                   counts[ctx] / counts[ctx].sum(axis=1, keepdims=True))
        np.add.at(counts, (ctx, row), entropy.MAP_INCREMENT)
        prev = row
    enc.encode(symbols, constriction.stream.model.Bernoulli(perfect=False), probs)
    words = cm.encode(bits, q)
    assert np.array_equal(words, enc.get_compressed())
    got_bits, got_q = cm.decode(words, *q.shape)
    assert np.array_equal(got_q, q) and np.array_equal(got_bits, bits * mask)


def test_context_features_use_only_decoded_neighbours() -> None:
    # Phase 0 of channel 0 sees nothing but the level and bias; phase 3 sees all 8 same-channel neighbours.
    assert entropy.AVAILABLE[0].sum() == 0 and entropy.AVAILABLE[3].sum() == 8
    v = np.zeros((2, 6, 6), dtype=np.int8)
    v[0, 1:-1, 1:-1] = 1
    f = entropy.phase_features(v, 0, 0, np.full((4, 4), 2), np.zeros((4, 4), dtype=np.int32))
    assert f.shape == (2, 2, entropy.N_FEATURES)
    assert f[..., :19].sum() == 0 and (f[..., 19] == 2).all() and (f[..., 21] == 1).all()


def test_bitstream_header_and_errors() -> None:
    data = bitstream.pack(bitstream.Header(3, b"\x01\x02\x03\x04", 17, 33), np.array([7, 8], dtype=np.uint32))
    assert len(data) == bitstream.HEADER_BYTES + 8 and data[:4] == b"LCIM"
    header, words = bitstream.unpack(data)
    assert (header.model_id, header.height, header.width, header.weights_tag) == (3, 17, 33, b"\x01\x02\x03\x04")
    assert words.tolist() == [7, 8]
    with pytest.raises(bitstream.BitstreamError, match="magic"):
        bitstream.unpack(b"JUNK" + data[4:])
    with pytest.raises(bitstream.BitstreamError, match="whole 32-bit words"):
        bitstream.unpack(data[:-1])


# -- the codec --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (17, 33), (64, 48), (45, 70)])
def test_round_trip_any_size(tiny_codec, size: tuple[int, int]) -> None:
    img = photo("coffee", size)
    data = tiny_codec.encode(img, 1)
    out = tiny_codec.decode(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert data[:4] == b"LCIM"
    est = tiny_codec.extra_columns()
    pad_h, pad_w = -(-size[0] // 16) * 16, -(-size[1] // 16) * 16
    # The estimate counts kept code bits of the padded code map, per original pixel.
    kept = est["kept_fraction"] * 16 * (pad_h // 8) * (pad_w // 8)
    assert est["est_bpp"] == pytest.approx(kept / (size[0] * size[1]))
    assert np.array_equal(tiny_codec.decode(data), out)


def test_batch_equals_single(tiny_codec) -> None:
    imgs = [photo("astronaut", (40, 56)), photo("chelsea", (40, 56)), photo("coffee", (33, 20))]
    batch = tiny_codec.encode_batch(imgs, 1)
    extras = tiny_codec.last_batch_extras  # per-image estimates, read by the runner
    assert len(extras) == 3 and extras[2]["est_bpp"] != extras[0]["est_bpp"]  # 33x20 pads differently
    assert batch == [tiny_codec.encode(im, 1) for im in imgs]
    for got, data in zip(tiny_codec.decode_batch(batch), batch):
        assert np.array_equal(got, tiny_codec.decode(data))


def test_decode_in_a_fresh_process_is_bit_exact(tiny_codec, tiny_weights_dir: Path, tmp_path: Path) -> None:
    img = photo("astronaut", (72, 90))
    data = tiny_codec.encode(img, 1)
    (tmp_path / "img.lcim").write_bytes(data)
    script = textwrap.dedent(f"""
        import numpy as np
        import torch
        from pathlib import Path
        torch.set_num_threads(3)  # a different thread setting must not change the pixels
        from lcbench.registry import create_codec
        c = create_codec("importance_map", weights_dir={str(tiny_weights_dir)!r})
        np.save({str(tmp_path / 'out.npy')!r}, c.decode(Path({str(tmp_path / 'img.lcim')!r}).read_bytes()))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "out.npy"), tiny_codec.decode(data))


def _reseal(data: bytes) -> bytes:
    """Recompute the header+payload CRC-32 after an edit (a stream written with that header)."""
    import struct
    import zlib

    head, payload = data[:bitstream.HEADER_BYTES - 4], data[bitstream.HEADER_BYTES:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_corrupt_truncated_and_foreign_bitstreams(tiny_codec, tmp_path: Path) -> None:
    data = tiny_codec.encode(photo("astronaut", (32, 32)), 1)
    with pytest.raises(CodecError, match="importance_map"):
        tiny_codec.decode(data[:10])
    with pytest.raises(CodecError, match="truncated or damaged"):  # the CRC covers the header too
        tiny_codec.decode(data[:6] + bytes(4) + data[10:])
    with pytest.raises(CodecError, match="other weights"):
        tiny_codec.decode(_reseal(data[:6] + bytes(4) + data[10:]))
    for pos in (bitstream.HEADER_BYTES, len(data) - 1):  # a flipped payload bit is an error, not another picture
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        with pytest.raises(CodecError, match="truncated or damaged"):
            tiny_codec.decode(bytes(flipped))
    with pytest.raises(CodecError, match="truncated or damaged"):
        tiny_codec.decode(data[:-4])
    with pytest.raises(CodecUnavailable, match="no model 7"):
        tiny_codec.decode(_reseal(data[:5] + bytes([7]) + data[6:]))
    with pytest.raises(CodecError, match="not a model id"):
        tiny_codec.encode(photo("astronaut", (32, 32)), 1.5)


def test_corrupt_and_missing_weights_give_clear_errors(tiny_weights_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "importance_map_1.pt").write_bytes(b"not a torch file at all")
    codec = create_codec("importance_map", weights_dir=str(tmp_path))
    with pytest.raises(CodecUnavailable, match="importance_map_1.pt is corrupt"):
        codec.encode(photo("astronaut", (16, 16)), 1)
    with pytest.raises(CodecUnavailable, match="importance_map_2.pt is missing"):
        codec.encode(photo("astronaut", (16, 16)), 2)
    # availability() checks the shipped folder; point it at the corrupt one.
    monkeypatch.setattr(type(codec), "shipped_weights_dir", tmp_path)
    avail = type(codec).availability()
    assert not avail and "corrupt" in avail.reason and "importance_map_1.pt" in avail.reason


def test_corrupt_file_in_weights_dir_stops_the_run_before_any_job(tiny_weights_dir: Path, image_folder: Path,
                                                                  tmp_path: Path, capsys) -> None:
    """A text file named importance_map_2.pt beside a valid model: bad input (exit 2) naming the file,
    found by the availability check before the run, not an error in every job (exit 1)."""
    import shutil

    from lcbench.cli import main

    d = tmp_path / "mine"
    d.mkdir()
    shutil.copy(tiny_weights_dir / "importance_map_1.pt", d / "importance_map_1.pt")
    (d / "importance_map_2.pt").write_text("not a torch file at all")
    codec = create_codec("importance_map", weights_dir=str(d))
    avail = codec.availability_here()
    assert not avail and "importance_map_2.pt" in avail.reason and "not a valid weights file" in avail.reason
    code = main(["run", "--codecs", f"importance_map:weights_dir={d}", "--dataset", str(image_folder),
                 "--out", str(tmp_path / "run"), "-q", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "importance_map_2.pt" in err and "not a valid weights file" in err
    assert "weights_only=False" not in err and "Re-running" not in err and "will likely succeed" not in err
    assert create_codec("importance_map", weights_dir=str(tiny_weights_dir)).availability_here()


def test_weights_error_drops_torchs_advice_to_load_unsafely(tmp_path: Path) -> None:
    """A pickle of a class torch does not allow: torch says re-running with weights_only=False 'will
    likely succeed'; we say the file is not a valid weights file and never suggest that."""
    path = tmp_path / "importance_map_1.pt"
    torch.save({"x": Path("somewhere")}, path)
    with pytest.raises(weights.WeightsError) as info:
        weights.read(path)
    message = str(info.value)
    assert "importance_map_1.pt" in message and "not a valid weights file" in message
    assert "weights_only=False" not in message and "Re-running" not in message and "will likely succeed" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_version_is_the_weights_hash(tiny_codec, tiny_weights_dir: Path) -> None:
    import hashlib

    file_hash = hashlib.sha256((tiny_weights_dir / "importance_map_1.pt").read_bytes()).hexdigest()
    expected = hashlib.sha256(f"1:{file_hash}".encode()).hexdigest()
    assert tiny_codec.version() == f"weights-sha256:{expected} bitstream-v3 coding-r2"


# -- shipped weights --------------------------------------------------------------------------

def test_shipped_weights_round_trip() -> None:
    codec = create_codec("importance_map")
    avail = codec.availability()
    assert avail, avail.reason
    img = photo("astronaut", (96, 128))
    sizes = []
    for model_id in (codec.default_rates[0], codec.default_rates[-1]):
        data = codec.encode(img, model_id)
        out = codec.decode(data)
        assert out.shape == img.shape
        sizes.append(len(data))
        psnr = 10 * np.log10(255 ** 2 / np.mean((out.astype(float) - img.astype(float)) ** 2))
        assert psnr > 20, f"model {model_id}: {psnr:.2f} dB"
    assert sizes[0] < sizes[1]  # the lowest rate point gives the smallest bitstream


# -- training ---------------------------------------------------------------------------------

def test_train_writes_curves_checkpoint_weights_and_resumes(tmp_path: Path) -> None:
    from PIL import Image

    from lcbench.cli import main

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(photo("astronaut", (96, 96))).save(data / "a.png")
    Image.fromarray(photo("coffee", (80, 120))).save(data / "b.png")
    out = tmp_path / "m.pt"
    common = ["train", "importance_map", "--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32",
              "--n", "16", "--levels", "4", "--width", "0.125", "--map-off-steps", "1", "--log-every", "1"]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "3", "--resume", str(out.with_suffix(".ckpt"))]) == 0
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,mse,psnr,occupancy") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    ckpt = torch.load(out.with_suffix(".ckpt"), weights_only=True)
    assert ckpt["step"] == 3
    codec = create_codec("importance_map", weights_dir=str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    out.rename(tmp_path / "w" / "importance_map_4.pt")
    img = photo("chelsea", (40, 40))
    assert codec.decode(codec.encode(img, 4)).shape == img.shape


def test_own_weights_folder_sets_the_rate_grid(tiny_codec) -> None:
    """With weights_dir the default grid is the model ids in that folder; the shipped grid skips model 2."""
    assert tiny_codec.default_rates == (1.0,)
    assert create_codec("importance_map").default_rates == (1.0, 3.0, 4.0, 5.0)


def test_kodak_low_rate_ms_ssim_beats_jpeg(kodak_dir: Path, tmp_path: Path) -> None:
    """Issue 5's bar, measured by lcbench itself: at every shipped rate point at or below 0.3 bpp
    the mean Kodak MS-SSIM is above JPEG's at the same bpp (interpolated on JPEG's mean curve;
    below JPEG's lowest rate, above JPEG's lowest point, which has more bits)."""
    import lcbench

    df = lcbench.run(["jpeg", "importance_map"], str(kodak_dir), out=tmp_path / "run", use_cache=False,
                     quality={"jpeg": [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30], "importance_map": [1, 3]},
                     raise_on_failure=True)
    assert (df["error"] == "").all() and len(df) == 24 * 13
    means = df.groupby(["codec", "quality"])[["bpp", "ms_ssim"]].mean().reset_index()
    jpeg = means[means.codec == "jpeg"].sort_values("bpp")
    imap = means[means.codec == "importance_map"]
    low = imap[imap.bpp <= 0.3]
    assert len(low) == 2  # models 1 and 3 (about 0.10 and 0.20 bpp)
    for _, row in low.iterrows():
        if row.bpp < jpeg.bpp.min():
            assert row.ms_ssim > jpeg.ms_ssim.iloc[0]
        else:
            assert row.ms_ssim > np.interp(row.bpp, jpeg.bpp, jpeg.ms_ssim)


class _RunsCode:
    """A pickle that runs a command when loaded without weights_only=True."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("model, option", [("importance_map", "--init"), ("importance_map", "--resume"),
                                           ("autoencoder", "--resume")])
def test_training_never_runs_code_from_a_pickled_file(tmp_path: Path, capsys, model: str, option: str) -> None:
    """--init and --resume loaded checkpoints with weights_only=False: a crafted file given to them
    ran its command (then the run failed). Now torch refuses to unpickle it at all."""
    from lcbench.cli import main

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(marker)}, evil)
    code = main(["train", model, "--data", str(tmp_path), "--out", str(tmp_path / "w" / "m.pt"), option, str(evil)])
    err = capsys.readouterr().err
    assert code == 2 and str(evil) in err and "Traceback" not in err
    assert "weights_only=False" not in err
    assert not marker.exists()


def test_weights_rewritten_after_the_version_was_taken_are_refused(tmp_path):
    """The version (and so the results' key) was hashed from the files when the run started, the
    model loaded later: weights rewritten in between were benchmarked under the old version."""
    import shutil

    import numpy as np

    from lcbench.codec import CodecError
    from lcbench.registry import codecs, create_codec

    shipped = Path(codecs.get("importance_map").shipped_weights_dir)
    for i in (1, 3):
        shutil.copy(shipped / f"importance_map_{i}.pt", tmp_path / f"importance_map_{i}.pt")
    codec = create_codec(f"importance_map:weights_dir={tmp_path}")
    codec.version()
    shutil.copy(shipped / "importance_map_3.pt", tmp_path / "importance_map_1.pt")
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(CodecError, match=r"importance_map_1\.pt changed during the run"):
        codec.encode(image, 1)
    fresh = create_codec(f"importance_map:weights_dir={tmp_path}")
    fresh.version()
    assert len(fresh.encode(image, 1)) > 0  # a new run takes the new weights, under their version


def test_decoding_instance_shares_the_loaded_networks(tmp_path):
    """The worker's second (decoding) instance loaded every model again, inside the first timed decode."""
    import numpy as np

    import lcbench.model_per_rate as mpr
    from lcbench.registry import create_codec

    encoder, decoder = create_codec("importance_map"), create_codec("importance_map")
    bits = encoder.encode(np.full((64, 64, 3), 90, np.uint8), 3)
    loads = []
    original = type(decoder)._read_model
    try:
        type(decoder)._read_model = classmethod(lambda cls, path: loads.append(path) or original.__func__(cls, path))
        decoded = decoder.decode(bits)
    finally:
        type(decoder)._read_model = original
    assert loads == [] and decoded.shape == (64, 64, 3)
    assert decoder._models[3][0] is encoder._models[3][0]
    assert any(key[0] is type(decoder) for key in mpr._LOADED)
