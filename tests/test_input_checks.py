"""Bad or surprising input is refused or reported, never silently dropped or mixed in.

Each case here was a bug: an image lost to a duplicate id, files skipped without a word, two
datasets mixed in one run directory, a typo'd per-codec grid ignored, a rate range that hung.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lcbench
from lcbench.cli import main
from lcbench.dataset import DatasetError, folder_dataset, resolve_dataset
from lcbench.images import load_image
from lcbench.rates import parse_rate_list
from lcbench.registry import create_codec, load_plugin

from support import photo


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


# --- datasets -------------------------------------------------------------------------------

def test_two_files_with_one_id_are_refused_naming_both(tmp_path):
    _save(tmp_path / "a.png", photo("astronaut", (64, 64)))
    _save(tmp_path / "a.jpg", photo("coffee", (64, 64)))
    _save(tmp_path / "b.png", photo("chelsea", (64, 64)))
    with pytest.raises(DatasetError, match=r"a: a\.jpg, a\.png"):
        folder_dataset(tmp_path)


def test_other_files_and_run_directories_are_listed_not_benchmarked(tmp_path, capsys):
    data = tmp_path / "data"
    _save(data / "a.png", photo("astronaut", (64, 64)))
    (data / "README.txt").write_text("not an image")
    (data / "c.jxl").write_bytes(b"\xff\x0a")
    (data / ".hidden.png").write_bytes(b"")
    frames = [Image.fromarray(photo(n, (48, 48))) for n in ("coffee", "chelsea")]
    frames[0].save(data / "anim.gif", save_all=True, append_images=frames[1:])
    # a run directory saved inside the dataset folder: its decoded PNGs are not sources
    assert main(["run", "--codecs", "png", "--dataset", str(data), "--out", str(data / "run"), "--jobs", "1",
                 "--save-decoded", "--no-progress"]) == 0
    capsys.readouterr()
    ds = folder_dataset(data)
    assert [im.id for im in ds.images] == ["a", "anim"]
    # a hidden file is listed too (it was dropped without a word), each with its reason
    assert sorted(p.name for p in ds.ignored) == [".hidden.png", "README.txt", "c.jxl", "run"]
    assert {p.name: r for p, r in ds.ignored_reasons.items()} == {
        ".hidden.png": "hidden file", "README.txt": "not an image type lcbench reads",
        "c.jxl": "not an image type lcbench reads", "run": "lcbench run directory"}
    assert main(["run", "--codecs", "png", "--dataset", str(data), "--out", str(data / "run"), "--jobs", "1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    # each with its reason (the note gave one reason for all, 'not an image type ... or a run directory')
    assert ("4 file(s)/folder(s) under the dataset folder are not benchmarked: .hidden.png (hidden file); "
            "README.txt (not an image type lcbench reads); c.jxl (not an image type lcbench reads); "
            "run (lcbench run directory); all listed with their reasons in run.json") in err
    meta = json.loads((data / "run" / "run.json").read_text())
    assert meta["dataset"]["ignored_files"] == [".hidden.png", "README.txt", "c.jxl", "run"]
    assert meta["dataset"]["ignored_reasons"] == {
        ".hidden.png": "hidden file", "README.txt": "not an image type lcbench reads",
        "c.jxl": "not an image type lcbench reads", "run": "lcbench run directory"}
    df = pd.read_csv(data / "run" / "results.csv", keep_default_na=False).set_index("image")
    assert list(df.index) == ["a", "anim"]
    assert "first frame of 2" in df.loc["anim", "notes"]


def test_a_folder_named_like_a_named_dataset_is_ambiguous(tmp_path, monkeypatch):
    """`--dataset set5` from a directory holding a folder set5/ benchmarked that folder and
    labelled it the named set Set5, without a word."""
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "set5" / "x.png", photo("astronaut", (32, 32)))
    with pytest.raises(DatasetError, match=r"--dataset set5: both a folder here .* write --dataset ./set5"):
        resolve_dataset("set5")
    with pytest.raises(DatasetError, match=r"a folder named 'set5' is taken as a copy of the dataset 'set5'"):
        resolve_dataset("./set5")  # checked as Set5 (and this is not Set5)
    _save(tmp_path / "mine" / "y.png", photo("astronaut", (32, 32)))
    assert [im.id for im in resolve_dataset("mine").images] == ["y"]  # not a dataset name: the folder


def test_symlinked_subfolder_is_followed(tmp_path):
    real = tmp_path / "elsewhere"
    _save(real / "x.png", photo("coffee", (40, 40)))
    data = tmp_path / "data"
    _save(data / "a.png", photo("astronaut", (40, 40)))
    os.symlink(real, data / "linked")
    os.symlink(data, data / "loop")  # a loop must not recurse forever
    assert [im.id for im in folder_dataset(data).images] == ["a", "linked/x"]


def test_a_link_to_a_folder_or_file_in_the_dataset_keeps_the_real_path(tmp_path):
    """real/r.png and alink -> real: only alink/r was benchmarked (it sorts first), real/r was
    nowhere; the real path is kept and the link is listed with its reason."""
    data = tmp_path / "data"
    _save(data / "real" / "r.png", photo("coffee", (40, 40)))
    _save(data / "z.png", photo("astronaut", (40, 40)))
    os.symlink("real", data / "alink")
    os.symlink("z.png", data / "a_z.png")
    ds = folder_dataset(data)
    assert [im.id for im in ds.images] == ["real/r", "z"]
    assert ds.ignored_reasons == {
        data / "a_z.png": "symbolic link to z.png, which is benchmarked under that name",
        data / "alink": "symbolic link to the folder real, whose images are listed under their own path"}
    assert ds.ignored == [data / "a_z.png", data / "alink"]


def test_hidden_folder_is_listed_as_ignored(tmp_path):
    _save(tmp_path / "a.png", photo("coffee", (40, 40)))
    _save(tmp_path / ".dotdir" / "b.png", photo("astronaut", (40, 40)))
    ds = folder_dataset(tmp_path)
    assert [im.id for im in ds.images] == ["a"]
    assert ds.ignored_reasons == {tmp_path / ".dotdir": "hidden folder"}


def test_broken_link_is_a_failed_image_named_as_a_broken_link(tmp_path, capsys):
    data = tmp_path / "data"
    _save(data / "a.png", photo("coffee", (40, 40)))
    os.symlink("nothere.png", data / "broken.png")
    os.symlink("nothere.txt", data / "broken.txt")
    ds = folder_dataset(data)
    assert [im.id for im in ds.images] == ["a", "broken"]
    assert ds.ignored_reasons == {data / "broken.txt": "broken symbolic link"}
    assert main(["run", "--codecs", "png", "--dataset", str(data), "--out", str(tmp_path / "run"), "--jobs", "1",
                 "--no-progress"]) == 1
    assert "broken.png is a broken symbolic link: 'nothere.png' does not exist" in capsys.readouterr().err
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False).set_index("image")
    assert df.loc["a", "error"] == "" and "broken symbolic link" in df.loc["broken", "error"]


def test_image_name_that_is_not_utf8_is_refused_before_anything_runs(tmp_path, capsys):
    """caf\xe9.png ran every job, then the run died writing results.csv, and every rerun too."""
    data = tmp_path / "data"
    _save(data / "a.png", photo("coffee", (40, 40)))
    bad = os.fsdecode(b"caf\xe9.png")
    try:
        (data / bad).write_bytes((data / "a.png").read_bytes())
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system does not take non-UTF-8 names")
    with pytest.raises(DatasetError, match=r"not valid UTF-8 \(b'caf\\xe9\.png'\).*rename it"):
        folder_dataset(data)
    out = tmp_path / "run"
    assert main(["run", "--codecs", "png", "--dataset", str(data), "--out", str(out), "--jobs", "1",
                 "--no-progress"]) == 2
    assert "b'caf\\xe9.png'" in capsys.readouterr().err
    assert not (out / "records").exists()


def test_an_image_file_as_dataset_names_its_folder(tmp_path):
    _save(tmp_path / "sub" / "x.png", photo("coffee", (40, 40)))
    with pytest.raises(DatasetError, match=rf"is an image file, not a folder; give the folder that holds it "
                                           rf"\(--dataset {tmp_path / 'sub'}, with --images x\.png"):
        resolve_dataset(str(tmp_path / "sub" / "x.png"))


def test_empty_dataset_argument_and_run_directory_as_dataset(tmp_path, image_folder):
    with pytest.raises(DatasetError, match="empty"):
        resolve_dataset("")
    out = tmp_path / "run"
    lcbench.run(["png"], image_folder, out=out, jobs=1, max_images=1)
    with pytest.raises(DatasetError, match="run directory"):
        folder_dataset(out)


def test_another_dataset_into_the_same_run_directory_is_refused(tmp_path, image_folder, capsys):
    other = tmp_path / "other"
    _save(other / "a.png", photo("coffee", (80, 80)))
    out = tmp_path / "run"
    lcbench.run(["png"], image_folder, out=out, jobs=1)
    before = (out / "results.csv").read_bytes()
    assert main(["run", "--codecs", "png", "--dataset", str(other), "--out", str(out), "--no-progress"]) == 2
    assert "use another --out" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before
    # the same folder again resumes as before
    assert len(lcbench.run(["png"], image_folder, out=out, jobs=1)) == 3


def test_saved_file_names_may_not_collide(tmp_path):
    data = tmp_path / "data"
    _save(data / "s1" / "b.png", photo("astronaut", (40, 40)))
    _save(data / "s1__b.png", photo("coffee", (40, 40)))
    with pytest.raises(ValueError, match="same file name"):
        lcbench.run(["png"], data, out=tmp_path / "run", save_bitstreams=True)
    assert len(lcbench.run(["png"], data, out=tmp_path / "run2", jobs=1)) == 2  # not saving: fine


# --- rate grids -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [("1:NaN:1", "finite"), ("1:Infinity:1", "finite"),
                                           ("5:95:1e-7", "points")])
def test_rate_ranges_that_cannot_be_a_grid(text, message):
    with pytest.raises(ValueError, match=message):
        parse_rate_list(text)


def test_grid_for_a_codec_not_in_the_run_is_an_error(image_folder, tmp_path, capsys):
    assert main(["run", "--codecs", "jpeg", "-q", "jpg=50", "--dataset", str(image_folder),
                 "--out", str(tmp_path / "r")]) == 2
    assert "'jpg'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no such codec"):
        lcbench.run(["jpeg"], image_folder, out=tmp_path / "r", quality={"webp": [50]})
    assert not (tmp_path / "r").exists()


def test_api_rate_grids_and_codec_list(image_folder, tmp_path):
    df = lcbench.run("jpeg", image_folder, out=tmp_path / "a", quality=50, jobs=1)
    assert sorted(set(df.quality)) == [50]
    df = lcbench.run("jpeg", image_folder, out=tmp_path / "b", quality="40:60:10", jobs=1, max_images=1)
    assert sorted(set(df.quality)) == [40, 50, 60]
    for bad in ([], {}):
        with pytest.raises(ValueError, match="empty"):
            lcbench.run("jpeg", image_folder, out=tmp_path / "c", quality=bad)
    with pytest.raises(ValueError, match="no codec"):
        lcbench.run([], image_folder, out=tmp_path / "c")


def test_target_bpp_out_of_reach_is_noted(image_folder, tmp_path):
    df = lcbench.run(["png", "jpeg"], image_folder, out=tmp_path / "r", target_bpp=[0.5], jobs=1, max_images=1)
    notes = dict(zip(df.codec, df.notes))
    assert "target 0.5 bpp not reached" in notes["png"]
    # the closest PNG gets is its strongest zlib level, not level 0 (24 bpp, uncompressed)
    assert df.set_index("codec").loc["png", "matched_rate"] == 9
    assert notes["jpeg"] == ""  # JPEG gets within a few per cent of 0.5 bpp


# --- codecs and plugins ---------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("webp:method=abc", "codec 'webp': option method='abc' must be a whole number"),
    ("webp:method=9", "must be in 0..6"),
    ("avif:threads=1.5", "codec 'avif': option threads=1.5 must be a whole number"),
    ("avif:subsampling=4:2:1", "bad option"),
    ("avif:subsampling=421", "avif: subsampling must be 420, 422, 444 or 400"),
    ("jpegxl:effort=0", "codec 'jpegxl': option effort=0 must be in 1..9"),
    ("jpegxl:effort=10", "codec 'jpegxl': option effort=10 must be in 1..9"),  # cjxl refuses it in every job
    ("jpeg:optimize=flase", "codec 'jpeg': option optimize='flase' must be true or false"),  # was True
    ("jpeg:optimize=2", "codec 'jpeg': option optimize=2 must be true or false"),
])
def test_codec_options_are_checked_naming_codec_and_option(spec, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        create_codec(spec)


def test_avif_subsampling_can_be_given_in_a_codec_spec():
    """"4:4:4" cannot be written in a spec (':' separates options), so 444 and 4:4:4 AVIF could
    not be benchmarked; the label must parse back to the same codec."""
    for spec, mode in (("avif:subsampling=444", "4:4:4"), ("avif:subsampling=400", "4:0:0")):
        codec = create_codec(spec)
        assert codec.subsampling == mode and codec.label() == spec
        assert create_codec(codec.label()).subsampling == mode
    assert create_codec("avif").label() == "avif"
    img = photo("astronaut", (64, 64))
    sizes = {s: len(create_codec(f"avif:subsampling={s}").encode(img, 50)) for s in (420, 444)}
    assert sizes[420] != sizes[444]  # the option reaches libavif


def test_jpegxl_qualities_cjxl_refuses_are_refused_when_planned():
    """cjxl accepts distances up to 25 (quality about 4.05): -q jpegxl=2 failed in every job, and
    --target-bpp always started its search at quality 0, so every rate-matched job failed."""
    codec = lcbench.registry.codecs.get("jpegxl")
    assert codec.rate_range[0] >= 4.1 and codec.accepted_rates[0] >= 4.1


@pytest.mark.skipif(shutil.which("cjxl") is None or shutil.which("djxl") is None, reason="libjxl tools not installed")
def test_jpegxl_target_bpp_matches(image_folder, tmp_path):
    df = lcbench.run(["jpegxl"], image_folder, out=tmp_path / "r", target_bpp=[0.05, 1.0], jobs=1, max_images=1)
    assert (df.error == "").all(), df.error.tolist()
    assert df.matched_rate.between(5, 99).all()


def test_tool_path_that_does_not_exist_is_an_error_not_the_tool_on_path(tmp_path, monkeypatch):
    """A given path that does not resolve fell back to the tool on PATH, and the run recorded the
    user's path in run.json while benchmarking another build."""
    with pytest.raises(lcbench.codec.CodecUnavailable, match=r"hevc: heif_enc='/nonexistent/heif-enc'"):
        create_codec("hevc:heif_enc=/nonexistent/heif-enc")
    monkeypatch.setenv("LCBENCH_CJXL", str(tmp_path / "cjxl-0.11"))
    avail = lcbench.registry.codecs.get("jpegxl").availability()
    assert not avail and "LCBENCH_CJXL" in avail.reason and "cjxl-0.11" in avail.reason
    with pytest.raises(lcbench.codec.CodecUnavailable, match="LCBENCH_CJXL"):
        create_codec("jpegxl")


