"""The Dask engine: same jobs, same run directory, same resume semantics, on a real LocalCluster."""
from __future__ import annotations

import pandas as pd
import pytest

import lcbench
from lcbench.store import read_records

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def test_dask_matches_local_and_resumes(image_folder, tmp_path, cluster):
    local = lcbench.run(["jpeg", "webp"], image_folder, out=tmp_path / "local", quality=[30, 70], jobs=1)
    out = tmp_path / "dask"
    part = lcbench.run(["jpeg", "webp"], image_folder, out=out, quality=[30], backend="dask",
                       scheduler=cluster.scheduler_address)
    assert len(part) == 6 and len(read_records(out)) == 6
    full = lcbench.run(["jpeg", "webp"], image_folder, out=out, quality=[30, 70], backend="dask",
                       scheduler=cluster.scheduler_address)
    assert len(read_records(out)) == 12  # only the new rate point ran
    cols = ["codec", "quality", "image", "bytes", "psnr_rgb", "ssim", "ms_ssim"]
    pd.testing.assert_frame_equal(local[cols].reset_index(drop=True), full[cols].reset_index(drop=True))
    assert (full["error"] == "").all()


ENV_PLUGIN = '''
import io, os
import numpy as np
from PIL import Image
from lcbench import Codec, register_codec

@register_codec
class EnvJpeg(Codec):
    """A codec whose library version comes from the environment, like a tool found on PATH."""
    name = "envjpeg"
    default_rates = (50.0,)
    def version(self): return "libv" + os.environ.get("LCBENCH_TEST_LIBV", "1")
    def encode(self, image, rate):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=int(rate))
        return buf.getvalue()
    def decode(self, data): return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
'''


def test_a_worker_with_another_codec_version_fails_its_jobs(image_folder, tmp_path, monkeypatch):
    """A Dask worker with another build of a codec recorded its results under the client's version
    (and cached them under it): the rows said libv1 and held libv2 bitstreams."""
    from lcbench.registry import load_plugin

    monkeypatch.delenv("LCBENCH_TEST_LIBV", raising=False)
    plugin = tmp_path / "envjpeg.py"
    plugin.write_text(ENV_PLUGIN)
    load_plugin(plugin)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env={"LCBENCH_TEST_LIBV": "2"}) as other:
        df = lcbench.run(["envjpeg"], image_folder, out=tmp_path / "run", backend="dask",
                         scheduler=other.scheduler_address, use_cache=False)
    assert len(df) == 3 and df.codec_version.str.startswith("libv1 plugin-sha256:").all()
    assert df.error.str.contains("has envjpeg version 'libv2 plugin-sha256:").all()
    assert df.bytes.isna().all()
