"""One trained model (an ensemble member): a VAE encoder/decoder and the multiple-instance classifier."""

from __future__ import annotations

import torch
from torch import nn

from .mil import MILConfig, MILModel
from .vae import GRADCAM_LAYER, VAE, VAEConfig

MEMBER_GRADCAM_LAYER = f"vae.{GRADCAM_LAYER}"
"""Dotted name of the last spatial encoder block inside a :class:`ModelMember` (for MONAI's GradCAM)."""


class ModelMember(nn.Module):
    """``vae`` + ``mil``. ``forward(patches, features)`` gives per-patch logits (N, 1) for Grad-CAM.

    ``patches`` (N, 1, S, S) in [0, 1]; ``features`` (N, F) already normalised to [0, 1].
    """

    def __init__(self, vae_config: VAEConfig, mil_config: MILConfig) -> None:
        super().__init__()
        self.vae = VAE(vae_config)
        self.mil = MILModel(mil_config)

    def forward(self, patches: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(patches)
        return self.mil.patch_logits(mu, features).unsqueeze(1)
