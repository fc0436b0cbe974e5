"""The Dask engine: same jobs, same run directory, same resume semantics, on a real LocalCluster."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

import lcbench
from lcbench.cli import main
from lcbench.store import read_records

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # started from a folder of its own: the workers' working directory is not the tests' (on a real
    # cluster it is another machine's), so a relative path that works only here shows up
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("worker-cwd"))
    try:
        c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=":0")
    finally:
        os.chdir(here)
    with c:
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
                                  dashboard_address=":0", env={"LCBENCH_TEST_LIBV": "2"}) as other:
        df = lcbench.run(["envjpeg"], image_folder, out=tmp_path / "run", backend="dask",
                         scheduler=other.scheduler_address, use_cache=False)
    assert len(df) == 3 and df.codec_version.str.startswith("libv1 plugin-sha256:").all()
    assert df.error.str.contains("has envjpeg version 'libv2 plugin-sha256:").all()
    assert df.bytes.isna().all()


CRASH_PLUGIN = """
import io, os
import numpy as np
from PIL import Image
from lcbench import Codec, register_codec

@register_codec
class CrashJpeg(Codec):
    \"\"\"JPEG, except that it kills its process on one image at quality 40 (like a segfault).\"\"\"
    name = "crashjpeg"
    default_rates = (20.0, 40.0, 60.0)
    def version(self): return "1"
    def encode(self, image, rate):
        if rate == 40 and image.shape[0] == 200:
            os._exit(3)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=int(rate))
        return buf.getvalue()
    def decode(self, data): return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
"""


def _crash_run(image_folder, plugin, out, *extra):
    code = main(["run", "--plugin", str(plugin), "--codecs", "crashjpeg,jpeg", "-q", "20,40,60", "--dataset",
                 str(image_folder), "--out", str(out), "--no-progress", "--no-cache", *extra])
    df = pd.read_csv(out / "results.csv").set_index(["codec", "image", "quality"]).sort_index()
    df["error"] = df["error"].fillna("")
    return code, df


def _check_crash_outcome(df, loky):
    failed = df[df.error != ""]
    # b is 200 px high: its quality 40 job kills the process, 60 comes after it in that task (as with loky)
    assert sorted(failed.index) == [("crashjpeg", "b", 40.0), ("crashjpeg", "b", 60.0)], failed.error.tolist()
    assert failed.error.iloc[0].endswith("RuntimeError: the worker process died (a crash in the codec, e.g. a "
                                         "segfault) while running this job (exit code 3; run alone in a child "
                                         f"process of Dask worker {socket.gethostname()})")
    assert failed.error.iloc[1].endswith("RuntimeError: not run: the worker process died while running an "
                                         "earlier job of this codec on this image (quality=40)")
    cols = ["bytes", "psnr_rgb", "ssim", "ms_ssim"]
    pd.testing.assert_frame_equal(df[cols], loky[cols])  # same numbers, same failed jobs as loky


def test_a_codec_that_kills_its_dask_worker_fails_only_its_own_jobs(image_folder, tmp_path, capsys):
    """The job before the crash (crashjpeg q20 on b, finished) was recorded failed with KilledWorker:
    Dask workers do not store records, so a killed task lost all its results; loky kept it."""
    plugin = tmp_path / "crashplug.py"
    plugin.write_text(CRASH_PLUGIN)
    code, loky = _crash_run(image_folder, plugin, tmp_path / "loky", "--jobs", "2")
    assert code == 1
    code, df = _crash_run(image_folder, plugin, tmp_path / "dask", "--backend", "dask", "--jobs", "2")
    assert code == 1, capsys.readouterr().err
    _check_crash_outcome(df, loky)


def test_tasks_killed_alongside_a_crash_are_retried_not_failed(image_folder, tmp_path):
    """On a scheduler that gives each worker many tasks at once, every task queued on the worker the
    crash killed came back as KilledWorker, and all its jobs (jpeg's too) were recorded failed."""
    import dask

    plugin = tmp_path / "crashplug.py"
    plugin.write_text(CRASH_PLUGIN)
    code, loky = _crash_run(image_folder, plugin, tmp_path / "loky", "--jobs", "2")
    settings = {"distributed.scheduler.worker-saturation": "inf",  # all six tasks on the one worker at once
                "distributed.scheduler.allowed-failures": 0}
    with dask.config.set(settings), distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                             host="127.0.0.1", dashboard_address=":0") as one:
        code, df = _crash_run(image_folder, plugin, tmp_path / "dask", "--backend", "dask", "--scheduler",
                              one.scheduler_address)
    assert code == 1
    _check_crash_outcome(df, loky)


