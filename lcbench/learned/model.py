"""The content-weighted (importance map) compression network of Li et al., CVPR 2018.

Structure after the authors' Caffe release (limuhit/ImageCompression): an encoder to a
1/8-resolution map of ``n`` sigmoid channels, binarized with a straight-through proxy;
an importance subnet giving p in [0, 1] per location, quantised to ``L`` levels, that
keeps the first (n/L)(q+1) channels; a decoder with depth-to-space (PixelShuffle)
upsampling. Widths are scaled by ``width`` (1.0 = the paper's) so it trains on a CPU.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

# The code map is 1/8 of the image in each direction: inputs are padded to this multiple.
STRIDE = 8


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fix the network's shape (stored beside the weights)."""

    n: int = 128  # code channels per location; raw rate is at most n/64 bpp
    levels: int = 32  # L, importance levels; at least n/L channels are always kept
    width: float = 0.25  # channel width relative to the paper's network

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(n=int(d["n"]), levels=int(d["levels"]), width=float(d["width"]))

    def ch(self, paper_channels: int) -> int:
        return max(4, int(round(paper_channels * self.width)))


class ResBlock(nn.Module):
    """3x3 -> inner + ReLU, 3x3 -> width + ReLU, add the input, ReLU (as in LI's prototxt)."""

    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(width, inner, 3, padding=1)
        self.c2 = nn.Conv2d(inner, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return torch.relu(x + y)


class _Binarize(torch.autograd.Function):
    """Forward: 1 where x > 0.5 else 0. Backward: identity (MC round_layer; x is a sigmoid output)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return (x > 0.5).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _ImportanceMask(torch.autograd.Function):
    """Mask from the importance p: channel k kept iff k < (n/L)(floor(L p) + 1).

    Backward uses the paper's rule: d mask_k / d p = L where L p - 1 <= ceil(k L / n) < L p + 2,
    so only channels near the mask boundary pass gradient to p.
    """

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, n: int, levels: int) -> torch.Tensor:
        ctx.save_for_backward(p)
        ctx.n, ctx.levels = n, levels
        return importance_mask(levels_of(p, levels), n, levels).to(p.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (p,) = ctx.saved_tensors
        n, levels = ctx.n, ctx.levels
        k = torch.arange(n, device=p.device, dtype=p.dtype).view(1, n, 1, 1)
        kk = torch.ceil(k * levels / n)
        lp = levels * p
        near = ((lp - 1 <= kk) & (kk < lp + 2)).to(p.dtype)
        return (grad * near * levels).sum(dim=1, keepdim=True), None, None


def levels_of(p: torch.Tensor, levels: int) -> torch.Tensor:
    """Importance p in [0, 1] -> integer level q in 0..L-1 (p = 1 keeps every channel)."""
    return torch.clamp(torch.floor(p * levels), 0, levels - 1).to(torch.int64)


def importance_mask(q: torch.Tensor, n: int, levels: int) -> torch.Tensor:
    """Boolean mask (B, n, h, w) from levels q (B, 1, h, w): channel k kept iff k < (n/L)(q+1)."""
    k = torch.arange(n, device=q.device).view(1, n, 1, 1)
    return k * levels < n * (q + 1)


class ImportanceMapNet(nn.Module):
    """Encoder, binarizer, importance subnet and decoder of the content-weighted codec."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.ch
        n = config.n
        # Encoder (input scaled to [-1, 1]); the importance branch reads the last res-block.
        self.enc_body = nn.Sequential(
            nn.Conv2d(3, c(128), 8, stride=4, padding=2), nn.ReLU(),
            ResBlock(c(128), c(128)),
            nn.Conv2d(c(128), c(256), 4, stride=2, padding=1), nn.ReLU(),
            ResBlock(c(256), c(128)),
            nn.Conv2d(c(256), c(256), 3, padding=1), nn.ReLU(),
            ResBlock(c(256), c(128)),
        )
        self.enc_code = nn.Conv2d(c(256), n, 1)
        self.importance = nn.Sequential(
            nn.Conv2d(c(256), c(128), 3, padding=1), nn.ReLU(),
            nn.Conv2d(c(128), 1, 1),
        )
        # Decoder: depth-to-space x2 then x4, in PyTorch PixelShuffle order (MC dtow_layer).
        self.dec = nn.Sequential(
            nn.Conv2d(n, c(512), 3, padding=1), nn.ReLU(),
            ResBlock(c(512), c(128)),
            nn.Conv2d(c(512), c(512), 3, padding=1), nn.ReLU(),
            ResBlock(c(512), c(128)),
            nn.PixelShuffle(2),
            nn.Conv2d(c(512) // 4, c(256), 3, padding=1), nn.ReLU(),
            ResBlock(c(256), c(128)),
            nn.PixelShuffle(4),
            nn.Conv2d(c(256) // 16, c(32), 3, padding=1), nn.ReLU(),
            nn.Conv2d(c(32), 3, 1),
        )

    # -- pieces used by the codec ------------------------------------------------------
    @staticmethod
    def scale_in(x_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 or float in 0..255 -> [-1, 1] as in LI: (x - 127.5) / 127.5."""
        return (x_uint8.float() - 127.5) / 127.5

    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled image -> (sigmoid code probabilities (B, n, h, w), importance p (B, 1, h, w))."""
        f = self.enc_body(x)
        return torch.sigmoid(self.enc_code(f)), torch.sigmoid(self.importance(f))

    def synthesise(self, masked_bits: torch.Tensor) -> torch.Tensor:
        """Masked binary code (B, n, h, w) -> image in [-1, 1] scale (unclamped)."""
        return self.dec(masked_bits)

    # -- training forward ----------------------------------------------------------------
    def forward(self, x: torch.Tensor, use_map: bool = True) -> dict[str, torch.Tensor]:
        code, p = self.analyse(x)
        bits = _Binarize.apply(code)
        if use_map:
            mask = _ImportanceMask.apply(p, self.config.n, self.config.levels)
            bits = bits * mask
        else:
            mask = torch.ones_like(bits)
        return {"x_hat": self.synthesise(bits), "p": p, "mask": mask, "bits": bits}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
