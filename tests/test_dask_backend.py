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
