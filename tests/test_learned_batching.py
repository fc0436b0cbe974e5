"""Padding, equal-size batching and reproducible synthesis shared by the learned codecs."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lcbench.learned_batching import group_by_padded_shape, network_batches, pad_image, padded, reproducible_synthesis  # noqa: E402
from lcbench.registry import create_codec  # noqa: E402
from support import photo  # noqa: E402


def test_padding_replicates_edges_to_the_multiple() -> None:
    assert [padded(n, 16) for n in (1, 15, 16, 17, 32)] == [16, 16, 16, 32, 32]
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    out = pad_image(img, 4)
    assert out.shape == (4, 8, 3)
    assert np.array_equal(out[:3, :5], img)
    assert np.array_equal(out[3, :5], img[2]) and np.array_equal(out[:3, 7], img[:, 4])


def test_groups_share_a_padded_size_in_input_order() -> None:
    groups = group_by_padded_shape([(30, 40), (17, 17), (32, 33), (31, 48), (1, 1), (33, 20)], 16)
    assert groups == {(32, 48): [0, 2, 3], (32, 32): [1], (16, 16): [4], (48, 32): [5]}


def test_cpu_runs_one_image_at_a_time_cuda_batches_by_size() -> None:
    shapes = [(30, 40), (17, 17), (32, 33)]
    assert network_batches(shapes, 16, "cuda:0") == [[0, 2], [1]]
    assert network_batches(shapes, 16, "cpu") == [[0], [2], [1]]


@pytest.mark.parametrize("name", ["importance_map", "autoencoder"])
def test_a_bitstream_decodes_to_the_same_pixels_alone_or_in_a_batch(name: str) -> None:
    """oneDNN picks a convolution kernel by batch size: four 128x128 importance_map bitstreams
    decoded together came out 1 off in some pixels from each decoded alone (the reference: what a
    fresh process decoding one saved bitstream gives), so PSNR depended on the other images."""
    codec = create_codec(name)
    images = [photo(n, (128, 128)) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    for model in (1, 5):
        batch = codec.encode_batch(images, model)
        assert batch == [codec.encode_batch([im], model)[0] for im in images]
        together = codec.decode_batch(batch)
        for data, pixels in zip(batch, together):
            assert np.array_equal(codec.decode_batch([data])[0], pixels)


def test_cpu_synthesis_runs_on_one_thread_and_restores() -> None:
    before = torch.get_num_threads()
    with reproducible_synthesis("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_cuda_synthesis_turns_tf32_off_and_restores() -> None:
    # Only flags are touched, so this runs without a GPU.
    flags = ("allow_tf32", "deterministic", "benchmark")
    saved = [getattr(torch.backends.cudnn, f) for f in flags] + [torch.backends.cuda.matmul.allow_tf32]
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, True
    try:
        with reproducible_synthesis("cuda:0"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
    finally:
        for f, v in zip(flags, saved):
            setattr(torch.backends.cudnn, f, v)
        torch.backends.cuda.matmul.allow_tf32 = saved[-1]


PLUGIN = '''
import numpy as np
from lcbench import TorchCodec, register_codec

@register_codec
class MeanCodec(TorchCodec):
    """Stores the image raw; extra_columns() is the mean of the last image encoded."""
    name = "mean_codec_{tag}"
    default_rates = (1.0,)
    def version(self): return "1"
    def encode(self, image, rate):
        self.last_mean = float(image.mean())
        h, w = image.shape[:2]
        return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()
    def decode(self, data):
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3).copy()
    def extra_columns(self): return {{"img_mean": self.last_mean}}
{extra}
'''


def _same_size_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(photo(name, (48, 64))).save(folder / f"{name}.png")
    return folder


def test_plugin_extra_columns_are_per_image_in_a_batch(tmp_path):
    """The default encode_batch recorded nothing per image, and the runner copied the last image's
    extra_columns() to every image of the batch."""
    import pandas as pd

    from lcbench.cli import main

    plugin = tmp_path / "mean_plugin.py"
    plugin.write_text(PLUGIN.format(tag="a", extra=""))
    folder = _same_size_folder(tmp_path)
    assert main(["run", "--plugin", str(plugin), "--codecs", "mean_codec_a", "--dataset", str(folder),
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--jobs", "1", "--no-progress", "--no-cache"]) == 0
    df = pd.read_csv(tmp_path / "run" / "results.csv").set_index("image")
    for name in ("astronaut", "chelsea", "coffee"):
        assert df.loc[name, "img_mean"] == pytest.approx(photo(name, (48, 64)).mean())
        assert df.loc[name, "psnr_rgb"] == float("inf")


def test_a_batch_with_missing_outputs_is_measured_image_by_image(tmp_path, capsys):
    """decode_batch returning one image fewer: zip() dropped a job, and the run said 3/3 ok. The
    batch now fails, and its jobs run again one at a time, saying so."""
    import pandas as pd

    from lcbench.cli import main

    plugin = tmp_path / "short_plugin.py"
    plugin.write_text(PLUGIN.format(tag="b", extra="    def decode_batch(self, bs):\n"
                                    "        return [self.decode(b) for b in bs][:-1]\n"))
    folder = _same_size_folder(tmp_path)
    assert main(["run", "--plugin", str(plugin), "--codecs", "mean_codec_b", "--dataset", str(folder),
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--jobs", "1", "--no-progress", "--no-cache"]) == 0
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    assert len(df) == 3 and (df.error == "").all() and (df.psnr_rgb == float("inf")).all()
    assert df.notes.str.contains("its batch of 3 images failed (CodecError: mean_codec_b returned 2 decoded "
                                 "images for a batch of 3 images); measured alone", regex=False).all()


def test_one_image_failing_fails_only_its_own_job(tmp_path):
    """An image the codec cannot code failed its whole batch: every job of the batch recorded the
    error, each naming its own (good) image."""
    import pandas as pd
    from PIL import Image

    from lcbench.cli import main

    plugin = tmp_path / "dark_plugin.py"
    plugin.write_text(PLUGIN.format(tag="c", extra=(
        "    def encode(self, image, rate):\n"
        "        if image.mean() < 10: raise ValueError('this codec cannot code dark images')\n"
        "        self.last_mean = float(image.mean())\n"
        "        h, w = image.shape[:2]\n"
        "        return h.to_bytes(4, 'big') + w.to_bytes(4, 'big') + image.tobytes()\n")))
    folder = _same_size_folder(tmp_path)
    Image.fromarray(photo("rocket", (48, 64)) // 32).save(folder / "dark.png")
    assert main(["run", "--plugin", str(plugin), "--codecs", "mean_codec_c", "--dataset", str(folder),
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--jobs", "1", "--no-progress", "--no-cache"]) == 1
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False).set_index("image")
    assert len(df) == 4
    assert df.loc["dark", "error"].endswith("dark.png: ValueError: this codec cannot code dark images")
    good = df.drop(index="dark")
    assert (good.error == "").all() and (good.psnr_rgb.astype(float) == float("inf")).all()
    for name in good.index:
        assert float(df.loc[name, "img_mean"]) == pytest.approx(photo(name, (48, 64)).mean())


def test_runs_time_learned_codec_stages_one_at_a_time(image_folder, tmp_path, monkeypatch) -> None:
    """Range coding in a background thread, overlapped with the network work, made each stage's
    clock run while the other competed for the cores and the GIL: recorded encode/decode times
    came out 12-31 % higher than the same stages measured one at a time."""
    import lcbench
    from lcbench import worker

    created = []
    real = worker.ThreadPoolExecutor
    monkeypatch.setattr(worker, "ThreadPoolExecutor", lambda *a, **k: created.append(k) or real(*a, **k))
    df = lcbench.run(["importance_map"], image_folder, quality=[1], out=tmp_path / "r", max_images=2,
                     use_cache=False)
    assert len(df) == 2 and (df.error == "").all() and created == []


@pytest.mark.parametrize("name, slow", [("importance_map", "load"), ("autoencoder", "load"),
                                         ("autoencoder", "estimate")])
def test_recorded_times_leave_out_model_loads_and_rate_estimates(name, slow, image_folder, tmp_path, monkeypatch):
    """The first batch's encode time included loading the model (and compiling numba's kernels on
    a fresh cache: seconds), and autoencoder's est_bpp, computed when read, landed in the decode
    time. Both are made to take 1 s here; a job on these small images takes well under 0.5 s."""
    import time

    import lcbench
    from lcbench import model_per_rate, worker

    codec_class = type(create_codec(name))
    monkeypatch.setattr(model_per_rate, "_LOADED", {})  # a fresh process: nothing loaded yet
    monkeypatch.setattr(worker, "_codec_cache", {})
    monkeypatch.setattr(worker, "_decoder_cache", {})
    if slow == "load":
        real = codec_class._read_model.__func__
        monkeypatch.setattr(codec_class, "_read_model", classmethod(lambda cls, path: time.sleep(1) or real(cls, path)))
    else:
        from lcbench.autoencoder.model import AutoEncoder

        real_analyse = AutoEncoder.analyse

        def analyse(self, x):  # wraps the density of the model that encodes: sleeps when est_bpp is computed
            density = self.density
            if not hasattr(density, "_slow"):
                real_likelihood = density.likelihood
                density.likelihood = lambda y: time.sleep(1) or real_likelihood(y)
                density._slow = True
            return real_analyse(self, x)

        monkeypatch.setattr(AutoEncoder, "analyse", analyse)
    try:
        df = lcbench.run([name], image_folder, quality=[1], out=tmp_path / "r", max_images=2, use_cache=False,
                         jobs=1)
    finally:
        model_per_rate._LOADED.clear()  # the networks wrapped above must not serve later tests
    assert len(df) == 2 and (df.error == "").all()
    assert (df.enc_time_s < 0.5).all() and (df.dec_time_s < 0.5).all(), df[["enc_time_s", "dec_time_s"]]


@pytest.mark.parametrize("spec, rate", [("comcnn+jpeg", 50), ("bicubic-x2+importance_map", 1)])
def test_pipelines_load_their_networks_before_the_clock(spec, rate, image_folder, tmp_path, monkeypatch):
    """comcnn loaded its network inside the first job's timed encode (and its decoding instance's
    inside the timed decode); here a load takes 2 s, a job on these small images well under 1 s."""
    import time

    import lcbench
    from lcbench import model_per_rate, worker
    from lcbench.comcnn import weights as comcnn_weights

    monkeypatch.setattr(model_per_rate, "_LOADED", {})
    monkeypatch.setattr(worker, "_codec_cache", {})
    monkeypatch.setattr(worker, "_decoder_cache", {})
    if spec.startswith("comcnn"):
        real_load = comcnn_weights.load
        monkeypatch.setattr(comcnn_weights, "load", lambda path: time.sleep(2) or real_load(path))
    else:
        im_class = type(create_codec("importance_map"))
        real = im_class._read_model.__func__
        monkeypatch.setattr(im_class, "_read_model", classmethod(lambda cls, path: time.sleep(2) or real(cls, path)))
    df = lcbench.run([spec], image_folder, quality=[rate], out=tmp_path / "r", max_images=1, use_cache=False, jobs=1)
    assert len(df) == 1 and (df.error == "").all()
    assert (df.enc_time_s < 1.0).all() and (df.dec_time_s < 1.0).all(), df[["enc_time_s", "dec_time_s"]]
