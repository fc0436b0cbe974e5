"""Downloading a named dataset from a real HTTP server on 127.0.0.1.

Covers: fetch of an archive and of single files, resume after an interrupted transfer (in the
same call and across calls), checksum failures (file and pixels), a path-traversal archive,
atomic completion (nothing half-done is ever found as a dataset) and the offline error message.
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcbench.archive import UnsafeArchiveError
from lcbench.dataset import DatasetError, resolve_dataset
from lcbench.download import DownloadError, download
from lcbench.manifest import register_manifest, unregister_manifest
from lcbench.named_datasets import cache_path, fetch, resolve_named


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut[path] = n`` drops the connection
    after n bytes of the next full response to that path (once)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.send_validator = True  # an ETag, honoured in If-Range, as real file servers do
        self.range_shift = 0  # answer a Range request with a range starting this many bytes earlier
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if_range = self.headers.get("If-Range")
                if rng and not server.ignore_range and (if_range is None or if_range == etag):
                    start = max(0, int(rng.split("=")[1].split("-")[0]) - server.range_shift)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if server.send_validator:
                    self.send_header("ETag", etag)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.cut.pop(self.path, None)
                if n is not None:  # promise the whole body, send part of it, hang up
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    server.bytes_sent += n
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                server.bytes_sent += len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LCBENCH_DATA", raising=False)
    return tmp_path / "cache"


def _images(n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random RGB images (and one greyscale), kept as arrays for independent hashes."""
    rng = np.random.default_rng(seed)
    out = {f"img{i}.png": rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(n)}
    out["grey.png"] = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _entries(arrays: dict[str, np.ndarray]) -> list[dict]:
    # Expected hashes come from the arrays we generated, not from decoding the files.
    return [{"path": name, "pixels_sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
             "width": arr.shape[1], "height": arr.shape[0], "mode": "RGB" if arr.ndim == 3 else "L"}
            for name, arr in arrays.items()]


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def manifest():
    """Register a test manifest; unregistered afterwards."""
    names = []

    def make(**fields) -> str:
        data = {"format_version": 1, "name": "testset", "title": "test set", **fields}
        m = register_manifest(data, replace=True)
        names.append(m.name)
        return m.name

    yield make
    for n in names:
        unregister_manifest(n)


def _no_leftovers(cache: Path) -> None:
    """No staging folder and no dataset folder: nothing that could pass as complete."""
    ds = cache / "datasets"
    assert not (ds / "testset").exists()
    assert not [p for p in ds.glob(".partial-*")] if ds.exists() else True


def test_fetch_archive_then_served_from_cache(server: Server, manifest, isolated: Path) -> None:
    arrays = _images()
    archive = _tar_bytes({f"pkg/HR/{n}": _png(a) for n, a in arrays.items()} | {"pkg/LR/x.png": _png(arrays["img0.png"][::2])})
    server.files["/set.tar.gz"] = archive
    name = manifest(image_count=4, images=_entries(arrays),
                    sources=[{"url": server.url + "/set.tar.gz", "kind": "tar", "subdir": "pkg/HR",
                              "sha256": hashlib.sha256(archive).hexdigest(), "size": len(archive)}])
    ds = resolve_dataset(name)
    assert [im.id for im in ds.images] == ["img0", "img1", "img2", "grey"]
    assert ds.root == cache_path(name) and (ds.root / ".lcbench-dataset.json").is_file()
    assert not (ds.root / "x.png").exists()  # only the chosen subdir was installed
    for im, (fname, arr) in zip(ds.images, arrays.items()):
        assert np.array_equal(np.asarray(Image.open(im.path)), arr)
    # RGB images carry the hash the runner checks; a greyscale file's raw hash is not that, so None.
    assert ds.images[0].pixels_sha256 == hashlib.sha256(arrays["img0.png"].tobytes()).hexdigest()
    assert ds.images[3].pixels_sha256 is None
    assert not list((isolated / "downloads").iterdir())  # archive removed once installed
    n_requests = len(server.requests)
    again = resolve_dataset(name)
    assert [im.path for im in again.images] == [im.path for im in ds.images]
    assert len(server.requests) == n_requests  # the second resolution never touched the network


