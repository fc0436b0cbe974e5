"""The ``autoencoder`` baseline: the simplest learned codec, written to be read.

Ballé et al. (ICLR 2017) "End-to-end optimized image compression", small version:

- model.py     analysis/synthesis transforms (strided convolutions + GDN) and the
               factorised entropy model (one learned density per latent channel)
- tables.py    integer probability tables made once after training, and the range coder
               (constriction) that codes latents with them: decoding is exact everywhere
- bitstream.py the header (magic, version, model id, weights tag, image size)
- weights.py   the shipped weights file (read with ``torch.load(..., weights_only=True)``)
- train.py     training: rate + lambda * distortion with additive uniform noise
- train_cli.py ``lcbench train autoencoder`` options

The codec itself (registration, padding, batching) is ``codecs/autoencoder.py``; the
walk-through is ``docs/learned-codec-tutorial.md``.
"""
