"""autoencoder: integer entropy tables, bitstream, codec round trips (shipped weights), training.

Fast: a tiny random-initialised network written to tmp_path in the real weights format for
most checks; the shipped models on small crops of scikit-image photos (never Kodak).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

import lcbench_codecs.autoencoder as ae_codec  # noqa: E402  (importing registers the codec)
from lcbench.autoencoder import bitstream, tables, weights  # noqa: E402
from lcbench.autoencoder.model import AutoEncoder, ModelConfig  # noqa: E402
from lcbench.codec import CodecError, CodecUnavailable  # noqa: E402
from lcbench.registry import codecs, create_codec  # noqa: E402
from support import photo  # noqa: E402

TINY = ModelConfig(channels=8, latent=6)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ae_weights")
    weights.save(d / "autoencoder_1.pt", AutoEncoder(TINY).eval(), {"note": "test"})
    return d


@pytest.fixture
def tiny(tiny_dir: Path):
    return create_codec("autoencoder", weights_dir=str(tiny_dir))


# -- integer tables and the range coder -------------------------------------------------------

def test_range_coder_on_a_hand_made_integer_table_is_exact() -> None:
    # channel 0: values -2..1 plus escape; channel 1: only value 5 plus escape
    counts = torch.tensor([[1000, 30000, 30000, 4000, 536], [65000, 536, 0, 0, 0]], dtype=torch.int32)
    t = tables.EntropyTables({"offsets": torch.tensor([-2, 5], dtype=torch.int32),
                              "sizes": torch.tensor([5, 2], dtype=torch.int32), "counts": counts}, channels=2)
    rng = np.random.default_rng(1)
    lat = np.stack([rng.choice([-2, -1, 0, 1], size=(6, 7), p=[0.02, 0.45, 0.45, 0.08]),
                    np.full((6, 7), 5)]).astype(np.int32)
    lat[0, 0, 0], lat[0, 1, 1], lat[1, 2, 3] = 40, -300, -7  # outside the tables: escaped, kept exactly
    words = t.encode(lat)
    assert np.array_equal(t.decode(words, 6, 7), lat)
    # ideal length: -log2(count / 2^16) per symbol + 16 bits per escaped value; the coder is within a few words
    ideal = sum(16 - np.log2(counts[0, v + 2].item()) for v in lat[0].ravel() if -2 <= v <= 1)
    ideal += 3 * (16 - np.log2(536)) + 3 * 16 + 41 * (16 - np.log2(65000))
    assert t.information_bits(lat) == pytest.approx(ideal)
    assert abs(32 * len(words) - ideal) <= 64
    # values beyond the escape range are clamped (documented), not corrupted
    lat[0, 5, 5] = 10 ** 6
    assert t.decode(t.encode(lat), 6, 7)[0, 5, 5] == tables.ESCAPE_LIMIT


def test_quantise_pmf_sums_to_total_and_keeps_every_symbol() -> None:
    c = tables.quantise_pmf(np.array([0.5, 0.5 - 1e-12, 1e-12, 0.0]))
    assert c.sum() == tables.TOTAL and c.min() >= 1 and c[0] == pytest.approx(tables.TOTAL / 2, abs=3)
    bad = {"offsets": torch.zeros(1, dtype=torch.int32), "sizes": torch.tensor([2], dtype=torch.int32),
           "counts": torch.tensor([[5, 7]], dtype=torch.int32)}
    with pytest.raises(tables.EntropyTableError, match="channel 0"):
        tables.EntropyTables(bad, channels=1)


# -- codec with a tiny network ---------------------------------------------------------------

def test_registered_and_listed() -> None:
    assert "autoencoder" in codecs.names()
    cls = codecs.get("autoencoder")
    assert cls.rate_param == "model" and cls.discrete_rates and len(cls.default_rates) >= 3


def test_builtin_without_importing_the_module() -> None:
    # `lcbench codecs` in a fresh process must list it: the registry loads built-ins itself.
    out = subprocess.run([sys.executable, "-m", "lcbench.cli", "codecs"], capture_output=True,
                         text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("autoencoder "))
    assert "available" in line and "weights-sha256:" in line


def test_odd_sizes_and_batches_round_trip(tiny) -> None:
    imgs = [photo("astronaut", (37, 53)), photo("coffee", (1, 1)), photo("chelsea", (17, 16)),
            photo("astronaut", (40, 48))]
    batch = tiny.encode_batch(imgs, 1)
    assert [len(e) for e in tiny.last_batch_extras] == [1] * 4
    assert batch == [tiny.encode(im, 1) for im in imgs]  # batching does not change the bytes
    for im, got in zip(imgs, tiny.decode_batch(batch)):
        assert got.shape == im.shape and got.dtype == np.uint8


def test_decode_in_a_fresh_process_is_identical(tiny, tiny_dir: Path, tmp_path: Path) -> None:
    shipped = create_codec("autoencoder")
    data = tiny.encode(photo("astronaut", (45, 70)), 1)
    shipped_data = shipped.encode(photo("chelsea", (61, 83)), 3)
    (tmp_path / "tiny.bin").write_bytes(data)
    (tmp_path / "shipped.bin").write_bytes(shipped_data)
    script = textwrap.dedent(f"""
        import numpy as np, torch
        from pathlib import Path
        torch.set_num_threads(3)  # another thread setting must not change the pixels
        import lcbench_codecs.autoencoder
        from lcbench.registry import create_codec
        d = Path({str(tmp_path)!r})
        c = create_codec("autoencoder", weights_dir={str(tiny_dir)!r})
        np.save(d / "tiny.npy", c.decode((d / "tiny.bin").read_bytes()))
        np.save(d / "shipped.npy", create_codec("autoencoder").decode((d / "shipped.bin").read_bytes()))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "tiny.npy"), tiny.decode(data))
    assert np.array_equal(np.load(tmp_path / "shipped.npy"), shipped.decode(shipped_data))


