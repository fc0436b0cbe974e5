"""Where named datasets live on this machine, and the remembered results of verifying them.

- ``$LCBENCH_CACHE`` (default: the platform's user cache dir, e.g. ~/.cache/lcbench) holds
  ``datasets/<name>/`` (complete, verified downloads), ``downloads/`` (archives and resumable
  ``.part`` files) and ``datasets/.verified/<name>.json`` (verification results).
- ``$LCBENCH_DATA`` is an ``os.pathsep``-separated list of read-only mirrors laid out as
  ``<dir>/<name>/...``.

Verifying a copy means decoding every image; that is too slow for every run, so the pixel
hash found for a file is remembered together with the file's size and mtime and trusted while
both are unchanged. ``lcbench datasets verify`` ignores these records and re-checks everything.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

CACHE_ENV = "LCBENCH_CACHE"
DATA_ENV = "LCBENCH_DATA"


class CacheLocationError(NotADirectoryError):
    """The cache location is a file (or under one); the message names it and the variable."""


def cache_root() -> Path:
    """The cache folder (not created here); CacheLocationError when that path is a file or lies
    under one, which would otherwise surface as a bare "[Errno 20] Not a directory"."""
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(os.path.abspath(os.path.expanduser(env)))
        source = f"${CACHE_ENV}={env}"
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("lcbench", appauthor=False))
        source = "the default cache folder"
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                raise CacheLocationError(f"{source}: {p} is a file, not a folder; point {CACHE_ENV} at a folder "
                                         f"(it is created if missing)")
            break
    return root


def datasets_dir() -> Path:
    """Complete downloaded datasets: ``<cache>/datasets/<name>``."""
    return cache_root() / "datasets"


def downloads_dir() -> Path:
    """Downloaded files and resumable ``.part`` files (never read as a dataset)."""
    return cache_root() / "downloads"


def data_dirs() -> list[Path]:
    """The mirror folders listed in ``$LCBENCH_DATA``, in order (empty entries ignored), made
    absolute so image paths stay valid for workers and in run metadata."""
    raw = os.environ.get(DATA_ENV, "")
    return [Path(os.path.abspath(os.path.expanduser(p))) for p in raw.split(os.pathsep) if p.strip()]


def _read_umask() -> int:
    """The process's umask, read once at import: reading it means setting it, which would briefly
    change the mode of files other threads create if done per write."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_json_atomic(path: Path, data: object) -> None:
    """Write via a temp file + rename so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); run.json is shared like results.csv: umask's mode
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def fetch_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock while fetching ``name``: two processes must not append to the same
    ``.part`` file or install the same folder at once."""
    with file_lock(datasets_dir() / f".{name}.lock"):
        yield


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed) between processes. (POSIX flock;
    elsewhere no lock.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class VerificationRecords:
    """Pixel hashes already computed for files, keyed by absolute path, valid for a size+mtime."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.path = (root or datasets_dir()) / ".verified" / f"{name}.json"
        self._entries: dict[str, dict] = {}
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self._entries = data["files"]
        except (OSError, ValueError):
            pass  # no records yet, or unreadable: everything is simply re-checked

    @staticmethod
    def _key(path: Path) -> str:
        return str(Path(os.path.abspath(path)))

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        """The remembered pixel hash of ``path`` if the file is unchanged since it was hashed."""
        e = self._entries.get(self._key(path))
        if e and e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns:
            return e.get("pixels_sha256")
        return None

    def remember(self, path: Path, st: os.stat_result, pixels_sha256: str) -> None:
        key = self._key(path)
        new = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "pixels_sha256": pixels_sha256}
        if self._entries.get(key) != new:
            self._entries[key] = new
            self._dirty = True

    def save(self) -> None:
        """Persist; a read-only or missing cache only costs speed, so write errors are ignored."""
        if not self._dirty:
            return
        try:
            write_json_atomic(self.path, {"format_version": 1, "files": self._entries})
            self._dirty = False
        except OSError:
            pass
