"""PyTorch models of LNMStaging: VAEs (Gaussian and Dirichlet), the multiple-instance classifier, a CNN baseline.

Every model is a plain ``torch.nn.Module`` configured by a JSON-serialisable dataclass (``VAEConfig``,
``MILConfig``, ``CNNConfig``); weights are stored with safetensors, never pickled.
"""

from . import calibration, cnn, ensemble, member, mil, vae
from .mil import ClinicalSpec, MILConfig, MILModel
from .vae import GRADCAM_LAYER, VAE, VAEConfig, VAELossConfig, kld_annealing, ssim, vae_loss

__all__ = [
    "calibration",
    "cnn",
    "ensemble",
    "member",
    "mil",
    "vae",
    "GRADCAM_LAYER",
    "VAE",
    "VAEConfig",
    "VAELossConfig",
    "ClinicalSpec",
    "MILConfig",
    "MILModel",
    "kld_annealing",
    "ssim",
    "vae_loss",
]
