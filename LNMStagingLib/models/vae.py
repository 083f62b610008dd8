"""Variational autoencoders of Keel et al. (MIUA 2025; BMVC 2023): Gaussian and Dirichlet latents.

Architecture (paper, section 3.2): an encoder of 6 blocks (Conv2d, BatchNorm2d, GELU), two convolutional
heads for the latent mean and log-variance, and a symmetric decoder with bilinear x2 upsampling between
blocks and a sigmoid output. The latent dimension is ``base * latent_size``.

The Dirichlet VAE (BMVC 2023) uses the Laplace approximation of the Dirichlet distribution in the softmax
basis (Srivastava and Sutton, 2017): the encoder still predicts a Gaussian (mean, log-variance) in logit
space, the decoder receives ``softmax(z)`` (a point on the simplex), and the KL divergence is taken against
the Gaussian that approximates ``Dirichlet(alpha_target)``. ``encode`` returns the logit-space mean for both
kinds, and ``decode`` accepts logit-space codes for both kinds, so that ``decode(encode(x))`` round-trips.

Grad-CAM: the last spatial block of the encoder is ``VAE.encoder.blocks[-1]``; its dotted module name,
relative to the VAE, is :data:`GRADCAM_LAYER`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..fromdict import from_dict

VAEKind = Literal["gaussian", "dirichlet"]
VAE_KINDS: tuple[str, ...] = get_args(VAEKind)
GRADCAM_LAYER = "encoder.blocks.5"
"""Dotted name (relative to a :class:`VAE`) of the last spatial encoder block, for Grad-CAM."""


@dataclass
class VAEConfig:
    """Architecture of a :class:`VAE`; JSON round trip with :meth:`to_dict` / :meth:`from_dict`."""

    kind: VAEKind = "gaussian"  # "gaussian" or "dirichlet"
    in_channels: int = 1
    patch_size: int = 32
    base: int = 12  # feature maps of the first block
    latent_size: int = 8  # latent dimension = base * latent_size
    kernel_size: int = 3
    channel_mults: tuple[int, ...] = (1, 1, 2, 2, 4, 4)  # 6 encoder blocks
    strides: tuple[int, ...] = (1, 2, 1, 2, 1, 1)
    dirichlet_alpha: float = 0.5  # target concentration of the Dirichlet prior (dirichlet kind only)

    @property
    def latent_dim(self) -> int:
        return self.base * self.latent_size

    @property
    def bottleneck_size(self) -> int:
        size = self.patch_size
        for stride in self.strides:
            size //= stride
        return size

    def validate(self) -> None:
        if self.kind not in VAE_KINDS:
            raise ValueError(f"VAE kind must be 'gaussian' or 'dirichlet', not {self.kind!r}")
        if len(self.channel_mults) != 6 or len(self.strides) != 6:
            raise ValueError("the VAE has exactly 6 encoder blocks (channel_mults and strides of length 6)")
        if self.patch_size % math.prod(self.strides):
            raise ValueError("patch_size must be divisible by the product of the strides")
        if self.kind == "dirichlet" and self.dirichlet_alpha <= 0:
            raise ValueError("dirichlet_alpha must be > 0")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        data["strides"] = list(self.strides)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        def ints(values) -> tuple[int, ...]:
            return tuple(int(v) for v in values)

        config = from_dict(cls, data, {"channel_mults": ints, "strides": ints})
        config.validate()
        return config


def conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv2d -> BatchNorm2d -> GELU (the paper's block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
    )


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        channels = [config.base * m for m in config.channel_mults]
        blocks = []
        previous = config.in_channels
        for out_channels, stride in zip(channels, config.strides, strict=True):
            blocks.append(conv_block(previous, out_channels, config.kernel_size, stride))
            previous = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Decoder(nn.Module):
    """Mirror of the encoder: bilinear x2 upsampling where the encoder had a stride of 2."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        channels = [config.base * m for m in config.channel_mults]
        self.project = nn.Sequential(
            nn.ConvTranspose2d(config.latent_dim, channels[-1], config.bottleneck_size, bias=False),
            nn.BatchNorm2d(channels[-1]),
            nn.GELU(),
        )
        layers: list[nn.Module] = []
        reversed_channels = channels[::-1]
        reversed_strides = list(config.strides[::-1])
        previous = channels[-1]
        for index, out_channels in enumerate(reversed_channels):
            layers.append(conv_block(previous, out_channels, config.kernel_size))
            if reversed_strides[index] == 2:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            previous = out_channels
        self.blocks = nn.Sequential(*layers)
        self.output = nn.Conv2d(previous, config.in_channels, config.kernel_size, padding=config.kernel_size // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z[:, :, None, None])
        return torch.sigmoid(self.output(self.blocks(x)))


class VAE(nn.Module):
    """Gaussian or Dirichlet VAE on (N, 1, patch_size, patch_size) patches with values in [0, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        size = config.bottleneck_size
        self.mu_head = nn.Conv2d(self.encoder.out_channels, config.latent_dim, size)
        self.logvar_head = nn.Conv2d(self.encoder.out_channels, config.latent_dim, size)
        self.decoder = Decoder(config)
        if config.kind == "dirichlet":
            prior_mu, prior_var = dirichlet_laplace_prior(config.latent_dim, config.dirichlet_alpha)
            self.register_buffer("prior_mu", prior_mu, persistent=False)
            self.register_buffer("prior_var", prior_var, persistent=False)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last spatial block of the encoder (named :data:`GRADCAM_LAYER`)."""
        return self.encoder.blocks[-1]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance), each (N, latent_dim); logit space for the Dirichlet kind."""
        h = self.encoder(x)
        mu = self.mu_head(h).flatten(1)
        logvar = self.logvar_head(h).flatten(1).clamp(-12.0, 8.0)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latent codes (logit space for the Dirichlet kind) to (N, 1, H, W) images in [0, 1]."""
        if self.config.kind == "dirichlet":
            z = torch.softmax(z, dim=1)
        return self.decoder(z)

    def reparameterise(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction, mu, logvar); samples z in training mode, uses mu in eval mode."""
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar)
        return self.decode(z), mu, logvar

    def kld(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL divergence to the prior per sample (N,)."""
        if self.config.kind == "gaussian":
            return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        var = logvar.exp()
        prior_var = self.prior_var
        return 0.5 * torch.sum(
            var / prior_var + (mu - self.prior_mu).pow(2) / prior_var - 1 + torch.log(prior_var) - logvar, dim=1
        )


