"""Safe archive extraction: real zip and tar files with hostile members are refused whole."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from lcbench.archive import UnsafeArchiveError, safe_extract


def _tar(path: Path, members: list[tuple[str, str, bytes | str]], mode: str = "w") -> Path:
    """members: (kind, name, data-or-linkname), kind in file/dir/sym/hard/fifo."""
    with tarfile.open(path, mode) as tf:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tf.addfile(info)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
    return path


def test_plain_tar_and_zip_extract(tmp_path: Path) -> None:
    t = _tar(tmp_path / "ok.tar.gz", [("dir", "top", b""), ("file", "top/a.txt", b"alpha"),
                                      ("file", "top/sub/b.txt", b"beta"), ("sym", "top/link", "a.txt")], "w:gz")
    safe_extract(t, tmp_path / "t")
    assert (tmp_path / "t/top/a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "t/top/sub/b.txt").read_bytes() == b"beta"
    assert (tmp_path / "t/top/link").is_symlink() and (tmp_path / "t/top/link").read_bytes() == b"alpha"

    z = _zip(tmp_path / "ok.zip", {"x/1.txt": b"one", "x/2.txt": b"two"})
    safe_extract(z, tmp_path / "z")
    assert sorted(p.name for p in (tmp_path / "z/x").iterdir()) == ["1.txt", "2.txt"]


@pytest.mark.parametrize("members, why", [
    ([("file", "../evil.txt", b"x")], "contains '..'"),
    ([("file", "good/../../evil.txt", b"x")], "contains '..'"),
    ([("file", "/tmp/lcbench-evil-abs.txt", b"x")], "absolute path"),
    ([("sym", "link", "../../outside")], "points outside"),
    ([("sym", "link", "/etc/passwd")], "points outside"),
    ([("dir", "d", b""), ("sym", "d/up", "../..")], "points outside"),
    ([("hard", "hl", "/etc/passwd")], "points outside"),
    ([("fifo", "pipe", b"")], "device or FIFO"),
    # chained links: each looks inside as a string, together they leave the folder
    ([("dir", "d", b""), ("sym", "d/x", ".."), ("sym", "d/x/y", "../.."), ("file", "d/x/y/evil.txt", b"x")],
     "under the symlink 'd/x'"),
    ([("sym", "a", "."), ("sym", "b", "a/../evil")], "through another symlink"),
    ([("sym", "a", "."), ("hard", "h", "a/../evil")], "through a symlink"),
])
def test_hostile_tar_is_refused_and_writes_nothing(tmp_path: Path, members, why: str) -> None:
    # A harmless member first: refusing must happen before anything is written.
    archive = _tar(tmp_path / "bad.tar", [("file", "first.txt", b"harmless")] + members)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=why):
        safe_extract(archive, target)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/lcbench-evil-abs.txt").exists()
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name, why", [
    ("../evil.txt", "contains '..'"),
    ("..\\evil.txt", "contains '..'"),
    ("/abs/evil.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
])
def test_hostile_zip_is_refused(tmp_path: Path, name: str, why: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(UnsafeArchiveError, match=why):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)  # S_IFLNK, as `zip --symlinks` stores it
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(path, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    page = tmp_path / "download"
    page.write_text("<html>mirror moved</html>")
    with pytest.raises(Exception, match="neither a zip nor a tar"):
        safe_extract(page, tmp_path / "out")