def test_relative_dataset_and_run_directory_are_the_clients(image_folder, tmp_path, monkeypatch, cluster):
    """Workers resolved a relative --dataset and --out against their own working directory: every
    job failed 'No such file', saved bitstreams/decoded images went elsewhere (and each rerun redid
    them, finding none in the run directory)."""
    client_dir = tmp_path / "client"
    shutil.copytree(image_folder, client_dir / "x" / "mini")
    monkeypatch.chdir(client_dir)
    kw = {"quality": [30], "backend": "dask", "scheduler": cluster.scheduler_address, "use_cache": False,
          "save_bitstreams": True, "save_decoded": True}
    df = lcbench.run(["jpeg"], "x/mini", out="sbout", **kw)
    assert len(df) == 3 and (df.error == "").all(), df.error.tolist()
    for stem in ("a", "b", "c"):
        assert (client_dir / "sbout" / "bitstreams" / "jpeg" / f"{stem}@30.bin").is_file()
        assert (client_dir / "sbout" / "decoded" / "jpeg" / f"{stem}@30.png").is_file()
    lcbench.run(["jpeg"], "x/mini", out="sbout", **kw)
    assert len(read_records(client_dir / "sbout")) == 3  # nothing ran again


def test_scheduler_needs_the_dask_backend_and_jobs_is_noted(image_folder, tmp_path, capsys, cluster):
    """--scheduler without --backend dask ran everything on this machine without a word."""
    out = tmp_path / "run"
    code = main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(image_folder), "--out", str(out),
                 "--no-progress", "--scheduler", cluster.scheduler_address])
    err = capsys.readouterr().err
    assert code == 2 and "--scheduler" in err and "--backend dask" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="--backend dask"):
        lcbench.run(["jpeg"], image_folder, out=out, scheduler=cluster.scheduler_address)
    code = main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(image_folder), "--out", str(out),
                 "--no-progress", "--backend", "dask", "--scheduler", cluster.scheduler_address, "--jobs", "3"])
    assert code == 0
    assert "note: --jobs is ignored with --scheduler" in capsys.readouterr().err


SLOW_PLUGIN = """
import io, time
import numpy as np
from PIL import Image
from lcbench import Codec, register_codec

@register_codec
class SlowJpeg(Codec):
    name = "slowjpeg"
    default_rates = (50.0,)
    def version(self): return "1"
    def encode(self, image, rate):
        time.sleep(0.4)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=int(rate))
        return buf.getvalue()
    def decode(self, data): return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
"""

SCHEDULER_SCRIPT = """
import sys, time
from distributed import LocalCluster
if __name__ == "__main__":
    c = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0")
    print(c.scheduler_address, flush=True)
    while True:
        time.sleep(60)
"""


def test_losing_the_scheduler_fails_the_rest_with_one_clear_message(image_folder, tmp_path, cluster):
    """Each unfinished job got its own 'FutureCancelledError: run_cpu_task-<id> ... scheduler-connection-lost'
    text, so the failure summary listed 20 different lines instead of one that says what to do."""
    from lcbench.registry import load_plugin

    plugin = tmp_path / "slowjpeg.py"
    plugin.write_text(SLOW_PLUGIN)
    load_plugin(plugin)
    script = tmp_path / "sched.py"
    script.write_text(SCHEDULER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    out = tmp_path / "run"
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address

        def kill_when_a_task_is_stored():
            deadline = time.time() + 60
            while time.time() < deadline and not (out.exists() and read_records(out)):
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # the scheduler's machine is gone

        killer = threading.Thread(target=kill_when_a_task_is_stored)
        killer.start()
        df = lcbench.run(["slowjpeg"], image_folder, out=out, quality=[10, 20, 30, 40, 50, 60], backend="dask",
                         scheduler=address, use_cache=False)
        killer.join()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    failed = df[df.error != ""]
    assert 0 < len(failed) < len(df) == 18
    assert set(failed.error) == {f"not run: lost the connection to the Dask scheduler {address}; rerun to resume"}
    ok = len(df) - len(failed)
    again = lcbench.run(["slowjpeg"], image_folder, out=out, quality=[10, 20, 30, 40, 50, 60], backend="dask",
                        scheduler=cluster.scheduler_address, use_cache=False)
    assert (again.error == "").all()
    assert len([r for r in read_records(out) if not r.get("error")]) == 18  # the finished ones did not run again
    assert ok == 18 - len(failed)
