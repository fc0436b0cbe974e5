"""lcbench run end to end on real files: results, resume, kill and resume, bad images."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

import lcbench
from lcbench.cli import main
from lcbench.registry import create_codec
from lcbench.store import COLUMNS, read_records
from support import photo

REQUIRED = ["codec", "quality", "image", "width", "height", "bytes", "bpp", "psnr_rgb", "psnr_y", "ssim", "ms_ssim",
            "ms_ssim_db", "enc_time_s", "dec_time_s", "error"]


def test_run_writes_results_and_metadata(image_folder, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--codecs", "jpeg,png", "--dataset", str(image_folder), "--out", str(out), "-q", "jpeg=30,70",
                 "--jobs", "2", "--no-progress"])
    assert code == 0
    df = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS) and set(REQUIRED) <= set(df.columns)
    assert len(df) == 3 * 2 + 3 * 1  # jpeg: 2 rates x 3 images; png: its one default level
    assert set(df["image"]) == {"a", "b", "c"}
    # bpp from the real bitstream, metrics against an independent implementation
    row = df[(df.codec == "jpeg") & (df.quality == 30) & (df.image == "b")].iloc[0]
    img = np.asarray(Image.open(image_folder / "b.png"))
    jpeg = create_codec("jpeg")
    data = jpeg.encode(img, 30)
    assert row["bytes"] == len(data)
    assert row["bpp"] == pytest.approx(8 * len(data) / (img.shape[0] * img.shape[1]))
    assert row["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(img, jpeg.decode(data), data_range=255), abs=1e-6)
    png = df[df.codec == "png"]
    assert (png["psnr_rgb"] == math.inf).all() and (png["error"].isna()).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["codecs"]["jpeg"]["version"].startswith("libjpeg-turbo")
    assert meta["dataset"]["images"] == 3 and "cpu_count" in meta["machine"] and "numpy" in meta["libraries"]


def test_resume_skips_finished_jobs(image_folder, tmp_path):
    out = tmp_path / "run"
    df1 = lcbench.run(["jpeg"], image_folder, out=out, quality=[20, 60], jobs=1)
    assert len(df1) == 6
    n_records = len(read_records(out))
    # extend the grid: only the new rate point is computed
    df2 = lcbench.run(["jpeg"], image_folder, out=out, quality=[20, 60, 90], jobs=1)
    assert len(df2) == 9
    assert len(read_records(out)) == n_records + 3
    pd.testing.assert_frame_equal(
        df1.set_index("key").sort_index()[["bytes", "psnr_rgb"]],
        df2[df2.quality != 90].set_index("key").sort_index()[["bytes", "psnr_rgb"]])


def test_killed_run_resumes_without_repeating(tmp_path):
    """SIGKILL a real `lcbench run` half way, run it again: every job exactly once."""
    src = tmp_path / "imgs"
    src.mkdir()
    import skimage.data

    base = skimage.data.astronaut()
    for i in range(8):
        Image.fromarray(np.ascontiguousarray(np.roll(base, 37 * i, axis=1))).save(src / f"im{i}.png")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lcbench.cli", "run", "--codecs", "webp,jpeg", "--dataset", str(src), "--out", str(out),
           "-q", "5:95:10", "--jobs", "2", "--no-progress"]
    total = 8 * 10 * 2
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(read_records(out)) < total // 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_records(out)
    assert 0 < len(before) < total, f"the run should have been killed part-way: {proc.stderr.read()}"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} reused" in done.stdout or f"({len(before)} reused" in done.stdout
    after = read_records(out)
    keys = [r["key"] for r in after]
    assert len(set(keys)) == total and len(keys) == total  # nothing computed twice
    df = pd.read_csv(out / "results.csv")
    assert len(df) == total and df.groupby(["codec", "quality"]).size().eq(8).all()


@pytest.mark.parametrize("damage", [b"xx{garbage\n", b"[1, 2, 3]\n", b"\xff\xfe\n"])
def test_damaged_record_lines_are_named_and_their_jobs_rerun(image_folder, tmp_path, capsys, damage):
    """A garbage line in the middle of a shard was skipped without a word, a JSON line that is not an
    object was a traceback, and a line that is not UTF-8 an error that named no file."""
    out = tmp_path / "run"
    args = ["run", "--codecs", "jpeg", "-q", "30,70", "--dataset", str(image_folder), "--out", str(out), "--jobs", "1",
            "--no-progress", "--no-cache"]
    assert main(args) == 0
    first = pd.read_csv(out / "results.csv").sort_values(["quality", "image"]).reset_index(drop=True)
    (shard,) = (out / "records").glob("*.jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(lines[0] + damage + b"".join(lines[2:]))  # the second record is damaged
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"lcbench: warning: {shard}: 1 damaged line(s) (line 2) are not job records; ignored, so their jobs " \
           "run again" in captured.err
    assert f"{len(first) - 1} reused" in captured.out
    again = pd.read_csv(out / "results.csv").sort_values(["quality", "image"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(first[["codec", "quality", "image", "bytes", "psnr_rgb"]],
                                  again[["codec", "quality", "image", "bytes", "psnr_rgb"]])


@pytest.mark.parametrize("meta, words", [({"codecs": [1, 2]}, '"codecs" must be an object, got list'),
                                         ({"invocations": 5}, '"invocations" must be a list, got int'),
                                         ({"codecs": {"jpeg": 3}}, "\"codecs\" entries must be objects; 'jpeg' is not")])
def test_run_json_with_wrong_types_is_named_not_a_traceback(image_folder, tmp_path, capsys, meta, words):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(meta))
    assert main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(image_folder), "--out", str(out),
                 "--no-progress"]) == 2
    assert f"{out / 'run.json'}: {words}" in capsys.readouterr().err


def test_a_short_record_write_stops_the_writer_and_names_the_file(tmp_path, monkeypatch):
    """os.write's return value was not checked: on a filling disk a record could end half written,
    and the next one appended to it (both lost, silently)."""
    from lcbench import store

    w = store.RecordWriter(tmp_path)
    w.append({"key": "a", "codec": "jpeg"})
    real = os.write
    monkeypatch.setattr(store.os, "write", lambda fd, data: real(fd, bytes(data[:5])) and 0)
    with pytest.raises(OSError, match=rf"cannot store a finished job's record in {w.path} .*free space and run again"):
        w.append({"key": "b", "codec": "jpeg"})
    monkeypatch.setattr(store.os, "write", real)
    assert w._fd < 0  # takes no more records
    assert [r["key"] for r in read_records(tmp_path)] == ["a"]


def test_corrupt_file_is_reported_and_others_run(image_folder, tmp_path, capsys):
    (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    out = tmp_path / "run"
    code = main(["run", "--codecs", "jpeg", "--dataset", str(image_folder), "--out", str(out), "-q", "50",
                 "--jobs", "1", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "FAILED" in err
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(df) == 4
    bad = df[df.image == "broken"].iloc[0]
    assert "broken.png" in bad["error"] and "cannot read image" in bad["error"]
    assert (df[df.image != "broken"]["error"] == "").all()
    # fixing the file and re-running retries only the failed job
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image_folder / "broken.png")
    assert main(["run", "--codecs", "jpeg", "--dataset", str(image_folder), "--out", str(out), "-q", "50",
                 "--jobs", "1", "--no-progress"]) == 0


def test_image_policy_greyscale_rgba_palette_16bit(tmp_path):
    d = tmp_path / "modes"
    d.mkdir()
    rgb = np.asarray(Image.fromarray(__import__("skimage.data").data.astronaut()).resize((200, 180)))
    Image.fromarray(rgb).convert("L").save(d / "grey.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    import cv2

    deep16 = np.minimum(rgb.astype(np.uint32) * 257 + 3, 65535).astype(np.uint16)
    cv2.imwrite(str(d / "deep.png"), np.ascontiguousarray(deep16[:, :, ::-1]))  # OpenCV writes BGR
    df = lcbench.run(["png"], d, out=tmp_path / "run", jobs=1).set_index("image")
    assert (df["error"] == "").all()
    assert "greyscale" in df.loc["grey", "notes"] and "alpha" in df.loc["alpha", "notes"]
    assert "16-bit" in df.loc["deep", "notes"]
    from lcbench.images import load_image

    deep = load_image(d / "deep.png").pixels
    assert np.array_equal(deep, np.rint(deep16 * 255.0 / 65535))
    assert np.array_equal(load_image(d / "alpha.png").pixels, rgb)
    grey = load_image(d / "grey.png").pixels
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_small_image_records_nan_ms_ssim(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    Image.fromarray(np.asarray(__import__("skimage.data").data.coffee())[:100, :150]).save(d / "tiny.png")
    df = lcbench.run(["jpeg"], d, out=tmp_path / "run", quality=[50], jobs=1)
    row = df.iloc[0]
    assert row["error"] == "" and math.isnan(row["ms_ssim"]) and "160" in row["notes"]
    assert row["ssim"] > 0.5


def test_unknown_codec_exit_2_with_suggestion(image_folder, capsys):
    assert main(["run", "--codecs", "jpge", "--dataset", str(image_folder), "--no-progress"]) == 2
    assert "did you mean jpeg" in capsys.readouterr().err


def test_bad_quality_grid_exit_2(image_folder, capsys):
    assert main(["run", "--codecs", "jpeg", "-q", "5:95", "--dataset", str(image_folder)]) == 2
    assert "START:STOP:STEP" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["-q", "abc"], "-q/--quality: bad rate value 'abc'"),
    (["--target-bpp", "x"], "--target-bpp: bad rate value 'x'"),
    (["-q", "50", "--out", "{tmp}/afile"], "--out {tmp}/afile: is a file; give a folder"),
    (["-q", "50", "--out", "{tmp}/afile/run"], "--out {tmp}/afile/run: lies under the file {tmp}/afile; give a folder"),
])
def test_bad_run_options_are_named(image_folder, tmp_path, capsys, args, words):
    """These said "bad rate value 'abc'" or "[Errno 17] File exists", naming no option."""
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["run", "--codecs", "jpeg", "--dataset", str(image_folder), *args]) == 2
    assert words.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_missing_dataset_exit_2(capsys, tmp_path):
    assert main(["run", "--codecs", "jpeg", "--dataset", str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_save_bitstreams_and_decoded(image_folder, tmp_path):
    out = tmp_path / "run"
    df = lcbench.run(["webp"], image_folder, out=out, quality=[40], jobs=1, save_bitstreams=True, save_decoded=True)
    for _, row in df.iterrows():
        bits = (out / "bitstreams" / "webp" / f"{row['image']}@40.bin").read_bytes()
        assert len(bits) == row["bytes"]
        dec = np.asarray(Image.open(out / "decoded" / "webp" / f"{row['image']}@40.png"))
        assert np.array_equal(dec, create_codec("webp").decode(bits))


def test_codecs_command_lists_everything(capsys):
    assert main(["codecs"]) == 0
    out = capsys.readouterr().out
    for name in ("jpeg", "webp", "jpeg2000", "avif", "png", "bpg", "hevc", "jpegxl", "importance_map"):
        assert f"\n{name} " in "\n" + out
    assert "UNAVAILABLE" in out or "available" in out
    assert "comcnn+jpeg" in out and "lcbench steps" in out  # pipelines are pointed to


def test_kodak_all_classical_codecs_one_image(kodak_dir, tmp_path):
    """The issue's codec list on a real Kodak image (one image, two rate points each)."""
    names = ["jpeg", "webp", "jpeg2000", "avif", "png", "hevc"]
    from lcbench.registry import codecs

    names = [n for n in names if codecs.get(n).availability()]
    df = lcbench.run(names, kodak_dir, out=tmp_path / "run", max_images=1, jobs=2)
    assert (df["error"] == "").all(), df[df["error"] != ""]["error"].tolist()
    assert set(df["codec"]) == set(names)
    assert (df[df.codec != "png"]["psnr_rgb"] > 15).all()


