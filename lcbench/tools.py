"""The one wrapper every command-line codec goes through.

Private temp dir per call (removed even on errors), a timeout, argument lists only
(never a shell string), and the tool's stderr in the error message.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np
from PIL import Image

from .codec import Availability, Codec, CodecError, CodecUnavailable, check_image

DEFAULT_TIMEOUT_S = 600.0


class ToolPathError(LookupError):
    """A tool path given by a codec option or an environment variable does not exist."""


def find_tool(name: str, *, option: str | None = None, env_var: str | None = None,
              option_name: str = "option") -> str | None:
    """Resolve a tool: explicit option, then environment variable, then PATH (None: not found).

    A path the user gave (option or variable) must resolve: ToolPathError otherwise, never the
    tool on PATH instead, which would be benchmarked and recorded as theirs without a word."""
    given = [(f"{option_name}={option!r}", option)]
    if env_var and os.environ.get(env_var):
        given.append((f"{env_var}={os.environ[env_var]!r}", os.environ[env_var]))
    for what, candidate in given:
        if candidate:
            path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
            if not path:
                raise ToolPathError(f"{what}: {candidate} is not an executable on PATH or an existing file")
            return path
    return shutil.which(name)


def tool_availability(tools: dict[str, str | None], fix: str) -> Availability:
    missing = [name for name, path in tools.items() if not path]
    if missing:
        return Availability.no(f"{', '.join(missing)} not found", fix)
    return Availability.yes()


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"lcbench-{prefix}-") as d:
        yield Path(d)


def run_tool(args: Sequence[str], *, codec: str, timeout: float = DEFAULT_TIMEOUT_S, cwd: Path | None = None) -> str:
    """Run a tool; raise CodecError naming the codec, the command and the tool's stderr."""
    try:
        proc = subprocess.run(
            list(args), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CodecError(f"{codec}: {Path(args[0]).name} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise CodecError(f"{codec}: cannot run {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-2000:]
        raise CodecError(f"{codec}: {Path(args[0]).name} exited with {proc.returncode}: {err}")
    return proc.stdout.decode(errors="replace")


def tool_lines(args: Sequence[str], timeout: float = 10.0) -> list[str]:
    """Non-empty lines a tool prints (stdout then stderr); [] if it cannot run."""
    try:
        proc = subprocess.run(list(args), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def tool_version(args: Sequence[str], timeout: float = 10.0) -> str:
    """First line a tool prints for its version, or 'unknown'."""
    lines = tool_lines(args, timeout)
    return lines[0] if lines else "unknown"


def write_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image, "RGB").save(path, compress_level=0)  # fastest: the tool re-reads it


def read_rgb(path: Path, codec: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im)
    except Exception as exc:
        raise CodecError(f"{codec}: cannot read the decoded image {path.name}: {exc}") from exc


class CommandLineCodec(Codec):
    """A codec made of an encoder and a decoder program that read and write files.

    Subclasses say which tools they need (``tools``: option/env/PATH names), and build the
    argument lists in ``encode_args`` / ``decode_args``.
    """

    # tool key -> (executable name on PATH, environment variable)
    tools: ClassVar[dict[str, tuple[str, str]]] = {}
    install_hint: ClassVar[str] = ""
    bitstream_suffix: ClassVar[str] = ".bin"
    timeout_s: ClassVar[float] = DEFAULT_TIMEOUT_S

    def __init__(self, **tool_paths: str) -> None:
        super().__init__()
        unknown = set(tool_paths) - set(self.tools)
        if unknown:
            raise ValueError(f"{self.name}: unknown options {sorted(unknown)}; tool paths: {sorted(self.tools)}")
        try:
            self.paths = {key: find_tool(exe, option=tool_paths.get(key), env_var=env, option_name=key)
                          for key, (exe, env) in self.tools.items()}
        except ToolPathError as exc:
            raise CodecUnavailable(f"{self.name}: {exc}") from None
        missing = [self.tools[k][0] for k, p in self.paths.items() if not p]
        if missing:
            raise CodecUnavailable(f"{self.name}: {', '.join(missing)} not found. {self.install_hint}")

    @classmethod
    def availability(cls) -> Availability:
        try:
            found = {exe: find_tool(exe, env_var=env) for exe, env in cls.tools.values()}
        except ToolPathError as exc:
            return Availability.no(str(exc), "point the variable at the tool, or unset it to use the one on PATH")
        return tool_availability(found, cls.install_hint)

    def availability_here(self) -> Availability:
        # the constructor found every tool (option, environment or PATH) or raised
        return Availability.yes()

    def encode_args(self, src: Path, dst: Path, rate: float) -> list[str]:
        raise NotImplementedError

    def decode_args(self, src: Path, dst: Path) -> list[str]:
        raise NotImplementedError

    def encode(self, image: np.ndarray, rate: float) -> bytes:
        check_image(image, self.name)
        with private_dir(self.name) as d:
            src, dst = d / "input.png", d / f"output{self.bitstream_suffix}"
            write_png(image, src)
            run_tool(self.encode_args(src, dst, rate), codec=self.name, timeout=self.timeout_s, cwd=d)
            if not dst.is_file():
                raise CodecError(f"{self.name}: the encoder wrote no bitstream")
            return dst.read_bytes()

    def decode(self, bitstream: bytes) -> np.ndarray:
        with private_dir(self.name) as d:
            src, dst = d / f"input{self.bitstream_suffix}", d / "decoded.png"
            src.write_bytes(bitstream)
            run_tool(self.decode_args(src, dst), codec=self.name, timeout=self.timeout_s, cwd=d)
            return read_rgb(dst, self.name)
