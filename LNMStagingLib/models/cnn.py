"""CNN baseline encoder: a MONAI DenseNet (or ResNet) trained from scratch on patch labels.

Pretrained ImageNet weights cannot be downloaded here, so the encoder starts from random weights. Its
globally pooled features replace the VAE latent mean in the same multiple-instance head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..fromdict import from_dict


@dataclass
class CNNConfig:
    arch: str = "densenet"  # "densenet" | "resnet"
    init_features: int = 16
    growth_rate: int = 8
    block_config: tuple[int, ...] = (3, 3, 3)
    patch_size: int = 32

    def to_dict(self) -> dict:
        data = asdict(self)
        data["block_config"] = list(self.block_config)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CNNConfig:
        return from_dict(cls, data, {"block_config": tuple})


class CNNEncoder(nn.Module):
    """``encode(x) -> (N, feature_dim)`` pooled features; ``forward(x) -> (N,)`` patch logits."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        if config.arch == "densenet":
            from monai.networks.nets import DenseNet

            net = DenseNet(spatial_dims=2, in_channels=1, out_channels=1, init_features=config.init_features,
                           growth_rate=config.growth_rate, block_config=config.block_config, bn_size=2)
            self.backbone = net.features
            self.feature_dim = net.class_layers.out.in_features
        elif config.arch == "resnet":
            from monai.networks.nets import ResNet

            net = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(16, 32, 64, 128), spatial_dims=2,
                         n_input_channels=1, num_classes=1, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True)
            net.fc = nn.Identity()
            self.backbone = net
            self.feature_dim = 128
        else:
            raise ValueError(f"unknown CNN architecture {config.arch!r}")
        self.pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.feature_dim, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)
        return h if h.ndim == 2 else self.pool(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)).squeeze(-1)
