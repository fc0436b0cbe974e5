"""A machine-wide cache of finished jobs, keyed by content, shared by every run directory.

A result is fully determined by (codec label with options, codec version or weights hash,
rate parameter and value, the source image's pixels, the metric definitions), so its key
is a hash of exactly those: the same image under another name or in another run
directory is served from here. Stored in ``$LCBENCH_CACHE/results.sqlite`` (WAL mode, so
concurrent runs can read and write). The run directory stays the durable record of a run;
this cache only saves recomputation, and ``lcbench run --no-cache`` bypasses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterable

from .cache import cache_root

# Columns that describe where a result was used, not what it is: replaced on reuse.
PER_RUN_FIELDS = ("image", "dataset", "key")


def content_key(label: str, version: str, rate_param: str, quality: float, pixels_sha256: str,
                metrics_version: int) -> str:
    payload = json.dumps([label, version, rate_param, float(quality), pixels_sha256, metrics_version])
    return hashlib.sha256(payload.encode()).hexdigest()


_warned: set[str] = set()  # cache files already warned about in this process


def _warn(path: Path, exc: BaseException) -> None:
    """Once per cache file and process: the cache is not used, the run goes on without it."""
    key = str(path)
    if key in _warned:
        return
    _warned.add(key)
    from .cache import CacheLocationError

    fix = ("" if isinstance(exc, CacheLocationError) else
           f" If the file is corrupt, delete it (rm {path}) and a fresh cache is created on the next run.")
    print(f"lcbench: warning: result cache {path} is unusable ({type(exc).__name__}: {exc}); running without "
          f"it (results are still computed and stored in the run directory).{fix}", file=sys.stderr, flush=True)


class ResultCache:
    """The cache is only an accelerator: a file that is not a database (or any other SQLite error,
    e.g. a lock held too long) disables it for this object with one warning on stderr, never the run.
    ``enabled`` says whether it is in use."""

    def __init__(self, path: Path | None = None) -> None:
        self._db: sqlite3.Connection | None = None
        try:
            self.path = Path(path) if path else cache_root() / "results.sqlite"
        except OSError as exc:  # e.g. $LCBENCH_CACHE is a file: run without the cache, and say why
            self.path = Path(os.environ.get("LCBENCH_CACHE", "?")) / "results.sqlite"
            _warn(self.path, exc)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS pixel_hashes (path TEXT PRIMARY KEY, stat TEXT, sha256 TEXT)")
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _disable(self, exc: BaseException) -> None:
        _warn(self.path, exc)
        self.close()

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        if self._db is None:
            return out
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, record FROM results WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                out.update((k, json.loads(r)) for k, r in rows)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: a record that is not JSON
            self._disable(exc)
            return {}
        return out

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self._db is None:
            return
        rows = [(k, json.dumps({f: v for f, v in rec.items() if f not in PER_RUN_FIELDS}, default=str))
                for k, rec in items]
        if rows:
            try:
                self._db.executemany("INSERT OR REPLACE INTO results (key, record) VALUES (?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                self._disable(exc)

    def pixel_hash(self, path: Path) -> str:
        """The source image's shape and pixel hash (and a hash of its loading notes, if any), remembered while its size, mtime and ctime stay
        the same (ctime: a rewrite that restores size and mtime, as `cp -p` can, still changes it)."""
        from .images import load_image, pixel_hash

        st = os.stat(path)
        # rows from before the shape (or the ctime) was part of this never match
        # and the reader's revision: a file read wrongly before a reader fix must be read again
        from .images import READER_REVISION

        stat = f"shape+pixels+notes:r{READER_REVISION}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        if self._db is not None:
            try:
                row = self._db.execute("SELECT stat, sha256 FROM pixel_hashes WHERE path = ?", (str(path),)).fetchone()
            except sqlite3.Error as exc:
                self._disable(exc)
                row = None
            if row and row[0] == stat:
                return row[1]
        loaded = load_image(path)
        pixels = loaded.pixels
        # the shape too: a flat 170x180 and 180x170 image have the same bytes, not the same results
        sha = f"{pixels.shape[0]}x{pixels.shape[1]}:{pixel_hash(pixels)}"
        if loaded.notes:
            # and what loading said about the file ("alpha channel dropped", "16-bit reduced to 8 bits"),
            # which a result's notes carry: an RGBA file must not get the notes of its RGB twin's result
            sha += ":notes-" + hashlib.sha256("; ".join(loaded.notes).encode()).hexdigest()[:16]
        if self._db is not None:
            try:
                self._db.execute("INSERT OR REPLACE INTO pixel_hashes (path, stat, sha256) VALUES (?, ?, ?)",
                                 (str(path), stat, sha))
                self._db.commit()
            except sqlite3.Error as exc:
                self._disable(exc)
        return sha
