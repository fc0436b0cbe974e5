"""Safe extraction of zip and tar archives from the internet.

Every member is checked before anything is written, and the whole archive is refused when one
member is unsafe: absolute paths, drive letters, '..' components, links whose target leaves the
extraction folder, hard links to outside, device files and FIFOs. A refused archive writes nothing.
"""
from __future__ import annotations

import posixpath
import re
import stat
import tarfile
import zipfile
from pathlib import Path

from .dataset import DatasetError


class UnsafeArchiveError(DatasetError):
    """An archive member would be written outside the target folder (or is not a plain file)."""


def _member_path(name: str, archive: Path) -> str:
    """Normalised relative path of a member, or UnsafeArchiveError."""
    unified = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise UnsafeArchiveError(f"archive {archive} refused: member {name!r} has an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive {archive} refused: member {name!r} contains '..'")
    return "/".join(parts)


def _inside(rel_target: str) -> bool:
    """Does a normalised relative path stay inside the extraction folder?"""
    norm = posixpath.normpath(rel_target)
    return not (norm == ".." or norm.startswith("../") or norm.startswith("/"))


def _through_link(path: str, links: set[str]) -> str | None:
    """The first proper prefix of ``path`` (relative, before any '..' is collapsed: in 'a/../x'
    the link 'a' is passed through) that is a symlink member, else None."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i in range(1, len(parts)):
        prefix = posixpath.normpath("/".join(parts[:i]))
        if prefix in links:
            return prefix
    return None


def _check_tar(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    links: set[str] = set()  # symlink members so far: a path through one is judged as a string no more
    for m in tf.getmembers():
        rel = _member_path(m.name, archive)
        via = _through_link(rel, links) if rel else None
        if via is not None:  # d/x -> .. then d/x/y -> ../..: each looks inside, together they escape
            raise UnsafeArchiveError(
                f"archive {archive} refused: member {m.name!r} lies under the symlink {via!r}")
        if m.issym():
            link = m.linkname.replace("\\", "/")
            target = posixpath.join(posixpath.dirname(rel), link)
            if link.startswith("/") or not _inside(target):
                raise UnsafeArchiveError(
                    f"archive {archive} refused: symlink {m.name!r} -> {m.linkname!r} points outside the dataset folder")
            if _through_link(target, links) is not None:
                raise UnsafeArchiveError(
                    f"archive {archive} refused: symlink {m.name!r} -> {m.linkname!r} points through another symlink")
            links.add(posixpath.normpath(rel))
        elif m.islnk():
            link = m.linkname.replace("\\", "/")
            if link.startswith("/") or not _inside(link) or _through_link(link, links) is not None:
                raise UnsafeArchiveError(
                    f"archive {archive} refused: hard link {m.name!r} -> {m.linkname!r} points outside the dataset "
                    "folder or through a symlink")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"archive {archive} refused: member {m.name!r} is a device or FIFO")
        if rel:
            members.append(m)
    return members


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        _member_path(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            # zipfile would write the link as a text file; a dataset has no use for links.
            raise UnsafeArchiveError(f"archive {archive} refused: member {info.filename!r} is a symbolic link")
        members.append(info)
    return members


def archive_kind(path: Path) -> str:
    """'zip' or 'tar' from the file's content (not its name)."""
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DatasetError(f"{path} is neither a zip nor a tar archive")


def safe_extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` (zip or tar, any compression) into ``target`` after checking every member."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = _check_zip(zf, archive)
                for info in members:
                    zf.extract(info, target)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = _check_tar(tf, archive)
                # The 'data' filter repeats these checks inside tarfile (defence in depth) and
                # drops permissions such as setuid that a dataset never needs.
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(target, members=members, filter="data")
                else:  # Python without extraction filters: our checks above are the guard
                    tf.extractall(target, members=members)
    except UnsafeArchiveError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"cannot extract archive {archive}: {type(exc).__name__}: {exc}") from exc