def test_resume_after_interrupted_transfer(server: Server, manifest) -> None:
    arrays = _images(seed=1)
    archive = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    server.files["/a.tar.gz"] = archive
    cut = len(archive) // 3
    server.cut["/a.tar.gz"] = cut
    name = manifest(image_count=4, images=_entries(arrays),
                    sources=[{"url": server.url + "/a.tar.gz", "kind": "tar",
                              "sha256": hashlib.sha256(archive).hexdigest()}])
    report = fetch(name, progress=False)
    assert report.ok and report.checked == 4
    assert server.requests == [("/a.tar.gz", None), ("/a.tar.gz", f"bytes={cut}-")]
    assert server.bytes_sent == len(archive)  # nothing was downloaded twice


def test_resume_across_calls_and_restart_when_range_ignored(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    server.files["/blob"] = data
    server.cut["/blob"] = 1000
    dest = tmp_path / "dl" / "blob"
    with pytest.raises(DownloadError, match="partial download kept"):
        download(server.url + "/blob", dest, retries=0, progress=False)
    assert (tmp_path / "dl" / "blob.part").stat().st_size == 1000 and not dest.exists()
    # A later call continues the .part file...
    download(server.url + "/blob", dest, sha256=hashlib.sha256(data).hexdigest(), retries=0, progress=False)
    assert dest.read_bytes() == data and server.requests[-1] == ("/blob", "bytes=1000-")
    # ...and a server that ignores Range (200, whole body) does not corrupt the file.
    server.cut["/blob"] = 500
    server.ignore_range = True
    dest2 = tmp_path / "dl" / "blob2"
    download(server.url + "/blob", dest2, sha256=hashlib.sha256(data).hexdigest(), retries=1, backoff=0.01,
             progress=False)
    assert dest2.read_bytes() == data


def test_changed_file_on_the_server_is_downloaded_whole_not_spliced(server: Server, tmp_path: Path) -> None:
    # Without a checksum only the size could catch a splice of two versions of the file: the
    # If-Range validator makes the server send the new version whole.
    old, new = bytes(range(256)) * 40, bytes(reversed(range(256))) * 40
    server.files["/f"] = old
    server.cut["/f"] = 3000
    dest = tmp_path / "f"
    with pytest.raises(DownloadError, match="partial download kept"):
        download(server.url + "/f", dest, retries=0, progress=False)
    server.files["/f"] = new
    download(server.url + "/f", dest, size=len(new), retries=0, progress=False)
    assert dest.read_bytes() == new
    assert server.requests[-1] == ("/f", "bytes=3000-")  # asked to resume, got the whole new file
    assert not (tmp_path / "f.part.validator").exists()


def test_part_file_without_validator_is_not_resumed(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server.files["/g"] = data
    dest = tmp_path / "g"
    (tmp_path / "g.part").write_bytes(b"\x00" * 5000)  # a leftover of unknown origin
    download(server.url + "/g", dest, size=len(data), retries=0, progress=False)
    assert dest.read_bytes() == data and server.requests[-1] == ("/g", None)
    # a server without ETag/Last-Modified: an interrupted download is restarted, not spliced
    server.send_validator = False
    server.cut["/g"] = 1000
    dest2 = tmp_path / "g2"
    with pytest.raises(DownloadError) as info:
        download(server.url + "/g", dest2, retries=0, progress=False)
    assert "resumed next time" not in str(info.value)
    download(server.url + "/g", dest2, size=len(data), retries=0, progress=False)
    assert dest2.read_bytes() == data and server.requests[-1] == ("/g", None)


def test_range_answer_at_another_offset_restarts(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server.files["/h"] = data
    server.cut["/h"] = 2000
    dest = tmp_path / "h"
    with pytest.raises(DownloadError):
        download(server.url + "/h", dest, retries=0, progress=False)
    server.range_shift = 990
    download(server.url + "/h", dest, retries=2, backoff=0.01, progress=False)  # no size, no checksum
    assert dest.read_bytes() == data
    assert [r for _, r in server.requests[-2:]] == ["bytes=2000-", None]


def test_single_file_sources(server: Server, manifest) -> None:
    arrays = _images(2, seed=2)
    for n, a in arrays.items():
        server.files[f"/files/{n}"] = _png(a)
    entries = [dict(e, path=f"sub/{e['path']}") for e in _entries(arrays)]
    name = manifest(image_count=3, images=entries,
                    sources=[{"url": f"{server.url}/files/{n}", "path": f"sub/{n}"} for n in arrays])
    ds = resolve_named(name)
    assert [im.id for im in ds.images] == ["sub/img0", "sub/img1", "sub/grey"]
    assert [r[0] for r in server.requests] == ["/files/img0.png", "/files/img1.png", "/files/grey.png"]


def test_file_checksum_mismatch_fails_and_leaves_nothing(server: Server, manifest, isolated: Path) -> None:
    arrays = _images(1, seed=3)
    archive = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    server.files["/a.tar"] = archive
    name = manifest(image_count=2, images=_entries(arrays),
                    sources=[{"url": server.url + "/a.tar", "kind": "tar", "sha256": "0" * 64}])
    with pytest.raises(DownloadError, match="checksum mismatch: expected sha256 0{64}, got " + hashlib.sha256(archive).hexdigest()) as err:
        fetch(name, progress=False)
    assert server.url + "/a.tar" in str(err.value)
    assert len(server.requests) == 1  # a fresh (not resumed) download that fails its checksum is not retried
    _no_leftovers(isolated)
    assert not list((isolated / "downloads").glob("*.part"))  # a wrong file is never resumed from


def test_pixel_checksum_mismatch_fails_and_leaves_nothing(server: Server, manifest, isolated: Path) -> None:
    arrays = _images(2, seed=4)
    entries = _entries(arrays)
    flipped = arrays["img1.png"].copy()
    flipped[3, 4, 1] ^= 1  # the served image differs from the manifest by one bit of one pixel
    served = dict(arrays, **{"img1.png": flipped})
    server.files["/a.tar"] = _tar_bytes({n: _png(a) for n, a in served.items()})
    name = manifest(image_count=3, images=entries, sources=[{"url": server.url + "/a.tar", "kind": "tar"}])
    with pytest.raises(DatasetError, match=r"img1\.png: pixels differ") as err:
        resolve_dataset(name)
    assert "img0.png" not in str(err.value)
    _no_leftovers(isolated)
    assert not list((isolated / "downloads").iterdir())  # the bad archive is not reused...
    server.files["/a.tar"] = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    assert len(resolve_dataset(name)) == 3  # ...so once the source is fixed, the next attempt works


def test_path_traversal_archive_is_refused(server: Server, manifest, isolated: Path, tmp_path: Path) -> None:
    arrays = _images(1, seed=5)
    files = {n: _png(a) for n, a in arrays.items()}
    files["../../../../evil.png"] = files["img0.png"]
    server.files["/evil.tar.gz"] = _tar_bytes(files)
    name = manifest(image_count=2, images=_entries(arrays),
                    sources=[{"url": server.url + "/evil.tar.gz", "kind": "tar"}])
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./\.\./\.\./\.\./evil\.png' contains '\.\.'") as err:
        fetch(name, progress=False)
    # the downloaded file it names is deleted: the message names the URL too
    assert str(err.value).startswith(f"dataset {name!r}: the archive downloaded from {server.url}/evil.tar.gz: ")
    assert not list(tmp_path.rglob("evil.png"))
    _no_leftovers(isolated)


def test_zip_archive_with_top_folder(server: Server, manifest) -> None:
    arrays = _images(2, seed=6)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, a in arrays.items():
            zf.writestr(f"valid/{n}", _png(a))
            zf.writestr(f"__MACOSX/valid/._{n}", b"resource fork")  # as zips made on macOS have
    server.files["/v.zip"] = buf.getvalue()
    # No per-image list: count-only manifest, like the CLIC sets.
    name = manifest(image_count=3, sources=[{"url": server.url + "/v.zip", "kind": "zip", "subdir": "valid"}])
    report = fetch(name, progress=False)
    assert report.ok and not report.pixels_checked
    assert any("could not check pixels" in n for n in report.notes)
    assert sorted(im.id for im in resolve_dataset(name).images) == ["grey", "img0", "img1"]


def test_wrong_count_download_is_refused(server: Server, manifest, isolated: Path) -> None:
    arrays = _images(2, seed=7)
    server.files["/v.tar"] = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    name = manifest(image_count=5, sources=[{"url": server.url + "/v.tar", "kind": "tar"}])
    with pytest.raises(DatasetError, match="found 3 images .* expects 5"):
        fetch(name, progress=False)
    _no_leftovers(isolated)


def test_offline_error_names_url_and_local_copy_options(manifest, isolated: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here: connection refused, like a machine with no network
    url = f"http://127.0.0.1:{port}/set.tar"
    name = manifest(image_count=1, sources=[{"url": url, "kind": "tar"}])
    with pytest.raises(DownloadError) as err:
        fetch(name, progress=False, retries=0)
    msg = str(err.value)
    assert url in msg and "LCBENCH_DATA" in msg and "--dataset /path/to/testset" in msg
    _no_leftovers(isolated)
    with pytest.raises(DatasetError, match="not on this machine .* downloading is off"):
        resolve_named(name, download=False)


def test_http_404_is_not_retried(server: Server, manifest) -> None:
    name = manifest(image_count=1, sources=[{"url": server.url + "/missing.tar", "kind": "tar"}])
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(name, progress=False)
    assert len(server.requests) == 1


def test_cli_fetch_manifest_file_and_concurrent_fetches(server: Server, tmp_path: Path, isolated: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lcbench.cli import main

    arrays = _images(2, seed=8)
    archive = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    server.files["/c.tar"] = archive
    path = tmp_path / "clitest.json"
    path.write_text(json.dumps({"format_version": 1, "name": "clitest", "image_count": 3, "images": _entries(arrays),
                                "sources": [{"url": server.url + "/c.tar", "kind": "tar"}]}))
    # Two fetches at once: the lock makes the second wait and reuse the first one's copy.
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: fetch(str(path), progress=False), range(2)))
    assert all(r.ok for r in reports) and len(server.requests) == 1
    assert main(["datasets", "verify", str(path)]) == 0
    assert "3 images checked (pixel checksums): OK" in capsys.readouterr().out
    assert main(["datasets", "fetch", str(path), "--force", "--no-progress"]) == 0
    assert len(server.requests) == 2 and (isolated / "datasets" / "clitest" / "img0.png").is_file()
    server.files.pop("/c.tar")
    assert main(["datasets", "fetch", str(path), "--force", "--no-progress"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert (isolated / "datasets" / "clitest" / "img0.png").is_file()  # a failed --force keeps the old copy


def test_cache_location_that_is_a_file_is_named(server: Server, manifest, tmp_path: Path, monkeypatch,
                                                capsys) -> None:
    """$LCBENCH_CACHE pointing at a file said only "[Errno 20] Not a directory: '.../datasets'"."""
    from lcbench.cache import CacheLocationError
    from lcbench.cli import main

    afile = tmp_path / "cachefile"
    afile.write_text("x")
    monkeypatch.setenv("LCBENCH_CACHE", str(afile / "sub"))
    arrays = _images(1, seed=9)
    server.files["/a.tar"] = _tar_bytes({n: _png(a) for n, a in arrays.items()})
    name = manifest(image_count=2, images=_entries(arrays), sources=[{"url": server.url + "/a.tar", "kind": "tar"}])
    with pytest.raises(CacheLocationError, match=rf"^\$LCBENCH_CACHE={afile / 'sub'}: {afile} is a file, not a folder"):
        fetch(name, progress=False)
    # a folder dataset still runs, without the result cache, and says why
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(_png(arrays["img0.png"]))
    assert main(["run", "--codecs", "png", "--dataset", str(images), "--out", str(tmp_path / "run"), "--jobs", "1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{afile} is a file, not a folder" in err and "rm " not in err


def test_manifest_file_may_not_take_a_known_sets_name_with_other_content(tmp_path: Path, capsys) -> None:
    """A custom manifest named "set5" was fetched into set5's cache folder and its results were
    labelled set5; an exact copy of the known manifest is still accepted."""
    from lcbench.cli import main
    from lcbench.manifest import ManifestError, get_manifest, manifest_to_dict
    from lcbench.named_datasets import _manifest_for

    same = manifest_to_dict(get_manifest("set5"))
    (tmp_path / "same.json").write_text(json.dumps(same))
    assert manifest_to_dict(_manifest_for(str(tmp_path / "same.json"))) == same
    other = dict(same, image_count=3, images=same["images"][:3])
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ManifestError, match=r"defines dataset 'set5', which is already defined by .* with other "
                                            r"content; give your set another \"name\""):
        _manifest_for(str(tmp_path / "other.json"))
    assert main(["run", "--codecs", "png", "--dataset", str(tmp_path / "other.json"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "other.json defines dataset 'set5'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