def test_float_and_32bit_integer_images_are_refused_not_guessed(tmp_path):
    """A 0..1 float TIFF became pixels 0/1 and 12-bit data in int32 was divided by 65535."""
    from lcbench.images import ImageReadError

    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    Image.fromarray((ramp * 4095).astype(np.int32), mode="I").save(tmp_path / "i.tif")
    for name in ("f.tif", "i.tif"):
        with pytest.raises(ImageReadError, match="no declared value range") as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


@pytest.mark.skipif(shutil.which("cjxl") is None or shutil.which("djxl") is None, reason="libjxl tools not installed")
def test_tool_paths_given_as_options_make_the_codec_available(image_folder, tmp_path, monkeypatch):
    cjxl, djxl = shutil.which("cjxl"), shutil.which("djxl")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # the tools are not on PATH any more
    with pytest.raises(lcbench.codec.CodecUnavailable):
        lcbench.run(["jpegxl"], image_folder, out=tmp_path / "r0", quality=[50], jobs=1)
    df = lcbench.run([f"jpegxl:cjxl={cjxl}:djxl={djxl}"], image_folder, out=tmp_path / "r", quality=[50],
                     jobs=1, max_images=1)
    assert (df.error == "").all() and df.bytes.iloc[0] > 0


PLUGINS = {
    "dup_builtin": ("from lcbench import Codec, register_codec\n"
                    "@register_codec\nclass J(Codec):\n    name = 'jpeg'\n"
                    "    def version(self): return '1'\n    def encode(self, i, r): return b''\n"
                    "    def decode(self, b): return None\n", "registered twice"),
    "not_a_codec": ("from lcbench import register_codec\n@register_codec\nclass X:\n    name = 'x'\n",
                    "not a subclass of lcbench.Codec"),
    "bad_name": ("from lcbench import Codec, register_codec\n"
                 "@register_codec\nclass J(Codec):\n    name = 'a:b'\n", "must be a non-empty string"),
    "exits": ("import sys\nsys.exit(0)\n", "SystemExit"),
}


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_bad_plugins_are_errors_naming_the_file(tmp_path, name):
    source, message = PLUGINS[name]
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    with pytest.raises(ImportError, match=message) as info:
        load_plugin(path)
    assert str(path) in str(info.value)
    assert "webp" in lcbench.registry.codecs  # the built-ins are still all there


