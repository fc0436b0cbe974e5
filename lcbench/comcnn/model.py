"""ComCNN and RecCNN (Jiang et al., IEEE TCSVT 2017), reduced for CPU training.

Paper/WC layout: ComCNN = conv3x3 64 + ReLU, conv3x3 64 stride 2 (+ BN) + ReLU, conv3x3 -> c;
RecCNN = 20 layers of 3x3 convs, 64 channels, BN, predicting a residual added to the
bicubic-upsampled decoded image.

Deviations here, all for a short CPU training budget (reference notes section 5):
- 32 channels and 10 RecCNN layers (``ModelConfig``), ComCNN 3 layers as in the paper;
- no batch normalisation (WC's ComCNN has none either; BN gains little at this depth and
  batch size and makes eval differ from training);
- ComCNN predicts a residual on a 2x2 average of the input and its last layer starts small,
  so training starts near a plain box downscale instead of from noise;
- colour: 3 channels in and out (WC works on grey images).
Images are float tensors in 0..1, N x 3 x H x W.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    channels: int = 32
    rec_layers: int = 10
    com_layers: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ComCNN config keys {sorted(unknown)}")
        return cls(**{k: int(v) for k, v in d.items()})


def _he_init(module: nn.Module) -> None:
    # He (Kaiming) init for the ReLU layers: PyTorch's default init shrinks activations about
    # sixfold in variance per layer, so a 10-layer stack barely passes a gradient at first
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _small_output_layer(channels: int) -> nn.Conv2d:
    # default init scaled by 0.1: training starts near the plain (box / bicubic) path but the
    # layers below still get gradients from the first step (an all-zero layer would block them)
    conv = nn.Conv2d(channels, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(0.1)
        conv.bias.zero_()
    return conv


class ComCNN(nn.Module):
    """Full-resolution image -> compact image of half width and height (0..1, 3 channels)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.com_layers < 3:
            raise ValueError("ComCNN needs at least 3 layers (in, stride-2, out)")
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.com_layers - 3):
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        _he_init(self.body)
        self.out = _small_output_layer(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) + self.out(self.body(x))


class RecCNN(nn.Module):
    """Bicubic-upsampled decoded image -> restored image (input + predicted residual)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.rec_layers < 2:
            raise ValueError("RecCNN needs at least 2 layers")
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.rec_layers - 2):
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        _he_init(self.body)
        self.out = _small_output_layer(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.body(x))


class ComRecPair(nn.Module):
    """Both networks in one module so one state_dict holds the trained pair."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.com = ComCNN(cfg)
        self.rec = RecCNN(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
