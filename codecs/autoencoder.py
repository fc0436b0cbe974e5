"""``autoencoder``: a small Ballé-2017-style learned codec, the template for adding your own.

    encode: pad to a multiple of 16 -> analysis transform -> round -> range-code each
            latent channel with its integer table -> header + payload (real bytes)
    decode: header -> range-decode latents -> synthesis transform -> round, clip, crop

The rate parameter is the model id: one shipped network per rate point, each trained with
another lambda (``codecs/weights/autoencoder_<id>.pt``, see autoencoder_TRAINING.md).
bpp comes from the bitstream's length; ``extra_columns()`` adds ``est_bpp``, the rate the
model's own (floating-point) density predicts, to compare with it.

Options: ``device`` (cpu/cuda, set by the runner) and ``weights_dir`` (a folder of
``autoencoder_<id>.pt`` files, e.g. written by ``lcbench train autoencoder``).
Walk-through: docs/learned-codec-tutorial.md.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lcbench.codec import Availability, CodecError, CodecUnavailable, TorchCodec, check_image
from lcbench.learned_batching import group_by_padded_shape, reproducible_synthesis, pad_image, padded
from lcbench.registry import register_codec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MODELS = (1, 2, 3, 4, 5)  # lambda 0.0012, 0.0035, 0.015, 0.05, 0.12: lowest to highest rate
_FILE_RE = re.compile(r"^autoencoder_(\d+)\.pt$")
PAD_MULTIPLE = 16  # four stride-2 layers


def weights_path(model_id: int, folder: Path | None = None) -> Path:
    return Path(folder if folder is not None else WEIGHTS_DIR) / f"autoencoder_{int(model_id)}.pt"


def _missing_dependency() -> str | None:
    for module in ("torch", "constriction"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


@register_codec
class Autoencoder(TorchCodec):
    """Factorised-prior autoencoder (Ballé et al. 2017, small), shipped weights (rate = model id)."""

    name = "autoencoder"
    rate_param = "model"
    default_rates: ClassVar[tuple[float, ...]] = tuple(float(i) for i in SHIPPED_MODELS)
    rate_range = (float(min(SHIPPED_MODELS)), float(max(SHIPPED_MODELS)))
    discrete_rates = True  # a fixed set of models: --target-bpp picks the nearest one
    rate_increases_bits = True
    description = "Ballé et al. 2017 factorised-prior autoencoder, small (learned, range-coded)"

    def __init__(self, device: str = "cpu", weights_dir: str | None = None) -> None:
        super().__init__(device=device)
        self.weights_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
        if weights_dir:
            self.options["weights_dir"] = str(weights_dir)
        self._models: dict[int, Any] = {}  # id -> (network, EntropyTables, sha256 of the file)
        self.last_batch_extras: list[dict[str, float]] = []  # per image of the last encode_batch
        self._version: str | None = None
        self._availability: Availability | None = None

    # -- discovery and checks --------------------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        missing = _missing_dependency()
        if missing:
            return Availability.no(f"autoencoder needs the Python package {missing!r}", f"pip install {missing}")
        from lcbench.autoencoder.weights import WeightsError, load

        for model_id in SHIPPED_MODELS:
            try:
                load(weights_path(model_id))
            except WeightsError as exc:
                return Availability.no(str(exc), "reinstall lcbench from a full checkout (codecs/weights/*.pt), "
                                       "or train weights with `lcbench train autoencoder`")
        return Availability.yes()

    def availability_here(self) -> Availability:
        """With ``weights_dir``: every autoencoder_<id>.pt there must load (checked once, before any
        job runs, so a corrupt file is bad input naming the file, not an error in every job).
        Without it: the class's check of the shipped weights."""
        if not self.options.get("weights_dir"):
            return type(self).availability()
        if self._availability is None:
            self._availability = self._check_weights_dir()
        return self._availability

    def _check_weights_dir(self) -> Availability:
        missing = _missing_dependency()
        if missing:
            return Availability.no(f"autoencoder needs the Python package {missing!r}", f"pip install {missing}")
        from lcbench.autoencoder.weights import WeightsError, load

        ids = self.model_ids()
        if not ids:
            return Availability.no(f"autoencoder: no autoencoder_<id>.pt weights in {self.weights_dir}",
                                   "train some with `lcbench train autoencoder`")
        for model_id in ids:
            try:
                load(weights_path(model_id, self.weights_dir))
            except WeightsError as exc:
                return Availability.no(str(exc), "replace or remove that file (`lcbench train autoencoder` "
                                       "writes valid ones)")
        return Availability.yes()

    def model_ids(self) -> list[int]:
        """Model ids present in the weights folder."""
        if not self.weights_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.weights_dir.iterdir() if (m := _FILE_RE.match(p.name)))

    def check_rate(self, rate: float) -> None:
        """A rate is a model id: one of the weights files this instance can load."""
        ids = self.model_ids()
        if rate not in ids:
            raise ValueError(f"{self.label()}: rate {rate:g} is not a model id (available: {ids})")

    def version(self) -> str:
        """sha256 over the weights files this instance can use (new weights, new version), and the
        bitstream format (cached results of an older format must not be reused)."""
        if self._version is None:
            from lcbench.learned.weights import sha256_of

            ids = self.model_ids() if self.options else list(SHIPPED_MODELS)
            if not ids:
                raise CodecUnavailable(f"autoencoder: no autoencoder_<id>.pt weights in {self.weights_dir}")
            lines = []
            for i in ids:
                path = weights_path(i, self.weights_dir)
                if not path.is_file():
                    raise CodecUnavailable(f"autoencoder: weights file {path} is missing")
                lines.append(f"{i}:{sha256_of(path)}")
            from lcbench.autoencoder.bitstream import FORMAT_VERSION

            self._version = (f"weights-sha256:{hashlib.sha256(chr(10).join(lines).encode()).hexdigest()} "
                             f"bitstream-v{FORMAT_VERSION}")
        return self._version

    def _model(self, model_id: int) -> tuple[Any, Any, str]:
        """Load a model once per codec instance (network on self.device, tables, file hash)."""
        if model_id not in self._models:
            missing = _missing_dependency()
            if missing:
                raise CodecUnavailable(f"autoencoder needs {missing!r}: pip install {missing}")
            from lcbench.autoencoder.weights import WeightsError, load
            from lcbench.learned.weights import sha256_of

            path = weights_path(model_id, self.weights_dir)
            try:
                net, tables = load(path)
            except WeightsError as exc:
                raise CodecUnavailable(f"autoencoder model {model_id}: {exc}") from exc
            self._models[model_id] = (net.to(self.device), tables, sha256_of(path))
        return self._models[model_id]

    def to(self, device: str) -> "Autoencoder":
        super().to(device)
        for net, _, _ in self._models.values():
            net.to(device)
        return self

    def _model_id(self, rate: float) -> int:
        model_id = int(round(float(rate)))
        if model_id != float(rate) or not 0 <= model_id <= 255:
            raise CodecError(f"autoencoder: rate {rate!r} is not a model id (one of {self.model_ids()})")
        if not weights_path(model_id, self.weights_dir).is_file():
            raise CodecUnavailable(f"autoencoder: no model {model_id}: {weights_path(model_id, self.weights_dir)} "
                                   f"is missing (available ids: {self.model_ids()})")
        return model_id

    # -- coding ----------------------------------------------------------------------------
    def encode(self, image: np.ndarray, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, bitstream: bytes) -> np.ndarray:
        return self.decode_batch([bitstream])[0]

    def encode_batch(self, images: Sequence[np.ndarray], rate: float) -> list[bytes]:
        """Encode images with one model; images of equal padded size share one network pass."""
        import torch
        from lcbench.autoencoder.bitstream import Header, pack

        for im in images:
            check_image(im, self.name)
        model_id = self._model_id(rate)
        net, tables, sha = self._model(model_id)
        out: list[bytes] = [b""] * len(images)
        extras: list[dict[str, float]] = [{} for _ in images]
        for idx in group_by_padded_shape([im.shape[:2] for im in images], PAD_MULTIPLE).values():
            batch = torch.from_numpy(np.stack([pad_image(images[i], PAD_MULTIPLE) for i in idx])).permute(0, 3, 1, 2)
            with torch.no_grad():
                y_hat = torch.round(net.analyse(batch.to(self.device)))
                est_bits = -torch.log2(net.density.likelihood(y_hat)).sum(dim=(1, 2, 3)).cpu()
            latents = y_hat.cpu().numpy().astype(np.int32)
            for j, i in enumerate(idx):
                h, w = images[i].shape[:2]
                out[i] = pack(Header(model_id, bytes.fromhex(sha[:8]), h, w), tables.encode(latents[j]))
                extras[i] = {"est_bpp": float(est_bits[j]) / (h * w)}
        self.last_batch_extras = extras  # read by the runner after encode_batch
        return out

    def decode_batch(self, bitstreams: Sequence[bytes]) -> list[np.ndarray]:
        import torch
        from lcbench.autoencoder.bitstream import BitstreamError, unpack
        from lcbench.autoencoder.tables import LatentCodingError

        results = []
        for data in bitstreams:  # one at a time: sizes and models differ, and decoding is not the bottleneck
            try:
                header, words = unpack(bytes(data))
            except BitstreamError as exc:
                raise CodecError(f"autoencoder: {exc}") from exc
            net, tables, sha = self._model(self._model_id(header.model_id))
            if header.weights_tag != bytes.fromhex(sha[:8]):
                raise CodecError(f"autoencoder: the bitstream was written with other weights for model "
                                 f"{header.model_id} (tag {header.weights_tag.hex()}, these weights {sha[:8]})")
            hp, wp = padded(header.height, PAD_MULTIPLE), padded(header.width, PAD_MULTIPLE)
            try:
                latents = tables.decode(words, hp // PAD_MULTIPLE, wp // PAD_MULTIPLE)
            except LatentCodingError as exc:
                raise CodecError(f"autoencoder: corrupt bitstream for model {header.model_id}: {exc}") from exc
            with torch.no_grad(), reproducible_synthesis(self.device):
                x = net.synthesise(torch.from_numpy(latents).float()[None].to(self.device))
            pixels = torch.clamp(torch.round(x), 0, 255).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
            results.append(np.ascontiguousarray(pixels[:header.height, :header.width]))
        return results

    def extra_columns(self) -> dict[str, Any]:
        """The model's own rate estimate for the last encoded image."""
        return dict(self.last_batch_extras[-1]) if self.last_batch_extras else {}




