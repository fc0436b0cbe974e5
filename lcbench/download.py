"""Download one URL to a file: resume with HTTP Range, retries, size and SHA-256 checks.

Bytes go to ``<dest>.part`` and the file is renamed to ``dest`` only once it is complete and,
when a checksum is known, verified; an interrupted download leaves only the ``.part`` file,
which the next attempt (in this process or a later one) continues from where it stopped.

A ``.part`` is continued only when the first response named its version of the file (ETag or
Last-Modified, kept in ``<dest>.part.validator``): the Range request then carries If-Range, so a
server whose file changed sends the whole new file instead of the rest of another one. A .part
without a validator (a server that sends neither, a leftover from elsewhere) is downloaded again
from zero: a splice of two versions would pass a size check and be installed corrupted.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .dataset import DatasetError

CHUNK = 1 << 16
# 4xx other than these mean the URL itself is wrong: retrying cannot help.
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(DatasetError):
    """A URL could not be downloaded (or did not match its checksum); ``url`` says which."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _user_agent() -> str:
    from . import __version__

    return f"lcbench/{__version__} (+python urllib)"


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                leave=False, file=sys.stderr)


def _content_range_start(value: str | None) -> int | None:
    """'bytes 100-199/200' -> 100."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


class _UnexpectedRange(http.client.HTTPException):
    """A 206 for a range we did not ask for: the .part is dropped and the next attempt starts over."""


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> None:
    """One HTTP attempt, appending to ``part`` when the server honours a Range request for the
    same version of the file (If-Range), else writing it from zero."""
    validator_file = _validator_path(part)
    validator = validator_file.read_text().strip() if validator_file.is_file() else ""
    have = part.stat().st_size if part.exists() and validator else 0
    headers = {"User-Agent": _user_agent()}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = getattr(resp, "status", None) or 200  # file:// responses carry no status
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if not have or start != have:
                part.unlink(missing_ok=True)
                validator_file.unlink(missing_ok=True)
                raise _UnexpectedRange(f"server sent a range starting at byte {start}, asked for {have}; restarting")
            mode = "ab"
        else:  # a whole file (Range ignored, or the file changed): start over and note its version
            have, mode = 0, "wb"
            new_validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
            if new_validator and not new_validator.startswith("W/"):  # weak ETags may not be used in If-Range
                validator_file.write_text(new_validator)
            else:
                validator_file.unlink(missing_ok=True)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = have + expected if expected is not None else None
        bar = _progress_bar(total, have, desc, progress)
        got = 0
        try:
            with open(part, mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if expected is not None and got < expected:
            raise http.client.IncompleteRead(b"", expected - got)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 0.5,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); raises DownloadError naming the URL.

    ``progress=None`` shows a tqdm bar only when stderr is a terminal.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256) and (size is None or dest.stat().st_size == size):
        return dest
    part = dest.with_name(dest.name + ".part")
    if progress is None:
        progress = sys.stderr.isatty()
    desc = dest.name if len(dest.name) < 40 else dest.name[:37] + "..."
    last_error = "no attempt made"
    spliced = False  # did the bytes come from more than one transfer?
    attempt = 0
    while attempt <= retries:
        spliced = spliced or (part.exists() and part.stat().st_size > 0 and _validator_path(part).is_file())
        try:
            _fetch_once(url, part, timeout=timeout, progress=progress, desc=desc)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # our Range is past the end: the .part is bad
                part.unlink()
                last_error = "HTTP 416 (range not satisfiable); restarting from zero"
            elif exc.code in _RETRYABLE_HTTP:
                last_error = f"HTTP {exc.code} {exc.reason}"
            else:
                raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            last_error = f"{type(exc).__name__}: {reason}"
        else:
            got_size = part.stat().st_size
            problem = None
            if size is not None and got_size != size:
                problem = f"size mismatch: expected {size} bytes, got {got_size}"
            elif sha256 is not None:
                digest = sha256_file(part)
                if digest != sha256:
                    problem = f"checksum mismatch: expected sha256 {sha256}, got {digest}"
            if problem is None:
                os.replace(part, dest)
                _validator_path(part).unlink(missing_ok=True)
                return dest
            part.unlink()  # a wrong file must not be resumed from
            _validator_path(part).unlink(missing_ok=True)
            if not spliced:
                raise DownloadError(url, problem)
            # A resumed file can be wrong because the server's file changed between transfers;
            # one clean download from zero settles it.
            spliced = False
            last_error = problem
            continue  # not counted as a network retry
        attempt += 1
        if attempt <= retries:
            time.sleep(backoff * (2 ** (attempt - 1)))
    resumable = part.exists() and _validator_path(part).is_file()
    kept = f" (partial download kept in {part} and resumed next time)" if resumable else ""
    raise DownloadError(url, f"failed after {retries + 1} attempts: {last_error}{kept}")
