"""Grad-CAM of each node's malignancy score on its patch (MONAI ``GradCAM``).

Target layer: ``bundle.config.gradcam_layer`` (the last spatial block of the VAE encoder, as in Keel et al.
2025, section 3.4); target score: the member's patch logit (the node malignancy score). Maps are computed
for every ensemble member and averaged, each scaled to [0, 1] by its own maximum first (Grad-CAM magnitudes
are not comparable between models).

MONAI registers its hooks on the module permanently, so Grad-CAM runs on private copies of the members,
cached per loaded bundle: the bundle's own members stay hook-free for plain inference.
"""

from __future__ import annotations

import copy
import weakref

import numpy as np
import torch

from ..bundle import ModelBundle
from ..errors import BundleError

_CAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Per-sample division by the maximum (0 stays 0: no evidence); MONAI's default normaliser would flip
    the map (it maps max to 0)."""
    flat = maps.reshape(maps.shape[0], -1)
    peak = flat.max(dim=1).values.clamp(min=1e-12)
    scaled = flat / peak[:, None]
    return scaled.reshape(maps.shape).detach()


def _cams(bundle: ModelBundle) -> list:
    cams = _CAMS.get(bundle)
    if cams is not None:
        return cams
    from monai.visualize import GradCAM

    layer = bundle.config.gradcam_layer
    cams = []
    for member in bundle.ensemble.members:
        names = {name for name, _ in member.named_modules()}
        if layer not in names:
            raise BundleError(bundle.path, f"Grad-CAM layer {layer!r} does not exist in the model")
        private = copy.deepcopy(member).eval()
        for parameter in private.parameters():
            parameter.requires_grad_(True)  # the backward hook needs a graph through the layer
        cams.append(GradCAM(nn_module=private, target_layers=layer, postprocessing=_scale_to_unit))
    _CAMS[bundle] = cams
    return cams


def node_gradcam(bundle: ModelBundle, patches: torch.Tensor, raw_features: np.ndarray) -> np.ndarray:
    """Ensemble-mean Grad-CAM maps of the node malignancy score.

    Args:
        bundle: the loaded bundle.
        patches: model-ready patches (N, 1, S, S).
        raw_features: (N, F) raw features of the patches.

    Returns:
        (N, S, S) float32 in [0, 1].
    """
    if patches.shape[0] == 0:
        return np.zeros((0, *patches.shape[-2:]), np.float32)
    total = torch.zeros((patches.shape[0], 1, *patches.shape[-2:]))
    for index, cam in enumerate(_cams(bundle)):
        features = bundle.ensemble.normalise_features(raw_features, index)
        with torch.enable_grad():
            maps = cam(patches.detach(), class_idx=0, features=features)
        total += maps.cpu()
    return (total[:, 0] / bundle.n_members).numpy().astype(np.float32)
