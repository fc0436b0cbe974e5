"""Network of the autoencoder codec: transforms and the factorised entropy model.

    x (3 x H x W, scaled to 0..1)
      -> analysis g_a: 4 x [5x5 conv, stride 2] with GDN between them  -> y (M x H/16 x W/16)
      -> quantise: y_hat = round(y)         (training: y + uniform noise, see ``forward``)
      -> synthesis g_s: 4 x [5x5 transposed conv, stride 2] with inverse GDN -> x_hat

The rate is -log2 of the probability the entropy model gives y_hat. The entropy model is
"factorised": every latent channel c has its own learned density p_c, the same at every
position, and positions/channels are independent. That is the simplest learned prior; the
codec turns it into fixed integer tables after training (tables.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    channels: int = 64  # N: hidden channels of both transforms
    latent: int = 96  # M: latent channels (each gets its own density)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls)})


PAD_MULTIPLE = 16  # four stride-2 layers: image sides must be multiples of 2**4


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé 2016): y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

    ``inverse=True`` multiplies instead of dividing (IGDN, used in the synthesis transform).
    beta and gamma must stay positive: they are stored as square roots and squared here.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.sqrt(0.1 * torch.eye(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_sqrt ** 2 + 1e-6
        gamma = (self.gamma_sqrt ** 2)[:, :, None, None]  # a 1x1 convolution over x^2
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class FactorizedDensity(nn.Module):
    """One learned univariate density per channel (Ballé et al. 2018, appendix 6.1).

    The network models the cumulative distribution c(y) directly: a small per-channel
    chain of 1 -> 3 -> 3 -> 3 -> 1 "layers" y <- h(H y + b) with h(v) = v + a * tanh(v),
    H >= 0 so c is increasing, and a sigmoid at the end so it runs from 0 to 1.
    The probability of an integer k is then c(k + 0.5) - c(k - 0.5).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            # softplus(m) = 1 / (scale * dims[i+1]) initially: a wide density, as in the paper
            init = torch.log(torch.expm1(torch.tensor(1 / scale / dims[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), float(init))))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, v: torch.Tensor) -> torch.Tensor:
        """v: (C, 1, n) values per channel -> (C, 1, n) logits of c(v)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(m), v) + b
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """p(y) = c(y + 0.5) - c(y - 0.5) for y of shape (B, C, h, w); same shape out."""
        b, c, h, w = y.shape
        v = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        # Subtract on the side of the median where the sigmoid is not saturated (numerically stable).
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        p = p.clamp_min(1e-9)  # keeps log2 finite; tables.py also gives every symbol a nonzero count
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)


class AutoEncoder(nn.Module):
    """Analysis transform, synthesis transform and the per-channel density of the latents."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        n, m = config.channels, config.latent
        self.g_a = nn.Sequential(_down(3, n), GDN(n), _down(n, n), GDN(n), _down(n, n), GDN(n), _down(n, m))
        self.g_s = nn.Sequential(_up(m, n), GDN(n, inverse=True), _up(n, n), GDN(n, inverse=True),
                                 _up(n, n), GDN(n, inverse=True), _up(n, 3))
        self.density = FactorizedDensity(m)

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """uint8-valued images (B, 3, H, W), sides multiples of 16 -> unquantised latents y."""
        return self.g_a(x.float() / 255.0)

    def synthesise(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Quantised latents -> images on the 0..255 scale (float, not yet rounded or clipped)."""
        return self.g_s(y_hat) * 255.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: returns the reconstruction (0..1 scale) and the rate in bits per image.

        Rounding has zero gradient, so training replaces it (Ballé 2017):
        - the rate sees y + u, u ~ uniform(-0.5, 0.5): a differentiable stand-in whose
          density is the model's probability of the rounded value;
        - the decoder sees round(y) with the gradient of the identity ("straight through"),
          so it learns from the same values it gets at test time (Minnen & Singh 2020).
        """
        y = self.g_a(x)
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_hat = y + (torch.round(y) - y).detach()
        bits = -torch.log2(self.density.likelihood(noisy)).sum(dim=(1, 2, 3))
        return {"x_hat": self.g_s(y_hat), "bits": bits}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