def test_cuda_without_a_gpu_names_the_option(image_folder, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["run", "--codecs", "jpeg", "--device", "cuda", "--dataset", str(image_folder),
                 "--out", str(tmp_path / "r")]) == 2
    assert "--device cuda: no CUDA GPU" in capsys.readouterr().err


# --- image policy ---------------------------------------------------------------------------

def _pnm(magic: str, maxval: int, arr: np.ndarray) -> bytes:
    h, w = arr.shape[:2]
    return f"{magic}\n{w} {h}\n{maxval}\n".encode() + arr.astype(">u2" if maxval > 255 else "u1").tobytes()


def test_dark_16bit_pgm_is_scaled_as_16bit(tmp_path):
    # every value <= 255, but the file says 16 bits: 200 means 200/65535 of white, i.e. 1
    values = np.array([[0, 100, 200], [255, 128, 129]], np.uint16)
    (tmp_path / "dark.pgm").write_bytes(_pnm("P5", 65535, values))
    src = load_image(tmp_path / "dark.pgm")
    assert src.pixels[..., 0].tolist() == np.rint(values * 255 / 65535).astype(int).tolist()
    assert "65535" in src.notes[0]


def test_palette_cmyk_and_16bit_ppm_conversions_are_noted(tmp_path):
    img = photo("astronaut", (32, 32))
    Image.fromarray(img).convert("P").save(tmp_path / "p.png")
    Image.fromarray(img).convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "deep.ppm").write_bytes(_pnm("P6", 65535, img.astype(np.uint32) * 257))
    assert any("palette" in n for n in load_image(tmp_path / "p.png").notes)
    assert any("CMYK" in n for n in load_image(tmp_path / "cmyk.jpg").notes)
    deep = load_image(tmp_path / "deep.ppm")
    assert np.array_equal(deep.pixels, img) and any("8 bits" in n for n in deep.notes)