def dirichlet_laplace_prior(dim: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the Gaussian (softmax basis) that approximates Dirichlet(alpha * 1)."""
    a = torch.full((dim,), float(alpha))
    mu = torch.log(a) - torch.log(a).mean()
    var = (1.0 / a) * (1 - 2.0 / dim) + (1.0 / a).sum() / dim**2
    return mu, var


# ----------------------------------------------------------------------------------------------- losses
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


_WINDOW_CACHE: dict[tuple[str, torch.dtype], torch.Tensor] = {}


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "per_image") -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03).

    ``x``, ``y``: (N, C, H, W). Returns (N,) for ``reduction="per_image"``, a scalar for ``"mean"``.
    Valid convolution (no padding), like the reference implementations (pytorch-msssim, torchmetrics).
    """
    key = (str(x.device), x.dtype)
    window = _WINDOW_CACHE.get(key)
    if window is None:
        window = _gaussian_window().to(device=x.device, dtype=x.dtype)
        _WINDOW_CACHE[key] = window
    channels = x.shape[1]
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    # The five local statistics in one grouped convolution: one kernel launch and one backward pass instead
    # of five (SSIM was 40% of a VAE training step); each group still sees only its own map.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    local = F.conv2d(stacked, window.expand(5 * channels, 1, -1, -1), groups=5 * channels)
    mu_x, mu_y, exx, eyy, exy = local.split(channels, dim=1)
    sxx = exx - mu_x.pow(2)
    syy = eyy - mu_y.pow(2)
    sxy = exy - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (sxx + syy + c2))
    per_image = value.flatten(1).mean(1)
    return per_image.mean() if reduction == "mean" else per_image


def kld_annealing(epoch: int, anneal_epochs: int, rate: float = 5.0) -> float:
    """Exponential KLD annealing a(t): 0 at epoch 0, rising exponentially to 1 at ``anneal_epochs``."""
    if anneal_epochs <= 0:
        return 1.0
    t = min(max(epoch, 0) / anneal_epochs, 1.0)
    return float((math.exp(rate * t) - 1.0) / (math.exp(rate) - 1.0))


@dataclass
class VAELossConfig:
    """Weights of Eq. 1: alpha*lambda*L1 + (1-alpha)*gamma*(1-SSIM) + a(t)*beta*KLD (batch means)."""

    alpha: float = 0.5
    lam: float = 10.0
    gamma: float = 1.0
    beta: float = 1e-3
    anneal: bool = True
    anneal_epochs: int = 20
    anneal_rate: float = 5.0
    extra: dict = field(default_factory=dict)


def vae_loss(
    model: VAE,
    x: torch.Tensor,
    reconstruction: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    loss_config: VAELossConfig,
    annealing: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's Eq. 1, averaged over the batch. Returns (loss, parts for logging)."""
    l1 = F.l1_loss(reconstruction, x)
    one_minus_ssim = 1.0 - ssim(reconstruction, x, reduction="mean")
    kld = model.kld(mu, logvar).mean()
    a = annealing if loss_config.anneal else 1.0
    loss = (
        loss_config.alpha * loss_config.lam * l1
        + (1 - loss_config.alpha) * loss_config.gamma * one_minus_ssim
        + a * loss_config.beta * kld
    )
    parts = {"l1": float(l1.detach()), "ssim": float(1 - one_minus_ssim.detach()), "kld": float(kld.detach()), "a": a}
    return loss, parts