def _reseal(data: bytes) -> bytes:
    """Recompute the header+payload CRC-32 after an edit (a stream written with that header)."""
    import struct
    import zlib

    head, payload = data[:bitstream.HEADER_BYTES - 4], data[bitstream.HEADER_BYTES:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_corrupt_truncated_and_foreign_bitstreams(tiny) -> None:
    data = tiny.encode(photo("astronaut", (32, 48)), 1)
    with pytest.raises(CodecError, match="too short"):
        tiny.decode(data[:10])
    with pytest.raises(CodecError, match="not autoencoder's bitstream"):
        tiny.decode(b"XXXX" + data[4:])
    with pytest.raises(CodecError, match="truncated or damaged"):
        tiny.decode(data[:-4])
    flipped = bytearray(data)
    flipped[-1] ^= 0x10
    with pytest.raises(CodecError, match="truncated or damaged"):
        tiny.decode(bytes(flipped))
    with pytest.raises(CodecError, match="truncated or damaged"):  # the CRC covers the header too
        tiny.decode(data[:6] + bytes(4) + data[10:])
    with pytest.raises(CodecError, match="other weights"):
        tiny.decode(_reseal(data[:6] + bytes(4) + data[10:]))
    with pytest.raises(CodecUnavailable, match="no model 7"):
        tiny.decode(_reseal(data[:5] + bytes([7]) + data[6:]))
    with pytest.raises(CodecError, match="not a model id"):
        tiny.encode(photo("astronaut", (16, 16)), 1.5)


def test_own_weights_folder_sets_the_rate_grid(tiny) -> None:
    """With weights_dir the default grid is the model ids in that folder (only model 1 here), so
    `lcbench run` without -q does not plan jobs for models 2-5 that are not there."""
    assert tiny.default_rates == (1.0,)
    assert create_codec("autoencoder").default_rates == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_corrupt_and_missing_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "autoencoder_1.pt").write_bytes(b"not a torch file")
    codec = create_codec("autoencoder", weights_dir=str(tmp_path))
    with pytest.raises(CodecUnavailable, match=r"autoencoder_1\.pt is corrupt"):
        codec.encode(photo("astronaut", (16, 16)), 1)
    with pytest.raises(CodecUnavailable, match=r"autoencoder_2\.pt is missing"):
        codec.encode(photo("astronaut", (16, 16)), 2)
    torch.save({"format": "something else"}, tmp_path / "autoencoder_3.pt")
    with pytest.raises(CodecUnavailable, match=r"autoencoder_3\.pt is not an autoencoder weights file"):
        codec.encode(photo("astronaut", (16, 16)), 3)
    monkeypatch.setattr(ae_codec.Autoencoder, "shipped_weights_dir", tmp_path)  # availability() checks the shipped folder
    avail = ae_codec.Autoencoder.availability()
    assert not avail and "autoencoder_1.pt" in avail.reason and "corrupt" in avail.reason


