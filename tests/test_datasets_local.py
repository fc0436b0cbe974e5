"""Named datasets without a network: manifests, LCBENCH_DATA mirrors, cache, verification, CLI."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcbench.cli import main
from lcbench.dataset import DatasetError, resolve_dataset
from lcbench.manifest import (ManifestError, get_manifest, manifest_names, parse_manifest, register_manifest,
                              unregister_manifest)
from lcbench.named_datasets import verify

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
NINE = ["bsd100", "clic2020-mobile-valid", "clic2020-professional-valid", "div2k-valid", "kodak", "set14", "set5",
        "tecnick", "urban100"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LCBENCH_DATA", raising=False)
    return tmp_path / "cache"


def _shared(name: str) -> Path:
    d = SHARED / name
    if not d.is_dir():
        pytest.skip(f"shared copy {d} not present")
    return d


def _raw_hash(path: Path) -> str:
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()


@pytest.fixture
def testset(tmp_path: Path):
    """A generated set of 4 images in a mirror folder, with a manifest registered for it."""
    rng = np.random.default_rng(7)
    arrays = {f"im{i}": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(4)}
    mirror = tmp_path / "mirror"
    (mirror / "testset").mkdir(parents=True)
    entries = []
    for stem, arr in arrays.items():
        Image.fromarray(arr).save(mirror / "testset" / f"{stem}.bmp")  # uncompressed: a flipped byte keeps the size
        entries.append({"path": f"{stem}.bmp", "width": 32, "height": 24, "mode": "RGB",
                        "pixels_sha256": hashlib.sha256(arr.tobytes()).hexdigest()})
    m = register_manifest({"name": "testset", "title": "t", "image_count": 4, "images": entries,
                           "sources": [{"url": "http://127.0.0.1:9/unreachable.tar", "kind": "tar"}]}, replace=True)
    yield m, mirror, arrays
    unregister_manifest("testset")


# ------------------------------------------------------------------ manifests

def test_nine_builtin_manifests() -> None:
    assert set(NINE) <= set(manifest_names())
    for name in NINE:
        m = get_manifest(name)
        assert m.sources and all(s.url.startswith(("http://", "https://")) for s in m.sources)
        assert m.licence and m.homepage and m.image_count > 0
        if name in ("kodak", "set5", "set14"):
            assert m.has_pixel_checksums and len(m.images) == m.image_count
        else:  # honest: no invented checksums
            assert not m.has_pixel_checksums and "not yet recorded" in m.checksums_note
    assert get_manifest("kodak").image_count == 24 and get_manifest("div2k-valid").images[0].path == "0801.png"


def test_manifests_agree_with_shared_manifest_tsv() -> None:
    tsv = SHARED / "MANIFEST.tsv"
    if not tsv.is_file():
        pytest.skip("shared MANIFEST.tsv not present")
    rows = {r["path"]: r for r in csv.DictReader(tsv.open(), delimiter="\t")}
    for name in ("kodak", "set5", "set14"):
        for e in get_manifest(name).images:
            r = rows[f"{name}/{e.path}"]
            assert (e.pixels_sha256, e.file_sha256, e.bytes, e.mode) == (r["pixels_sha256"], r["file_sha256"],
                                                                         int(r["bytes"]), r["mode"])
            assert f"{e.width}x{e.height}" == r["width_x_height"]


@pytest.mark.parametrize("patch, msg", [
    ({"images": [{"path": "/abs.png"}]}, "must be relative"),
    ({"images": [{"path": "../up.png"}]}, "must be relative"),
    ({"images": [{"path": "a.png", "pixels_sha256": "xyz"}]}, "64 hex digits"),
    ({"image_count": 2, "images": [{"path": "a.png"}]}, "image_count is 2 but 1 images"),
    ({"sources": []}, "at least one download"),
    ({"sources": [{"url": "http://x/a", "kind": "rar"}]}, "kind 'rar'"),
    ({"name": "Bad Name"}, "lower-case"),
    ({"image_count": "24"}, "must be int"),
    # some checksums only: the whole set became count-only and every recorded checksum was ignored
    ({"image_count": 2, "images": [{"path": "a.png", "pixels_sha256": "a" * 64}, {"path": "b.png"}]},
     r"pixels_sha256 is recorded for 1 of 2 images \(not for b.png\)"),
])
def test_manifest_validation_names_the_field(patch: dict, msg: str) -> None:
    data = {"name": "ok", "title": "t", "image_count": 1, "sources": [{"url": "http://x/a.zip", "kind": "zip"}]}
    data.update(patch)
    with pytest.raises(ManifestError, match=msg):
        parse_manifest(data, origin="my.json")


def test_register_refuses_to_shadow_a_builtin() -> None:
    with pytest.raises(ManifestError, match="already defined by lcbench_datasets/kodak.json"):
        register_manifest({"name": "kodak", "image_count": 1, "sources": [{"url": "http://x/y"}]})


def test_unknown_name_suggests() -> None:
    with pytest.raises(DatasetError, match="Did you mean 'kodak'"):
        resolve_dataset("kodk")


# ------------------------------------------------------------------ shared copies via LCBENCH_DATA

def test_kodak_from_lcbench_data(monkeypatch: pytest.MonkeyPatch, isolated: Path, tmp_path: Path) -> None:
    kodak = _shared("kodak")
    # Several mirrors; the first one lacks kodak, so the second is used.
    monkeypatch.setenv("LCBENCH_DATA", os.pathsep.join([str(tmp_path / "empty"), str(kodak.parent)]))
    ds = resolve_dataset("kodak")
    assert [im.id for im in ds.images] == [f"kodim{i:02d}" for i in range(1, 25)]
    assert ds.root == kodak and all(im.path.parent == kodak for im in ds.images)
    # The hash the runner will check is the hash of the file's pixels (computed here independently).
    assert ds.images[0].pixels_sha256 == _raw_hash(kodak / "kodim01.png")
    records = json.loads((isolated / "datasets/.verified/kodak.json").read_text())["files"]
    assert len(records) == 24 and all(r["size"] > 0 and r["mtime_ns"] > 0 for r in records.values())


def test_set14_greyscale_image_gets_the_loaded_rgb_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    set14 = _shared("set14")
    monkeypatch.setenv("LCBENCH_DATA", str(set14.parent))
    from lcbench.images import load_image, pixel_hash

    refs = {im.id: im for im in resolve_dataset("set14").images}
    for im in refs.values():  # what the runner compares: the loaded HxWx3 pixels
        assert im.pixels_sha256 == pixel_hash(load_image(im.path).pixels)
    assert Image.open(refs["bridge"].path).mode == "L"


def test_flipped_pixel_in_cached_copy_is_caught(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    cached = isolated / "datasets" / "set5"
    shutil.copytree(_shared("set5"), cached)
    assert main(["datasets", "verify", "set5"]) == 0
    arr = np.asarray(Image.open(cached / "bird.png")).copy()
    arr[100, 100, 0] ^= 1  # one bit of one pixel
    Image.fromarray(arr).save(cached / "bird.png")
    capsys.readouterr()
    assert main(["datasets", "verify", "set5"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL ") == 1 and "FAIL bird.png: pixels differ" in out
    assert _raw_hash(cached / "bird.png") in out
    with pytest.raises(DatasetError, match=r"bird\.png: pixels differ.*datasets fetch set5 --force"):
        resolve_dataset("set5")


def test_same_pixel_bytes_in_another_shape_are_caught(isolated: Path, capsys: pytest.CaptureFixture) -> None:
    """The pixel hash covers the bytes, not the shape: woman.png's bytes reshaped (a scrambled image)
    passed verify as "pixels match", and a run benchmarked it."""
    cached = isolated / "datasets" / "set5"
    shutil.copytree(_shared("set5"), cached)
    arr = np.asarray(Image.open(cached / "woman.png").convert("RGB"))
    h, w = arr.shape[:2]
    Image.fromarray(arr.reshape(w, h, 3)).save(cached / "woman.png")
    assert main(["datasets", "verify", "set5"]) == 1
    out = capsys.readouterr().out
    assert "woman.png: the pixel bytes match but the image shape does not" in out and f"expected {w}x{h}" in out
    for _ in range(2):  # decoded, then from the quick check's record: never trusted
        with pytest.raises(DatasetError, match=rf"woman\.png: .*{h}x{w}"):  # decoded {h} wide
            resolve_dataset("set5")


def test_quick_check_trusts_size_and_mtime_full_verify_does_not(testset, monkeypatch: pytest.MonkeyPatch) -> None:
    m, mirror, arrays = testset
    monkeypatch.setenv("LCBENCH_DATA", str(mirror))
    assert len(resolve_dataset("testset")) == 4  # decodes each image once and records the hashes
    f = mirror / "testset" / "im2.bmp"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # one byte of pixel data; BMP is uncompressed, so the size is unchanged
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Same size and mtime: the quick check (every run) trusts its record - the documented trade-off...
    assert len(resolve_dataset("testset")) == 4
    # ...while a full verify decodes again and catches it.
    report = verify("testset")
    assert [p.split(":")[0] for p in report.problems] == ["im2.bmp"]
    # Once the mtime moves, the quick check re-decodes too.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DatasetError, match=r"im2\.bmp: pixels differ"):
        resolve_dataset("testset")


def test_mirror_with_other_encoding_verifies_by_pixels(testset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, _, arrays = testset
    other = tmp_path / "other" / "testset"
    other.mkdir(parents=True)
    for stem, arr in arrays.items():  # same pixels, stored as TIFF instead of the manifest's BMP
        Image.fromarray(arr).save(other / f"{stem}.tif")
    monkeypatch.setenv("LCBENCH_DATA", str(other.parent))
    ds = resolve_dataset("testset")
    assert [im.path.suffix for im in ds.images] == [".tif"] * 4
    assert verify("testset").ok


def test_cache_is_tried_before_lcbench_data(testset, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, mirror, _ = testset
    monkeypatch.setenv("LCBENCH_DATA", str(mirror))
    shutil.copytree(mirror / "testset", isolated / "datasets" / "testset")
    assert resolve_dataset("testset").root == isolated / "datasets" / "testset"


def test_missing_image_and_manifest_file_as_dataset(testset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, mirror, _ = testset
    monkeypatch.setenv("LCBENCH_DATA", str(mirror))
    (mirror / "testset" / "im0.bmp").unlink()
    with pytest.raises(DatasetError, match=r"im0\.bmp: missing"):
        resolve_dataset("testset")
    # A manifest file path works as --dataset (here one listing only the three remaining images).
    from lcbench.manifest import manifest_to_dict

    data = manifest_to_dict(m)
    # its own name: a manifest file may not define a known set's name with other content
    data.update(name="testset-three", image_count=3, images=data["images"][1:])
    path = tmp_path / "three.json"
    path.write_text(json.dumps(data))
    (mirror / "testset-three").symlink_to(mirror / "testset", target_is_directory=True)
    assert [im.id for im in resolve_dataset(str(path)).images] == ["im1", "im2", "im3"]


def test_not_present_and_download_off() -> None:
    with pytest.raises(DatasetError, match="not on this machine.*LCBENCH_DATA=/data/mirrors with /data/mirrors/kodak/kodim01.png"):
        resolve_dataset("kodak", download=False)


# ------------------------------------------------------------------ CLI

def test_cli_list_shows_nine(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    if SHARED.is_dir():
        monkeypatch.setenv("LCBENCH_DATA", str(SHARED))
    assert main(["datasets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [ln.split()[0] for ln in lines[1:10]]
    assert listed == sorted(NINE)
    kodak = next(ln for ln in lines if ln.startswith("kodak "))
    assert kodak.split()[1] == "24"
    if (SHARED / "kodak").is_dir():
        assert f"LCBENCH_DATA: {SHARED / 'kodak'}" in kodak
    assert main(["datasets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= set(NINE)


def test_cli_info_verify_and_record(testset, tmp_path: Path, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["datasets", "info", "tecnick"]) == 0
    out = capsys.readouterr().out
    assert "RGB_OR_1200x1200" in out and "none recorded" in out
    assert main(["datasets", "info", "nosuchset"]) == 2
    assert main(["datasets", "verify", "testset"]) == 2  # no copy anywhere: bad input, nothing to check
    assert "no local copy of dataset 'testset' to verify" in capsys.readouterr().err
    m, mirror, arrays = testset
    assert main(["datasets", "verify", "testset", "--path", str(mirror / "testset")]) == 0
    assert "4 images checked (pixel checksums): OK" in capsys.readouterr().out
    # --record prints entries whose pixel hashes equal the independently computed ones
    assert main(["datasets", "info", "testset", "--record", str(mirror / "testset")]) == 0
    entries = json.loads(capsys.readouterr().out)["images"]
    assert [e["pixels_sha256"] for e in entries] == [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays.values()]


@pytest.mark.skipif(not (SHARED / "kodak").is_dir(), reason="shared Kodak copy not present")
def test_cli_verify_kodak_from_lcbench_data(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LCBENCH_DATA", str(SHARED))
    assert main(["datasets", "verify", "kodak"]) == 0
    assert "24 images checked (pixel checksums): OK" in capsys.readouterr().out


def test_cli_verify_without_a_local_copy_says_where_it_looked(testset, isolated: Path, capsys) -> None:
    assert main(["datasets", "verify", "testset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lcbench datasets verify: error: no local copy of dataset 'testset' to verify "
                          f"(looked in cache {isolated / 'datasets' / 'testset'}; LCBENCH_DATA mirrors: none")
    assert "`lcbench datasets fetch testset`" in err and "`lcbench datasets verify testset --path DIR`" in err


def test_cli_verify_takes_the_folder_of_a_local_copy(testset, tmp_path: Path, capsys) -> None:
    m, mirror, arrays = testset
    assert main(["datasets", "verify", str(mirror / "testset")]) == 0
    assert f"testset at {mirror / 'testset'}: 4 images checked (pixel checksums): OK" in capsys.readouterr().out
    # a folder not named after a set: say what verify expects
    other = tmp_path / "photos"
    other.mkdir()
    assert main(["datasets", "verify", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other} is a folder; verify takes the NAME of a set" in err
    assert f"`lcbench datasets verify NAME --path {other}`" in err


@pytest.mark.skipif(not (SHARED / "set5").is_dir(), reason="shared Set5 copy not present")
def test_cli_verify_shared_set5_folder(capsys) -> None:
    assert main(["datasets", "verify", str(SHARED / "set5")]) == 0
    assert "5 images checked (pixel checksums): OK" in capsys.readouterr().out


def test_cli_verify_bad_path_and_missing_manifest_are_bad_input(testset, tmp_path: Path, capsys) -> None:
    assert main(["datasets", "verify", "testset", "--path", str(tmp_path / "nope")]) == 2
    assert f"--path {tmp_path / 'nope'}: not a folder" in capsys.readouterr().err
    assert main(["datasets", "verify", str(tmp_path / "nope.json")]) == 2
    assert f"no manifest file {tmp_path / 'nope.json'}" in capsys.readouterr().err
    assert main(["datasets", "verify", "kodk"]) == 2
    err = capsys.readouterr().err
    assert "'kodk' is not a known dataset name. Did you mean 'kodak'?" in err and "--dataset" not in err


def test_cli_verify_error_message_is_never_empty(testset, monkeypatch, capsys) -> None:
    import lcbench.named_datasets as nd

    def broken(*a, **k):
        raise DatasetError("")

    monkeypatch.setattr(nd, "verify", broken)
    assert main(["datasets", "verify", "testset"]) == 1
    assert capsys.readouterr().err.strip() == "lcbench datasets verify: error: DatasetError"


def test_named_set_and_its_folder_copy_share_cached_results(testset, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # both key the cache by "HxW:pixel sha" (the folder's hash once included the shape and the
    # manifest's did not, so a folder copy of a named set recomputed everything)
    import lcbench
    from lcbench.runner import RunOptions, execute

    m, mirror, arrays = testset
    monkeypatch.setenv("LCBENCH_DATA", str(mirror))
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    from lcbench.result_cache import ResultCache

    def no_decoding(self, path):
        raise AssertionError("a named set's key comes from its manifest, not from decoding the file")

    with monkeypatch.context() as m:  # any decode for a key would leave these jobs without one
        m.setattr(ResultCache, "pixel_hash", no_decoding)
        lcbench.run(["png"], "testset", out=tmp_path / "named", jobs=1)
    outcome = execute(RunOptions(codecs=["png"], dataset=str(mirror / "testset"), out=tmp_path / "folder", jobs=1,
                                 progress=False))
    assert outcome.from_cache == 4


def test_record_entries_of_a_folder_that_is_not_the_set_warn(tmp_path, capsys):
    """`datasets info bsd100 --record DIR` on another folder printed entries for the wrong images
    without a word; they would go into bsd100's manifest."""
    from PIL import Image

    from lcbench.cli import main
    from support import photo

    Image.fromarray(photo("astronaut", (24, 24))).save(tmp_path / "x.png")
    assert main(["datasets", "info", "set5", "--record", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"][0]["path"] == "x.png"
    assert "has 1 image(s); set5's manifest lists 5 (5 of them not in" in captured.err


def test_record_entries_name_an_unreadable_file(tmp_path, capsys):
    from PIL import Image

    from support import photo

    Image.fromarray(photo("astronaut", (24, 24))).save(tmp_path / "x.png")
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "x.png").write_bytes(data[: len(data) // 2])
    assert main(["datasets", "info", "set5", "--record", str(tmp_path)]) == 2
    assert f"{tmp_path / 'x.png'}: cannot be read" in capsys.readouterr().err


def test_count_only_set_says_which_copy_and_what_was_checked(isolated: Path, tmp_path: Path, monkeypatch, capsys):
    """A set whose manifest has no pixel checksums was taken from the cache path without a word,
    shadowing a $LCBENCH_DATA copy; and a broken cache copy's message offered only a download."""
    rng = np.random.default_rng(3)
    register_manifest({"name": "countset", "title": "t", "image_count": 2,
                       "sources": [{"url": "http://127.0.0.1:9/x.tar", "kind": "tar"}]}, replace=True)
    try:
        mirror = tmp_path / "mirror"
        for root in (isolated / "datasets" / "countset", mirror / "countset"):
            root.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
        monkeypatch.setenv("LCBENCH_DATA", str(mirror))
        assert len(resolve_dataset("countset")) == 2
        err = capsys.readouterr().err
        assert f"using the copy at {isolated / 'datasets' / 'countset'} (cache)" in err
        assert "only the image count and readability were checked" in err and str(mirror / "countset") in err
        (isolated / "datasets" / "countset" / "1.png").unlink()
        with pytest.raises(DatasetError, match=rf"or remove .* to use the copy at {mirror / 'countset'}"):
            resolve_dataset("countset")
    finally:
        unregister_manifest("countset")


def test_sample_missing_an_image_is_an_error_not_three_images(monkeypatch, tmp_path):
    """A scikit-image without one of the four photos gave a 3-image 'sample' without a word."""
    import shutil

    import skimage

    from lcbench.dataset import SAMPLE_IMAGES, sample_dataset

    fake = tmp_path / "skimage"
    (fake / "data").mkdir(parents=True)
    real = Path(skimage.__file__).parent / "data"
    for name in SAMPLE_IMAGES[:3]:
        shutil.copy(real / name, fake / "data" / name)
    monkeypatch.setattr(skimage, "__file__", str(fake / "__init__.py"))
    with pytest.raises(DatasetError, match=rf"{SAMPLE_IMAGES[3]} not found in {fake / 'data'}"):
        sample_dataset()