# --- interruption ---------------------------------------------------------------------------

SLOW_PLUGIN = """
import time
from lcbench import Codec, register_codec

@register_codec
class Slow(Codec):
    name = "slow"
    default_rates = (1, 2, 3, 4, 5, 6)
    def version(self): return "1"
    def encode(self, image, rate):
        time.sleep(0.4)
        return image.tobytes() + image.shape[0].to_bytes(4, "big")
    def decode(self, data):
        import numpy as np
        h = int.from_bytes(data[-4:], "big")
        return np.frombuffer(data[:-4], np.uint8).reshape(h, -1, 3).copy()
"""


def test_sigterm_stops_workers_and_writes_results(image_folder, tmp_path):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lcbench", "run", "--plugin", str(plugin), "--codecs", "slow", "--dataset",
           str(image_folder), "--out", str(out), "--jobs", "2", "--no-progress", "--no-cache"]
    records = lambda: sum(len(p.read_text().splitlines()) for p in (out / "records").glob("*.jsonl"))  # noqa: E731
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "records").is_dir() and records() > 0):
        time.sleep(0.1)  # terminate once the first job is stored and the others are in flight
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err
    n = records()
    assert 0 < n < 18 and (out / "results.csv").is_file()
    time.sleep(1.5)
    assert records() == n  # no orphaned worker goes on computing
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(out / "results.csv")) == 18