def test_corrupt_file_in_weights_dir_stops_the_run_before_any_job(tiny_dir: Path, image_folder: Path,
                                                                  tmp_path: Path, capsys) -> None:
    """A text file named autoencoder_2.pt beside a valid model: bad input (exit 2) naming the file,
    found by the availability check before the run, not an error in every job (exit 1)."""
    import shutil

    from lcbench.cli import main

    d = tmp_path / "mine"
    d.mkdir()
    shutil.copy(tiny_dir / "autoencoder_1.pt", d / "autoencoder_1.pt")
    (d / "autoencoder_2.pt").write_text("not a torch file at all")
    avail = create_codec("autoencoder", weights_dir=str(d)).availability_here()
    assert not avail and "autoencoder_2.pt" in avail.reason and "not a valid weights file" in avail.reason
    code = main(["run", "--codecs", f"autoencoder:weights_dir={d}", "--dataset", str(image_folder),
                 "--out", str(tmp_path / "run"), "-q", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "autoencoder_2.pt" in err and "not a valid weights file" in err
    assert "weights_only=False" not in err and "Re-running" not in err and "will likely succeed" not in err
    assert create_codec("autoencoder", weights_dir=str(tiny_dir)).availability_here()


def test_version_is_the_weights_hash(tiny, tiny_dir: Path) -> None:
    file_hash = hashlib.sha256((tiny_dir / "autoencoder_1.pt").read_bytes()).hexdigest()
    assert tiny.version() == ("weights-sha256:" + hashlib.sha256(f"1:{file_hash}".encode()).hexdigest()
                              + f" bitstream-v{bitstream.FORMAT_VERSION} coding-r2")
    assert bitstream.FORMAT_VERSION == 2  # header under the CRC


def test_bpp_in_results_comes_from_the_bitstream_bytes(tiny_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    import lcbench

    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(photo("astronaut", (33, 50))).save(data / "a.png")
    Image.fromarray(photo("coffee", (48, 32))).save(data / "b.png")
    spec = f"autoencoder:weights_dir={tiny_dir}"
    df = lcbench.run([spec], str(data), out=tmp_path / "run", quality=[1], jobs=1, save_bitstreams=True,
                     raise_on_failure=True)
    assert len(df) == 2
    for row in df.itertuples():
        files = list((tmp_path / "run" / "bitstreams").rglob(f"{row.image}@1.bin"))
        assert len(files) == 1
        n = files[0].stat().st_size
        assert row.bytes == n and row.bpp == pytest.approx(8 * n / (row.width * row.height))
        assert row.est_bpp > 0


# -- shipped weights --------------------------------------------------------------------------

def test_shipped_models_round_trip_odd_and_grey_images() -> None:
    codec = create_codec("autoencoder")
    avail = codec.availability()
    assert avail, avail.reason
    img = photo("astronaut", (67, 93))  # odd sizes, not multiples of 16
    grey = np.repeat(photo("astronaut", (50, 41)).mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    sizes, psnrs = [], []
    for model_id in codec.default_rates:
        data = codec.encode(img, model_id)
        out = codec.decode(data)
        assert out.shape == img.shape and out.dtype == np.uint8
        sizes.append(len(data))
        psnrs.append(_psnr(out, img))
        g = codec.decode(codec.encode(grey, model_id))
        assert g.shape == grey.shape and _psnr(g, grey) > 20
    assert sizes == sorted(sizes) and psnrs == sorted(psnrs)  # more bits, better pictures
    assert psnrs[0] > 20


def test_shipped_est_bpp_is_close_to_the_real_bpp() -> None:
    codec = create_codec("autoencoder")
    img = photo("astronaut", (256, 256))
    for model_id in (codec.default_rates[0], codec.default_rates[-1]):
        data = codec.encode(img, model_id)
        real = 8 * len(data) / (256 * 256)
        est = codec.extra_columns()["est_bpp"]
        assert abs(est - real) / real < 0.15, f"model {model_id}: est {est:.3f} real {real:.3f}"


def test_the_rate_estimate_is_not_timed_as_encoding() -> None:
    """est_bpp (the density model's likelihood of the latents) was computed inside encode_batch,
    ~8 % of the timed encode; it is now computed when the runner reads it, after the clock, and
    per image of a batch equals the -log2 likelihood of that image's own rounded latents."""
    import torch

    codec = create_codec("autoencoder")
    images = [photo("astronaut", (64, 96)), photo("coffee", (48, 48)), photo("chelsea", (64, 96))]
    net, _, _ = codec._model(3)
    calls = []
    real = net.density.likelihood
    net.density.likelihood = lambda y: calls.append(y.shape) or real(y)
    try:
        codec.encode_batch(images, 3)
        assert calls == []
        extras = codec.last_batch_extras
        assert len(calls) >= 1 and len(extras) == 3
        assert codec.last_batch_extras is extras and len(calls) <= 3  # computed once
    finally:
        del net.density.likelihood
    for img, extra in zip(images, extras):
        padded = np.pad(img, ((0, -img.shape[0] % 16), (0, -img.shape[1] % 16), (0, 0)), mode="edge")
        with torch.no_grad():
            y = torch.round(net.analyse(torch.from_numpy(padded[None]).permute(0, 3, 1, 2)))
            bits = float(-torch.log2(net.density.likelihood(y)).sum())
        assert extra["est_bpp"] == pytest.approx(bits / (img.shape[0] * img.shape[1]), rel=1e-5)


# -- training ---------------------------------------------------------------------------------

def test_train_writes_weights_curves_checkpoint_and_resumes(tmp_path: Path) -> None:
    from PIL import Image

    from lcbench.cli import main

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # smooth generated images: a gradient plus noise
        ramp = np.linspace(0, 200, 48)[None, :, None] + rng.normal(0, 10, (40, 48, 3))
        Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "w" / "autoencoder_5.pt"
    common = ["train", "autoencoder", "--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32",
              "--lmbda", "0.01", "--hidden-channels", "8", "--latent-channels", "4", "--log-every", "1",
              "--checkpoint-every", "2", "--seed", "3"]
    assert main(common + ["--steps", "2"]) == 0
    assert out.is_file() and out.with_suffix(".ckpt").is_file()
    assert main(common + ["--steps", "4", "--resume", str(out.with_suffix(".ckpt"))]) == 0
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "step,loss,bpp,mse,psnr,lr,elapsed_s"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert torch.load(out.with_suffix(".ckpt"), weights_only=True)["step"] == 4
    assert weights.meta_of(out)["steps"] == 4 and weights.meta_of(out)["lmbda"] == 0.01
    codec = create_codec("autoencoder", weights_dir=str(out.parent))
    img = photo("chelsea", (20, 30))
    assert codec.decode(codec.encode(img, 5)).shape == img.shape
    assert main(common + ["--steps", "2", "--crop", "24"]) == 2  # not a multiple of 16: bad input
