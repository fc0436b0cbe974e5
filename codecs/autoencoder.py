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

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lcbench.codec import CodecError, check_image
from lcbench.learned_batching import network_batches, pad_image, padded, reproducible_synthesis
from lcbench.model_per_rate import ModelFileError, ModelPerRateCodec
from lcbench.registry import register_codec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PAD_MULTIPLE = 16  # four stride-2 layers


@register_codec
class Autoencoder(ModelPerRateCodec):
    """Factorised-prior autoencoder (Ballé et al. 2017, small), shipped weights (rate = model id)."""

    name = "autoencoder"
    shipped_models = (1, 2, 3, 4, 5)  # lambda 0.0012, 0.0035, 0.015, 0.05, 0.12: lowest to highest rate
    shipped_weights_dir = WEIGHTS_DIR
    default_rates: ClassVar[tuple[float, ...]] = (1.0, 2.0, 3.0, 4.0, 5.0)
    rate_range = (1.0, 5.0)
    description = "Ballé et al. 2017 factorised-prior autoencoder, small (learned, range-coded)"

    def __init__(self, device: str = "cpu", weights_dir: str | None = None) -> None:
        super().__init__(device=device, weights_dir=weights_dir)
        self._extras: list[dict[str, float]] | None = []
        self._pending_estimates: list[tuple[Any, Any, list[int]]] = []  # (network, rounded latents, image indices)
        self._pending_sizes: list[tuple[int, int]] = []

    @property
    def last_batch_extras(self) -> list[dict[str, float]] | None:
        """Per image of the last encode_batch, ``est_bpp``: the model's own rate estimate. It is
        computed when read, which the runner does after stopping the encode clock (inside
        encode_batch it was ~8 % of the encode time, a diagnostic timed as coding)."""
        if self._pending_estimates:
            import torch

            extras: list[dict[str, float]] = [{} for _ in self._pending_sizes]
            with torch.no_grad():
                for net, y_hat, idx in self._pending_estimates:
                    est_bits = -torch.log2(net.density.likelihood(y_hat)).sum(dim=(1, 2, 3)).cpu()
                    for j, i in enumerate(idx):
                        h, w = self._pending_sizes[i]
                        extras[i] = {"est_bpp": float(est_bits[j]) / (h * w)}
            self._extras, self._pending_estimates = extras, []
        return self._extras

    @last_batch_extras.setter
    def last_batch_extras(self, value: list[dict[str, float]] | None) -> None:
        self._extras, self._pending_estimates = value, []

    @classmethod
    def _read_model(cls, path: Path) -> tuple[Any, Any]:
        """-> (network, EntropyTables)."""
        from lcbench.autoencoder.weights import WeightsError, load

        try:
            return load(path)
        except WeightsError as exc:
            raise ModelFileError(str(exc)) from exc

    @classmethod
    def _bitstream_format_version(cls) -> int:
        from lcbench.autoencoder.bitstream import FORMAT_VERSION

        return FORMAT_VERSION

    # -- coding (encode/decode of one image go through these) ---------------------------------
    def encode_batch(self, images: Sequence[np.ndarray], rate: float) -> list[bytes]:
        """Encode images with one model; on CUDA images of equal padded size share one network pass
        (on the CPU one image at a time: see learned_batching.network_batches)."""
        import torch
        from lcbench.autoencoder.bitstream import Header, pack

        for im in images:
            check_image(im, self.name)
        model_id = self._model_id(rate)
        net, tables, sha = self._model(model_id)
        out: list[bytes] = [b""] * len(images)
        pending = []
        for idx in network_batches([im.shape[:2] for im in images], PAD_MULTIPLE, self.device):
            batch = torch.from_numpy(np.stack([pad_image(images[i], PAD_MULTIPLE) for i in idx])).permute(0, 3, 1, 2)
            with torch.no_grad():
                y_hat = torch.round(net.analyse(batch.to(self.device)))
            latents = y_hat.cpu().numpy().astype(np.int32)
            for j, i in enumerate(idx):
                h, w = images[i].shape[:2]
                out[i] = pack(Header(model_id, bytes.fromhex(sha[:8]), h, w), tables.encode(latents[j]))
            pending.append((net, y_hat, idx))
        # est_bpp is computed when last_batch_extras is read, outside the timed encode
        self._extras, self._pending_estimates = None, pending
        self._pending_sizes = [im.shape[:2] for im in images]
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
            self._check_weights_tag(header.model_id, header.weights_tag, sha)
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