def test_set14_odd_sizes_and_greyscale_with_every_classical_codec(set14_dir, tmp_path):
    """Set14 has odd sizes and a greyscale image: every available classical codec runs on all of it."""
    from lcbench.registry import codecs

    names = [n for n in ("jpeg", "webp", "jpeg2000", "avif", "png", "hevc", "jpegxl", "bpg") if codecs.get(n).availability()]
    one_rate = {"jpeg2000": [0.5], "png": [6], "bpg": [32]}
    grid = {n: one_rate.get(n, [50]) for n in names}
    df = lcbench.run(names, set14_dir, out=tmp_path / "run", quality=grid, jobs=2)
    assert (df["error"] == "").all(), df[df["error"] != ""]["error"].tolist()
    n_images = len(list(set14_dir.glob("*.png")))
    assert df.groupby("codec").size().eq(n_images).all()
    assert "greyscale" in df[df.image == "bridge"]["notes"].iloc[0]


def test_target_bpp_lands_within_one_quality_step(image_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--codecs", "jpeg", "--dataset", str(image_folder), "--out", str(out), "--target-bpp", "0.5",
                 "--jobs", "1", "--no-progress"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 3 and (df.rate_param == "target_bpp").all() and (df.quality == 0.5).all()
    jpeg = create_codec("jpeg")
    for _, row in df.iterrows():
        img = np.asarray(Image.open(image_folder / f"{row['image']}.png").convert("RGB"))
        q = int(row["matched_rate"])
        bpp = {k: 8 * len(jpeg.encode(img, k)) / (img.shape[0] * img.shape[1]) for k in (q - 1, q, q + 1)}
        assert row["bpp"] == pytest.approx(bpp[q])
        assert bpp[q - 1] <= 0.5 + 1e-9 or bpp[q + 1] >= 0.5 - 1e-9  # the neighbours bracket the target
        assert abs(bpp[q] - 0.5) <= min(abs(bpp[q - 1] - 0.5), abs(bpp[q + 1] - 0.5)) + 1e-12


def test_rate_matched_and_grid_results_are_never_taken_for_each_other(image_folder, tmp_path, monkeypatch):
    """jpeg2000's grid is in bpp too (nominal_bpp). A --target-bpp 0.5 run after a -q 0.5 run, in
    the same run directory and through the result cache, must rate-match (matched_rate set), not
    reuse the grid rows: they shared one job key and one rate_param before."""
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    grid = lcbench.run(["jpeg2000"], image_folder, out=out, quality=[0.5], jobs=1, save_bitstreams=True)
    assert (grid.rate_param == "nominal_bpp").all() and "matched_rate" not in grid.columns
    for where in (out, tmp_path / "fresh"):
        matched = lcbench.run(["jpeg2000"], image_folder, out=where, target_bpp=[0.5], jobs=1, save_bitstreams=True)
        matched = matched[matched.rate_param == "target_bpp"]
        assert len(matched) == 3 and matched["matched_rate"].notna().all()
        assert (matched["matched_rate"] != 0.5).any()  # really searched: some image needs another parameter
    saved = {p.name for p in (out / "bitstreams" / "jpeg2000").iterdir()}
    assert {f"{i}@0.5.bin" for i in grid.image} | {f"{i}@bpp0.5.bin" for i in grid.image} == saved


def test_rate_matched_cache_keys_are_tagged_like_run_keys(image_folder, tmp_path, monkeypatch):
    """The run key of a rate-matched job had its own tag but the result cache key did not: results
    cached by the previous version (jpeg2000 grid rows were called target_bpp, and matching
    searched differently) were served to new --target-bpp jobs."""
    from lcbench.dataset import folder_dataset
    from lcbench.jobs import METRICS_VERSION, plan_jobs
    from lcbench.result_cache import content_key
    from lcbench.runner import _open_cache

    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    codec = create_codec("jpeg2000")
    jobs = plan_jobs([("jpeg2000", codec)], folder_dataset(image_folder), target_bpp=[0.5])
    cache, keys = _open_cache(jobs)
    try:
        for job in jobs:
            sha = cache.pixel_hash(job.image.path)
            old = content_key(job.label, job.version, "target_bpp", 0.5, sha, METRICS_VERSION)
            assert keys[job.key] != old
    finally:
        cache.close()


def test_no_codec_may_use_the_rate_matching_rate_param():
    from lcbench.codec import Codec
    from lcbench.registry import register_codec

    class Clash(Codec):
        name = "clash_codec"
        rate_param = "target_bpp"

        def encode(self, image, rate):  # pragma: no cover - never registered
            return b""

        def decode(self, bitstream):  # pragma: no cover
            return np.zeros((1, 1, 3), np.uint8)

    with pytest.raises(ValueError, match="reserved for --target-bpp"):
        register_codec(Clash)


def test_target_bpp_and_quality_are_exclusive(image_folder, capsys):
    assert main(["run", "--codecs", "jpeg", "--dataset", str(image_folder), "--target-bpp", "0.5", "-q", "50"]) == 2
    assert "--target-bpp" in capsys.readouterr().err


def test_result_cache_serves_another_run_directory(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))  # nothing from other tests
    first = lcbench.run(["jpeg"], image_folder, out=tmp_path / "one", quality=[25, 75], jobs=1)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in image_folder.glob("*.png"):  # same pixels under other names and another folder
        (renamed / f"x_{p.name}").write_bytes(p.read_bytes())
    from lcbench.runner import RunOptions, execute

    outcome = execute(RunOptions(codecs=["jpeg"], dataset=str(renamed), out=tmp_path / "two", rates=(25.0, 75.0, 50.0),
                                 jobs=1, progress=False))
    assert outcome.from_cache == 6 and outcome.skipped == 0 and outcome.planned == 9
    second = outcome.frame
    a = first.set_index(["quality", "image"])["bytes"].sort_index()
    b = second[second.quality != 50].assign(image=lambda d: d.image.str[2:]).set_index(["quality", "image"])["bytes"]
    pd.testing.assert_series_equal(a, b.sort_index())
    fresh = execute(RunOptions(codecs=["jpeg"], dataset=str(renamed), out=tmp_path / "three", rates=(25.0,), jobs=1,
                               progress=False, use_cache=False))
    assert fresh.from_cache == 0