def test_images_option_repeated_selects_the_union(image_folder, tmp_path):
    # --images given twice used to keep only the last glob
    assert main(["run", "--codecs", "png", "--dataset", str(image_folder), "--images", "a", "--images", "c*",
                 "--out", str(tmp_path / "r"), "--no-progress", "--jobs", "1"]) == 0
    assert sorted(pd.read_csv(tmp_path / "r" / "results.csv").image) == ["a", "c"]


def test_run_directory_resumes_from_another_working_directory(image_folder, tmp_path, monkeypatch):
    # run.json used to keep the dataset root as typed; from elsewhere it looked like another dataset
    monkeypatch.chdir(image_folder.parent)
    lcbench.run(["png"], image_folder.name, out=tmp_path / "r", jobs=1)
    monkeypatch.chdir(tmp_path.parent)
    from lcbench.runner import RunOptions, execute

    outcome = execute(RunOptions(codecs=["png"], dataset=str(image_folder), out=tmp_path / "r", jobs=1, progress=False))
    assert outcome.skipped == 3


def test_symlinked_dataset_folder_keeps_the_links_name(image_folder, tmp_path):
    os.symlink(image_folder, tmp_path / "myset")
    assert folder_dataset(tmp_path / "myset").name == "myset"


def test_codec_calling_sys_exit_fails_its_jobs_not_the_run(image_folder, tmp_path):
    plugin = tmp_path / "exits.py"
    plugin.write_text("import sys\nfrom lcbench import Codec, register_codec\n\n@register_codec\nclass Exits(Codec):\n"
                      "    name = 'exits'\n    default_rates = (1,)\n    def version(self): return '1'\n"
                      "    def encode(self, image, rate): sys.exit(3)\n    def decode(self, data): return None\n")
    for jobs in ("1", "2"):
        out = tmp_path / f"r{jobs}"
        done = subprocess.run([sys.executable, "-m", "lcbench", "run", "--plugin", str(plugin), "--codecs", "exits",
                               "--dataset", str(image_folder), "--out", str(out), "--jobs", jobs, "--no-progress"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr  # failed jobs, listed
        assert "SystemExit" in done.stderr
        assert len(pd.read_csv(out / "results.csv")) == 3


@pytest.mark.parametrize("comment", [b"", b"# " + b"x" * 600 + b"\n"])
def test_ten_bit_pgm_is_rounded_once_from_its_maxval(tmp_path, comment):
    # Pillow rescales maxval-1023 files to 16 bits first; rounding twice is off by one for some values
    values = np.arange(1024, dtype=np.uint32).reshape(32, 32)
    data = _pnm("P5", 1023, values)
    (tmp_path / "ten.pgm").write_bytes(data[:3] + comment + data[3:])  # after "P5\n": a long comment
    src = load_image(tmp_path / "ten.pgm")
    assert np.array_equal(src.pixels[..., 0], np.rint(values * 255 / 1023).astype(np.uint8))
    assert "1023-maxval" in src.notes[0]


def test_interrupt_inside_a_learned_codec_stops_the_run(image_folder, tmp_path):
    # Ctrl-C in compiled code surfaces as SystemError chained to KeyboardInterrupt; on the device
    # path (learned codecs) it was recorded as every job's error and the run went on
    from lcbench import TorchCodec, register_codec
    from lcbench.registry import codecs

    if "interrupted_dev" not in codecs:
        @register_codec
        class InterruptedDev(TorchCodec):
            name = "interrupted_dev"
            default_rates = (1,)

            def version(self):
                return "1"

            def encode(self, image, rate):
                try:
                    raise KeyboardInterrupt
                except KeyboardInterrupt as k:
                    raise SystemError("CPUDispatcher returned a result with an exception set") from k

            def decode(self, data):
                return None

    with pytest.raises(KeyboardInterrupt):
        lcbench.run(["interrupted_dev"], image_folder, out=tmp_path / "r", jobs=1, device="cpu")
    from lcbench.store import read_records

    assert not any(r.get("error") for r in read_records(tmp_path / "r"))


def test_run_directory_of_the_previous_version_made_with_dataset_dot_resumes(image_folder, tmp_path, monkeypatch):
    # the previous version stored name "" and root "." for `--dataset .`
    out = tmp_path / "r"
    lcbench.run(["png"], image_folder, out=out, jobs=1)
    meta = json.loads((out / "run.json").read_text())
    meta["dataset"].update(name="", root=".")
    (out / "run.json").write_text(json.dumps(meta))
    monkeypatch.chdir(image_folder)
    from lcbench.runner import RunOptions, execute

    assert execute(RunOptions(codecs=["png"], dataset=".", out=out, jobs=1, progress=False)).skipped == 3
    # ...but another folder with other images is another dataset, whatever the old name says
    meta = json.loads((out / "run.json").read_text())
    meta["dataset"].update(name="", root=".")
    (out / "run.json").write_text(json.dumps(meta))
    other = tmp_path / "other"
    _save(other / "x.png", photo("coffee", (40, 40)))
    monkeypatch.chdir(other)
    with pytest.raises(ValueError, match="use another --out"):
        execute(RunOptions(codecs=["png"], dataset=".", out=out, jobs=1, progress=False))


def test_images_named_like_missing_values_are_reported(tmp_path):
    # pandas reads NA, null, None ... as missing: the run's own results.csv became unreadable
    data = tmp_path / "data"
    for i, name in enumerate(("NA", "null", "None", "b")):
        _save(data / f"{name}.png", photo("astronaut", (40 + i, 40)))
    lcbench.run(["png"], data, out=tmp_path / "r", jobs=1)
    from lcbench.results import read_results

    assert sorted(read_results(tmp_path / "r").image) == ["NA", "None", "b", "null"]
    assert main(["report", str(tmp_path / "r"), "--no-figures", "--no-html"]) == 0


def test_interrupt_is_reraised_as_itself():
    # SIGTERM's KeyboardInterrupt subclass must survive the SystemError chain (exit 143, "terminated")
    from lcbench.cli import _Terminated
    from lcbench.worker import _reraise_interrupt

    try:
        try:
            raise _Terminated()
        except KeyboardInterrupt as k:
            raise SystemError("returned a result with an exception set") from k
    except SystemError as exc:
        with pytest.raises(_Terminated):
            _reraise_interrupt(exc)
    _reraise_interrupt(ValueError("an ordinary error"))  # not an interrupt: nothing raised


def test_unusable_result_cache_does_not_decode_images_for_keys(image_folder, tmp_path, monkeypatch):
    from lcbench.result_cache import ResultCache

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "results.sqlite").write_text("junk\n")
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))

    calls = []
    monkeypatch.setattr(ResultCache, "pixel_hash", lambda self, path: calls.append(path) or "x")
    from lcbench import runner

    cache, keys = runner._open_cache(runner.plan_jobs([("png", create_codec("png"))],
                                                      folder_dataset(image_folder)))
    assert not cache.enabled and keys == {} and calls == []  # no image decoded for keys nothing can serve
    df = lcbench.run(["png"], image_folder, out=tmp_path / "r", jobs=1)
    assert (df.error == "").all() and len(df) == 3


