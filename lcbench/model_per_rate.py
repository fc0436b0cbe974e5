"""Learned codecs whose rate parameter is a model id: one weights file per rate point.

``importance_map`` and ``autoencoder`` (and a user's codec built the same way) ship one
network per rate point as ``<name>_<id>.pt``. Everything about those files lives here once:
finding them (the shipped folder or a ``weights_dir`` option), checking them before any job
runs, the codec version (a hash of the files and the bitstream format), loading each model
once per codec instance, and turning a rate into a model id. A subclass supplies how one
file is read (``_read_model``) and its bitstream format version, and does the coding.
"""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

from lcbench.codec import Availability, CodecError, CodecUnavailable, TorchCodec


class ModelFileError(RuntimeError):
    """A weights file is missing, unreadable or not this codec's model; the message names the file."""


# Networks loaded in this process, by (codec class, weights file sha256, device): the worker's
# encoding and decoding instances of a codec share them (eval mode, no state between calls), so a
# second instance costs no second load inside a timed decode, nor a second copy on the GPU.
_LOADED: dict[tuple[type, str | None, str], tuple[Any, Any]] = {}


class ModelPerRateCodec(TorchCodec):
    """A TorchCodec with one weights file ``<name>_<id>.pt`` per rate point (rate = model id)."""

    rate_param = "model"
    discrete_rates = True  # a fixed set of models: --target-bpp picks the nearest one
    rate_increases_bits = True
    shipped_models: ClassVar[tuple[int, ...]] = ()
    shipped_weights_dir: ClassVar[Path]
    required_packages: ClassVar[tuple[str, ...]] = ("torch", "constriction")
    # Part of the version: bump when the same weights and bitstream format give other bytes or
    # pixels, so cached results are not mixed. 2: on the CPU the networks see one image at a
    # time (batches decoded a few pixels 1 off from the same bitstream decoded alone).
    coding_revision: ClassVar[int] = 2

    def __init__(self, device: str = "cpu", weights_dir: str | None = None) -> None:
        super().__init__(device=device)
        self.weights_dir = Path(weights_dir) if weights_dir else self.shipped_weights_dir
        if weights_dir:
            self.options["weights_dir"] = str(weights_dir)
            # your own models: the default grid is whatever <name>_<id>.pt files the folder has
            self.default_rates = tuple(float(i) for i in self.model_ids()) or self.default_rates
        self._models: dict[int, tuple[Any, Any, str]] = {}  # id -> (network on self.device, aux, file sha256)
        self._load_lock = threading.Lock()  # decoding may run in the runner's coding thread
        self._version: str | None = None
        self._version_shas: dict[int, str] = {}  # model id -> sha256 its version() was computed from
        self._availability: Availability | None = None

    # -- what a subclass supplies -----------------------------------------------------------
    @classmethod
    def _read_model(cls, path: Path) -> tuple[Any, Any]:
        """One weights file -> (network on the CPU in eval mode, what coding needs besides it,
        e.g. entropy tables). Raises ModelFileError naming the file."""
        raise NotImplementedError

    @classmethod
    def _bitstream_format_version(cls) -> int:
        raise NotImplementedError

    @classmethod
    def _train_command(cls) -> str:
        return f"lcbench train {cls.name}"

    # -- coding: a subclass implements encode_batch and decode_batch --------------------------
    def encode(self, image: Any, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, bitstream: bytes) -> Any:
        return self.decode_batch([bitstream])[0]

    def encode_batch(self, images: Any, rate: float) -> list[bytes]:
        raise NotImplementedError(f"{type(self).__name__} must implement encode_batch")

    def decode_batch(self, bitstreams: Any) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement decode_batch")

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def weights_path(cls, model_id: int, folder: Path | None = None) -> Path:
        return Path(folder if folder is not None else cls.shipped_weights_dir) / f"{cls.name}_{int(model_id)}.pt"

    def model_ids(self) -> list[int]:
        """Model ids present in the weights folder."""
        if not self.weights_dir.is_dir():
            return []
        pattern = re.compile(rf"^{re.escape(self.name)}_(\d+)\.pt$")
        return sorted(int(m.group(1)) for p in self.weights_dir.iterdir() if (m := pattern.match(p.name)))

    @classmethod
    def _missing_dependency(cls) -> str | None:
        for module in cls.required_packages:
            try:
                __import__(module)
            except ImportError:
                return module
        return None

    # -- checks, before any job runs ----------------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        """The shipped weights: every file must load (a broken checkout is named, with the fix)."""
        missing = cls._missing_dependency()
        if missing:
            return Availability.no(f"{cls.name} needs the Python package {missing!r}", f"pip install {missing}")
        for model_id in cls.shipped_models:
            try:
                cls._read_model(cls.weights_path(model_id))
            except ModelFileError as exc:
                return Availability.no(str(exc), "reinstall lcbench from a full checkout (codecs/weights/*.pt), "
                                       f"or train weights with `{cls._train_command()}`")
        return Availability.yes()

    def availability_here(self) -> Availability:
        """With ``weights_dir``: every <name>_<id>.pt there must load (checked once, before any job
        runs, so a corrupt file is bad input naming the file, not an error in every job).
        Without it: the class's check of the shipped weights."""
        if not self.options.get("weights_dir"):
            return type(self).availability()
        if self._availability is None:
            self._availability = self._check_weights_dir()
        return self._availability

    def _check_weights_dir(self) -> Availability:
        missing = self._missing_dependency()
        if missing:
            return Availability.no(f"{self.name} needs the Python package {missing!r}", f"pip install {missing}")
        ids = self.model_ids()
        if not ids:
            return Availability.no(f"{self.name}: no {self.name}_<id>.pt weights in {self.weights_dir}",
                                   f"train some with `{self._train_command()}`")
        for model_id in ids:
            try:
                self._read_model(self.weights_path(model_id, self.weights_dir))
            except ModelFileError as exc:
                return Availability.no(str(exc), f"replace or remove that file (`{self._train_command()}` "
                                       "writes valid ones)")
        return Availability.yes()

    def check_rate(self, rate: float) -> None:
        """A rate is a model id: one of the weights files this instance can load."""
        ids = self.model_ids()
        if rate not in ids:
            raise ValueError(f"{self.label()}: rate {rate:g} is not a model id (available: {ids})")

    def version(self) -> str:
        """sha256 over the weights files this instance can use (new weights, new version), and the
        bitstream format: cached results of an older format (other bytes, so another bpp) must
        not be reused."""
        if self._version is None:
            from lcbench.weights_file import sha256_of

            ids = self.model_ids() if self.options.get("weights_dir") else list(self.shipped_models)
            if not ids:
                raise CodecUnavailable(f"{self.name}: no {self.name}_<id>.pt weights in {self.weights_dir}")
            lines = []
            for i in ids:
                path = self.weights_path(i, self.weights_dir)
                if not path.is_file():
                    raise CodecUnavailable(f"{self.name}: weights file {path} is missing")
                self._version_shas[i] = sha256_of(path)
                lines.append(f"{i}:{self._version_shas[i]}")
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            self._version = (f"weights-sha256:{digest} bitstream-v{self._bitstream_format_version()}"
                             f" coding-r{self.coding_revision}")
        return self._version

    # -- models -------------------------------------------------------------------------------
    def _model(self, model_id: int) -> tuple[Any, Any, str]:
        """A model, loaded once per codec instance: (network on self.device, aux, file sha256)."""
        hit = self._models.get(model_id)
        if hit is not None:
            return hit
        with self._load_lock:
            if model_id not in self._models:
                missing = self._missing_dependency()
                if missing:
                    raise CodecUnavailable(f"{self.name} needs {missing!r}: pip install {missing}")
                from lcbench.weights_file import sha256_of

                path = self.weights_path(model_id, self.weights_dir)
                before = sha256_of(path) if path.is_file() else None
                shared = _LOADED.get((type(self), before, str(self.device)))
                if shared is not None:  # e.g. the worker's decoding instance: the encoder loaded it
                    net, aux = shared
                    sha = before
                else:
                    try:
                        net, aux = self._read_model(path)
                    except ModelFileError as exc:
                        raise CodecUnavailable(f"{self.name} model {model_id}: {exc}") from exc
                    sha = sha256_of(path)
                # the results are filed under version()'s hashes: weights rewritten since then (or
                # while loading) would be benchmarked under the old weights' version
                expected = self._version_shas.get(model_id, sha)
                if before != sha or expected != sha:
                    raise CodecError(f"{self.name}: weights file {path} changed during the run (sha256 "
                                     f"{expected[:12]} when the run started, {sha[:12]} now); run again")
                if shared is None:
                    net = net.to(self.device)
                    _LOADED[(type(self), sha, str(self.device))] = (net, aux)
                self._models[model_id] = (net, aux, sha)
            return self._models[model_id]

    def to(self, device: str) -> "ModelPerRateCodec":
        super().to(device)
        self._models.clear()  # loaded networks may be shared (_LOADED): load again for the new device
        return self

    def preload(self, rate: float) -> None:
        """Load the model of ``rate`` now (the runner calls this before timing a rate point)."""
        self._model(self._model_id(rate))

    def _model_id(self, rate: float) -> int:
        """The model id a rate (or a bitstream header) names; its file must exist."""
        model_id = int(round(float(rate)))
        if model_id != float(rate) or not 0 <= model_id <= 255:
            raise CodecError(f"{self.name}: rate {rate!r} is not a model id (one of {self.model_ids()})")
        path = self.weights_path(model_id, self.weights_dir)
        if not path.is_file():
            raise CodecUnavailable(f"{self.name}: no model {model_id}: {path} is missing "
                                   f"(available ids: {self.model_ids()})")
        return model_id

    def _check_weights_tag(self, model_id: int, tag: bytes, sha: str) -> None:
        """A bitstream records the first 4 bytes of its weights' sha256; decoding with other
        weights would give a wrong image silently, so it is an error."""
        if tag != bytes.fromhex(sha[:8]):
            raise CodecError(f"{self.name}: the bitstream was written with other weights for model "
                             f"{model_id} (tag {tag.hex()}, these weights {sha[:8]})")