def test_learned_codec_results_are_filed_under_their_device(image_folder, tmp_path, monkeypatch):
    """Pixels and times of a learned codec depend on the device, but results measured on the cpu
    were served to a --device cuda run (run and cache keys carried no device)."""
    from lcbench.jobs import plan_jobs
    from lcbench.dataset import resolve_dataset

    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    dataset = resolve_dataset(str(image_folder))
    keys = {}
    for device in ("cpu", "cuda"):
        codec = create_codec("importance_map", device=device)
        jobs = plan_jobs([("importance_map", codec)], dataset, rates=[1.0])
        assert {j.version for j in jobs} == {codec.version() + f" on {device}"}
        keys[device] = {j.key for j in jobs}
    assert not keys["cpu"] & keys["cuda"]
    jpeg = plan_jobs([("jpeg", create_codec("jpeg", device="cuda"))], dataset, rates=[50.0])
    assert {j.version for j in jpeg} == {create_codec("jpeg").version()}  # not a device codec: unchanged
    # what a run records, in results.csv and run.json
    out = tmp_path / "run"
    assert main(["run", "--codecs", "importance_map", "-q", "1", "--dataset", str(image_folder), "--out", str(out),
                 "--device", "cpu", "--max-images", "1", "--jobs", "1", "--no-progress"]) == 0
    rows = pd.read_csv(out / "results.csv")
    assert rows["codec_version"].str.endswith(" on cpu").all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["codecs"]["importance_map"]["version"] == rows["codec_version"].iloc[0]