def test_bitstream_check_finds_rate_matched_baseline_bitstreams(image_folder, tmp_path):
    # rate-matched outputs are saved as image@bpp<target>; the compatibility check looked for image@<target>
    from lcbench.compat import check_bitstreams
    from lcbench.results import read_results

    out = tmp_path / "base"
    lcbench.run(["jpeg"], image_folder, out=out, target_bpp=[0.5, 1.0], jobs=1, save_bitstreams=True)
    report = check_bitstreams(out, read_results(out), "jpeg", "jpeg",
                              {p.stem: p for p in image_folder.glob("*.png")})
    assert report.count("same") == 6 and report.count("missing") == 0


PLUGIN_V = '''
import io
import numpy as np
from PIL import Image
from lcbench import Codec, register_codec

@register_codec
class {cls}(Codec):
    name = "{name}"
    default_rates = (50.0,)
    def version(self): return "1"  # never changed by its author
    def encode(self, image, rate):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=int(rate), subsampling={sub})
        return buf.getvalue()
    def decode(self, data): return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class {cls}Static({cls}):
    name = "{name}_static"
    @staticmethod
    def version(): return "s1"

register_codec({cls}Static)


class {cls}Super({cls}):
    name = "{name}_super"
    def version(self): return super().version() + "b"

register_codec({cls}Super)
'''


