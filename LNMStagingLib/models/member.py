"""Ensemble members: a bundle's VAE + multiple-instance classifier, or any encoder (or none) + classifier."""

from __future__ import annotations

import torch
from torch import nn

from .mil import MILConfig, MILModel
from .vae import GRADCAM_LAYER, VAE, VAEConfig

MEMBER_GRADCAM_LAYER = f"vae.{GRADCAM_LAYER}"
"""Dotted name of the last spatial encoder block inside a :class:`ModelMember` (for MONAI's GradCAM)."""


def mean_patch_probability(classifiers, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The mean over ``classifiers`` of their patch probabilities (N,): a member's node score when it has heads.

    Args:
        classifiers: MIL classifiers of one member (its heads, or its one ``mil``).
        latent: (N, D) latent codes; features: (N, F) normalised features.

    Returns:
        (N,) probabilities.
    """
    return torch.stack([torch.sigmoid(mil.patch_logits(latent, features)) for mil in classifiers]).mean(0)


class ModelMember(nn.Module):
    """``vae`` + ``mil``. ``forward(patches, features)`` gives per-patch logits (N, 1) for Grad-CAM.

    ``patches`` (N, 1, S, S) in [0, 1]; ``features`` (N, F) already normalised to [0, 1].

    ``heads``: ``n_heads`` classifiers of the same architecture (the member's inner-fold classifiers, each
    calibrated on its own held-out patients); when there are any, the member's outputs are their calibrated mean
    (:class:`~LNMStagingLib.models.ensemble.Ensemble`) and ``mil`` (retrained on all the member's patients) is kept
    but gives no output: the explanations use the heads too (:meth:`patch_logits`). Their weights are ``heads.<i>.*`` tensors of the member's file.
    """

    def __init__(self, vae_config: VAEConfig, mil_config: MILConfig, n_heads: int = 0) -> None:
        super().__init__()
        self.vae = VAE(vae_config)
        self.mil = MILModel(mil_config)
        self.heads = nn.ModuleList([MILModel(mil_config) for _ in range(n_heads)])

    def latent(self, patches: torch.Tensor) -> torch.Tensor:
        """Latent means (N, D) of the VAE."""
        return self.vae.encode(patches)[0]

    def patch_logits(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Per-patch logit (N,) of the classifiers whose outputs the member reports.

        With heads: the logit of the heads' mean patch probability, the same mean the ensemble reports as the
        node probability, so the heatmap and the traversals explain the number shown, not ``mil`` (which then
        gives no output). Without heads: ``mil``'s patch logit.
        """
        if len(self.heads) == 0:
            return self.mil.patch_logits(latent, features)
        mean = mean_patch_probability(self.heads, latent, features).clamp(1e-7, 1.0 - 1e-7)
        return torch.log(mean) - torch.log1p(-mean)

    def forward(self, patches: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.patch_logits(self.latent(patches), features).unsqueeze(1)


class EncoderMember(nn.Module):
    """A fitted model during training: any encoder with ``encode`` (a VAE, a CNN) or none (size-only), + ``mil``.

    Args:
        encoder: the patch encoder, or None when the classifier uses the size/border features only.
        mil: the multiple-instance classifier.
        heads: classifiers whose calibrated mean is the member's output (see :class:`ModelMember`), or none.
    """

    def __init__(self, encoder: nn.Module | None, mil: MILModel, heads: list[MILModel] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.mil = mil
        self.heads = nn.ModuleList(heads or [])

    def latent(self, patches: torch.Tensor) -> torch.Tensor | None:
        """Latent means (a VAE) or pooled features (a CNN) (N, D); None without an encoder."""
        if self.encoder is None:
            return None
        self.encoder.eval()
        codes = self.encoder.encode(patches)
        return codes[0] if isinstance(codes, tuple) else codes