def test_cached_result_carries_the_notes_of_the_file_benchmarked(tmp_path, monkeypatch):
    """An RGBA file whose colour channels equal an RGB file's was served the RGB file's cached rows,
    without 'alpha channel dropped' (the cache keyed on pixels only)."""
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    rgb = photo("astronaut", (48, 64))
    alpha = np.random.default_rng(0).integers(0, 256, size=rgb.shape[:2], dtype=np.uint8)
    for name, arr in (("c1", rgb), ("c2", np.dstack([rgb, alpha]))):
        (tmp_path / name).mkdir()
        Image.fromarray(arr).save(tmp_path / name / "img.png")
    notes = {}
    for name in ("c1", "c2"):
        out = tmp_path / f"run_{name}"
        assert main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(tmp_path / name), "--out", str(out),
                     "--jobs", "1", "--no-progress"]) == 0
        notes[name] = pd.read_csv(out / "results.csv", keep_default_na=False)["notes"].tolist()
    assert "alpha" not in notes["c1"][0]
    assert notes["c2"][0].startswith("alpha channel dropped (colour channels used as stored)")


def test_result_cache_tells_transposed_flat_images_apart(tmp_path, monkeypatch):
    # same pixel bytes, different shapes: the cache used to serve the 170x180 result for 180x170
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    for name, shape in (("a", (170, 180, 3)), ("b", (180, 170, 3))):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full(shape, 77, np.uint8)).save(tmp_path / name / "flat.png")
    lcbench.run(["jpeg"], tmp_path / "a", out=tmp_path / "ra", quality=[50], jobs=1)
    from lcbench.runner import RunOptions, execute

    outcome = execute(RunOptions(codecs=["jpeg"], dataset=str(tmp_path / "b"), out=tmp_path / "rb", rates=(50.0,),
                                 jobs=1, progress=False))
    assert outcome.from_cache == 0
    row = outcome.frame.iloc[0]
    assert (row.width, row.height) == (170, 180)