def test_editing_a_plugin_without_changing_its_version_is_not_served_from_the_cache(image_folder, tmp_path):
    """The result cache (and a resumed run) keyed plugin results by version() alone: edited plugin
    code with the same version string gave the old code's numbers, even in a fresh --out."""
    from lcbench.registry import codecs

    first, second = tmp_path / "one" / "plug.py", tmp_path / "two" / "plug.py"
    for path, sub in ((first, 2), (second, 0)):
        path.parent.mkdir()
        path.write_text(PLUGIN_V.format(cls=f"Plug{sub}", name=f"plugv{sub}", sub=sub))
        load_plugin(path)
    v_first, v_second = create_codec("plugv2").version(), create_codec("plugv0").version()
    assert v_first.startswith("1 plugin-sha256:") and v_second.startswith("1 plugin-sha256:")
    assert v_first != v_second  # same version() text, other source
    assert create_codec("plugv2_static").version().startswith("s1 plugin-sha256:")
    assert create_codec("plugv2_static").version().count("plugin-sha256") == 1
    assert create_codec("plugv2_super").version() == v_first.replace(" plugin", "b plugin")  # tagged once
    assert "jpeg" in codecs and "plugin" not in create_codec("jpeg").version()


CRASH_PLUGIN = '''
import io, os
import numpy as np
from PIL import Image
from lcbench import Codec, register_codec

@register_codec
class CrashJpeg(Codec):
    """JPEG, except that it kills its process on one image at quality 40 (like a segfault)."""
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
'''