class _Versioned:
    """State of the ``versioned`` test codec: its version string and whether encode fails."""
    version, broken = "v1", False


def _versions(df) -> set[str]:
    """The codec_version values without the source tag lcbench.run() adds to a class defined in a
    file that is not importable by name (whether pytest's test modules are depends on sys.path:
    `python -m pytest` puts the checkout on it, the `pytest` script does not)."""
    return {v.split(" source-sha256:")[0] for v in df.codec_version}


def _register_versioned() -> None:
    from lcbench import Codec, register_codec
    from lcbench.registry import codecs

    if "versioned" in codecs:
        return

    @register_codec
    class Versioned(Codec):
        name = "versioned"
        default_rates = (1, 2)

        def version(self):
            return _Versioned.version

        def encode(self, image, rate):
            if _Versioned.broken:
                raise RuntimeError("this version cannot encode")
            # lossy by an amount that depends on the version: v1 and v2 give different PSNR
            step = 8 if _Versioned.version == "v1" else 32
            return (image // step * step).tobytes() + bytes([image.shape[0] >> 8, image.shape[0] & 255])

        def decode(self, data):
            h = data[-2] << 8 | data[-1]
            flat = np.frombuffer(data[:-2], np.uint8)
            return flat.reshape(h, -1, 3).copy()


def test_new_codec_version_replaces_old_rows_even_when_it_fails(image_folder, tmp_path):
    # Before: results.csv kept v1's numbers after v2 failed, and the run reported all jobs ok.
    _register_versioned()
    out = tmp_path / "run"
    try:
        _Versioned.version, _Versioned.broken = "v1", False
        df1 = lcbench.run(["versioned"], image_folder, out=out, jobs=1, use_cache=False)
        assert (df1.error == "").all() and _versions(df1) == {"v1"}
        _Versioned.version, _Versioned.broken = "v2", True
        df2 = lcbench.run(["versioned"], image_folder, out=out, jobs=1, use_cache=False)
        assert len(df2) == 6 and (df2.error.str.contains("cannot encode")).all()
        on_disk = pd.read_csv(out / "results.csv", keep_default_na=False)
        assert len(on_disk) == 6 and _versions(on_disk) == {"v2"}
        assert not any(c.startswith("_") for c in on_disk.columns)
        assert main(["run", "--codecs", "versioned", "--dataset", str(image_folder), "--out", str(out),
                     "--jobs", "1", "--no-cache"]) == 1
        # v3 works: its numbers, not v1's, whatever the shards' names sort like
        _Versioned.version, _Versioned.broken = "v3", False
        df3 = lcbench.run(["versioned"], image_folder, out=out, jobs=1, use_cache=False)
        assert (df3.error == "").all() and _versions(df3) == {"v3"}
        shards = sorted((out / "records").glob("*.jsonl"))
        for i, shard in enumerate(shards):  # reverse the name order of the shards
            shard.rename(shard.with_name(f"zz-{len(shards) - i:04d}.jsonl"))
        _Versioned.version = "v1"  # a later v1 run plans v1 keys again: v1's old records serve it
        df4 = lcbench.run(["versioned"], image_folder, out=out, jobs=1, use_cache=False)
        assert _versions(df4) == {"v1"} and (df4.error == "").all()
        assert len(read_records(out)) == 6 * 3 + 6  # v1 reused from the run directory, nothing recomputed
        # another codec run into the same directory keeps the versioned rows at the version run last
        lcbench.run(["jpeg"], image_folder, out=out, quality=[50], jobs=1, use_cache=False)
        on_disk = pd.read_csv(out / "results.csv", keep_default_na=False)
        assert _versions(on_disk[on_disk.codec == "versioned"]) == {"v1"}
        assert len(on_disk) == 6 + 3
    finally:
        _Versioned.version, _Versioned.broken = "v1", False


def test_rows_of_an_edited_image_leave_results_csv(image_folder, tmp_path):
    """jpeg at q20 and q40, then the image a.png is edited and only q20 is run again: results.csv
    showed a@q20 of the new image beside a@q40 of the old one, and said "all ok"."""
    from lcbench.runner import RunOptions, execute

    out = tmp_path / "run"
    lcbench.run(["jpeg"], image_folder, out=out, quality=[20, 40], jobs=1, use_cache=False)
    edited = 255 - photo("astronaut", (192, 256))
    Image.fromarray(edited).save(image_folder / "a.png")
    os.utime(image_folder / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    outcome = execute(RunOptions(codecs=["jpeg"], dataset=str(image_folder), out=out, jobs=1, use_cache=False,
                                 rates=[20.0], progress=False))
    assert outcome.old_version_rows == {"jpeg": 1}  # a@q40 of the old image: said, not shown
    on_disk = pd.read_csv(out / "results.csv", keep_default_na=False)
    rows = {(r.image, r.quality): r for r in on_disk.itertuples()}
    assert set(rows) == {("a", 20.0), ("b", 20.0), ("c", 20.0), ("b", 40.0), ("c", 40.0)}
    jpeg = create_codec("jpeg")
    assert rows[("a", 20.0)].bytes == len(jpeg.encode(edited, 20))


def test_resume_with_save_flags_saves_the_finished_jobs_too(image_folder, tmp_path):
    """A run, then the same run resumed with --save-bitstreams --save-decoded: only the new rate
    point's files were written, the finished jobs' never, and it said all ok."""
    out = tmp_path / "run"
    lcbench.run(["jpeg"], image_folder, out=out, quality=[20, 40], jobs=1, use_cache=False)
    lcbench.run(["jpeg"], image_folder, out=out, quality=[20, 40, 60], jobs=1, use_cache=False,
                save_bitstreams=True, save_decoded=True)
    jpeg = create_codec("jpeg")
    for name in ("a", "b", "c"):
        img = np.asarray(Image.open(image_folder / f"{name}.png").convert("RGB"))
        for q in (20, 40, 60):
            data = (out / "bitstreams" / "jpeg" / f"{name}@{q}.bin").read_bytes()
            assert data == jpeg.encode(img, q)
            assert np.array_equal(np.asarray(Image.open(out / "decoded" / "jpeg" / f"{name}@{q}.png")),
                                  jpeg.decode(data))
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(df) == 9 and (df.error == "").all()


def test_rows_of_an_older_version_leave_results_csv(image_folder, tmp_path):
    # v1 on every image, then v2 on one: results.csv used to mix a@v2 with b, c @v1 under one label
    _register_versioned()
    out = tmp_path / "run"
    try:
        _Versioned.version, _Versioned.broken = "v1", False
        lcbench.run(["versioned"], image_folder, out=out, jobs=1, use_cache=False)
        _Versioned.version = "v2"
        from lcbench.runner import RunOptions, execute

        outcome = execute(RunOptions(codecs=["versioned"], dataset=str(image_folder), out=out, jobs=1,
                                     use_cache=False, image_glob="a", progress=False))
        assert outcome.old_version_rows == {"versioned": 4}  # b and c at 2 rates: said, not silent
        on_disk = pd.read_csv(out / "results.csv", keep_default_na=False)
        assert _versions(on_disk) == {"v2"} and sorted(set(on_disk.image)) == ["a"]
    finally:
        _Versioned.version, _Versioned.broken = "v1", False


def test_run_json_is_read_and_written_under_the_run_directory_lock(image_folder, tmp_path):
    """Two runs into one --out at once each read, checked and rewrote run.json: the second write
    dropped the first run's codecs (or mixed two datasets). A run now waits for the lock."""
    from lcbench.cache import file_lock
    from lcbench.runner import RUN_LOCK

    out = tmp_path / "run"
    out.mkdir()
    with file_lock(out / RUN_LOCK):
        proc = subprocess.Popen([sys.executable, "-m", "lcbench", "run", "--codecs", "jpeg", "-q", "50", "--dataset",
                                 str(image_folder), "--out", str(out), "--jobs", "1", "--no-progress", "--no-cache"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(6)  # lcbench starts and plans in about 2 s here
        assert proc.poll() is None and not (out / "run.json").exists()  # waiting, nothing written
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert "jpeg" in json.loads((out / "run.json").read_text())["codecs"]


def test_image_rewritten_with_its_old_size_and_mtime_is_a_new_image(tmp_path, monkeypatch):
    """A file overwritten in place with the same size and its mtime restored (cp -p, rsync -t) was
    taken for the old image: the run directory skipped it and the result cache served old numbers."""
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    path = folder / "crop.ppm"  # raw PPM: the file size depends only on the image size
    first, second = photo("astronaut", (64, 64)), photo("coffee", (64, 64))
    Image.fromarray(first).save(path)
    st = path.stat()
    lcbench.run(["jpeg"], folder, out=tmp_path / "run", quality=[50], jobs=1)
    Image.fromarray(second).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    expected = len(create_codec("jpeg").encode(second, 50))
    for out in (tmp_path / "run", tmp_path / "fresh"):
        df = lcbench.run(["jpeg"], folder, out=out, quality=[50], jobs=1)
        assert int(df.bytes.iloc[0]) == expected, out


def test_run_json_is_readable_like_results_csv(image_folder, tmp_path):
    """run.json came out 0600 (mkstemp's mode) beside a 0644 results.csv."""
    out = tmp_path / "run"
    assert main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(image_folder), "--out", str(out),
                 "--max-images", "1", "--jobs", "1", "--no-progress"]) == 0
    mask = os.umask(0o022)
    os.umask(mask)
    assert (out / "run.json").stat().st_mode & 0o777 == 0o666 & ~mask  # was 0600 under any umask
    assert (out / "results.csv").stat().st_mode & 0o777 == 0o666 & ~mask


LEAKY_SHAPE_PLUGIN = '''
import zlib
import numpy as np
from lcbench import Codec, register_codec

@register_codec
class LeakyShape(Codec):
    """Leaves the image size out of its bitstream: decode reads what encode left on self."""
    name = "leaky_shape"
    default_rates = (6,)
    rate_range = (0, 9)
    rate_is_integer = True
    def version(self): return "1"
    def encode(self, image, rate):
        self._shape = image.shape
        return zlib.compress(image.tobytes(), int(rate))
    def decode(self, data):
        return np.frombuffer(zlib.decompress(data), np.uint8).reshape(self._shape)
'''


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_decoder_that_needs_its_encoders_state_fails_its_jobs(image_folder, tmp_path, capsys, jobs):
    """Decoding on the encoding instance let a codec keep the image size out of the bytes counted:
    'all ok' with a rate that is not what its decoder needs. Decoding is now a separate instance."""
    plugin = tmp_path / "leaky.py"
    plugin.write_text(LEAKY_SHAPE_PLUGIN)
    out = tmp_path / "run"
    assert main(["run", "--plugin", str(plugin), "--codecs", "leaky_shape,png", "--dataset", str(image_folder),
                 "--out", str(out), "--jobs", jobs, "--no-progress", "--no-cache"]) == 1
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    leaky, png = df[df.codec == "leaky_shape"], df[df.codec == "png"]
    assert len(leaky) == len(png) > 0
    assert (png.error == "").all()
    assert leaky.error.str.contains("has no attribute '_shape'").all()


def test_a_reader_fix_gives_folder_images_new_keys(image_folder, tmp_path, monkeypatch):
    """Run keys and the cache's remembered pixel hashes knew a file by its stat only, so after an
    image-reader fix (planar 16-bit TIFFs were read scrambled) the old pixels' results were served."""
    import lcbench.images as images
    from lcbench.dataset import resolve_dataset
    from lcbench.jobs import plan_jobs
    from lcbench.result_cache import ResultCache

    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    dataset = resolve_dataset(str(image_folder))
    codec = create_codec("jpeg")
    path = dataset.images[0].path
    cache = ResultCache()
    loads = []
    real_load = images.load_image
    monkeypatch.setattr(images, "load_image", lambda p: loads.append(p) or real_load(p))
    before = {j.key for j in plan_jobs([("jpeg", codec), ], dataset, rates=[50.0])}
    cache.pixel_hash(path)
    cache.pixel_hash(path)
    assert len(loads) == 1  # remembered
    monkeypatch.setattr(images, "READER_REVISION", images.READER_REVISION + 1)
    import lcbench.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "READER_REVISION", images.READER_REVISION)
    after = {j.key for j in plan_jobs([("jpeg", codec)], dataset, rates=[50.0])}
    assert not before & after
    cache.pixel_hash(path)
    assert len(loads) == 2  # read again by the new reader
    cache.close()


def test_a_record_that_fills_no_row_does_not_count_as_done(image_folder, tmp_path, capsys):
    """A record whose key is a planned job's but whose fields are another row's (quality 70 edited
    to 71) counted as done: '8/8 jobs ok' with 7 rows, and no rerun ever filled the row."""
    out = tmp_path / "run"
    args = ["run", "--codecs", "jpeg", "-q", "30,70", "--dataset", str(image_folder), "--out", str(out), "--jobs", "1",
            "--no-progress", "--no-cache"]
    assert main(args) == 0
    (shard,) = (out / "records").glob("*.jsonl")
    lines = shard.read_text().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if '"quality":70.0' in line)
    lines[i] = lines[i].replace('"quality":70.0', '"quality":71.0')
    shard.write_text("".join(lines))
    capsys.readouterr()
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 * len(list(image_folder.glob("*.png"))) and (df.quality == 70).sum() == len(df) // 2


def test_python_api_says_what_the_cli_prints_beside_the_table(image_folder, tmp_path):
    """lcbench.run() returned only the rows: a notebook never heard of failed jobs or files left out."""
    (image_folder / "notes.txt").write_text("x")
    try:
        df = lcbench.run(["jpeg"], image_folder, out=tmp_path / "run", quality=[50], jobs=1)
    finally:
        (image_folder / "notes.txt").unlink()
    info = df.attrs["lcbench"]
    assert info["planned"] == len(df) and info["failed"] == 0 and info["run_dir"] == str(tmp_path / "run")
    assert info["ignored_files"] == {"notes.txt": "not an image type lcbench reads"}