def test_a_codec_that_kills_its_worker_process_fails_only_its_own_jobs(image_folder, tmp_path, capsys):
    """A crash (segfault, os._exit) in one task broke the whole loky pool: the run stopped with
    exit 2 and no results.csv, and every rerun stopped the same way."""
    plugin = tmp_path / "crashplug.py"
    plugin.write_text(CRASH_PLUGIN)
    out = tmp_path / "run"
    code = main(["run", "--plugin", str(plugin), "--codecs", "crashjpeg,jpeg", "-q", "20,40,60", "--dataset",
                 str(image_folder), "--out", str(out), "--jobs", "2", "--no-progress", "--no-cache"])
    assert code == 1, capsys.readouterr().err
    df = pd.read_csv(out / "results.csv").set_index(["codec", "image", "quality"])
    df["error"] = df["error"].fillna("")
    assert len(df) == 18
    failed = df[df.error != ""]
    assert sorted(failed.index) == [("crashjpeg", "b", 40.0), ("crashjpeg", "b", 60.0)]  # b is 200 px high
    assert failed.error.str.contains(r"worker process died .* \(worker exit codes \{EXIT\(3\)\}\)").all()
    jpeg = create_codec("jpeg")
    img = np.asarray(Image.open(image_folder / "b.png").convert("RGB"))
    assert df.loc[("crashjpeg", "b", 20.0), "bytes"] == len(jpeg.encode(img, 20))  # stored before the crash
    assert (df.drop(index=failed.index).bytes > 0).all()
