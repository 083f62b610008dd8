"""Latent traversals: decode ``mu + t * direction`` for a node's patch (Keel et al. 2025, section 3.4, Fig. 4).

The directions are stored in the bundle (``latent_directions``): the mean latent code of the largest quarter
of the training cross-sections minus that of the smallest quarter ("growth"), and likewise for border
irregularity. ``t = 1`` moves a node by that whole quartile-to-quartile difference, so the symmetric range
below goes from a clearly smaller/smoother to a clearly larger/more irregular version of the same node,
with the node's own reconstruction in the middle frame. Latent codes and directions belong to the primary
ensemble member (members' latent spaces are not aligned).
"""

from __future__ import annotations

import numpy as np
import torch

from ..bundle import ModelBundle
from ..errors import BundleError

DIRECTIONS = ("growth", "border_irregularity")
TRAVERSAL_STEPS: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


def latent_direction(bundle: ModelBundle, name: str, latent_dim: int) -> torch.Tensor:
    values = bundle.config.latent_directions.get(name)
    if values is None or len(values) != latent_dim:
        raise BundleError(bundle.path, f"latent direction {name!r} is missing or does not have {latent_dim} values")
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def traverse(bundle: ModelBundle, patches: torch.Tensor, steps: tuple[float, ...] = TRAVERSAL_STEPS
             ) -> dict[str, np.ndarray]:
    """Decode ``mu + t * direction`` of each patch for every step ``t``.

    Args:
        bundle: the loaded bundle (its primary member and latent directions).
        patches: model-ready patches (N, 1, S, S).
        steps: the multiples of each direction.

    Returns:
        ``{direction: frames (N, F, S, S) float32 in [0, 1]}``.
    """
    n = patches.shape[0]
    if n == 0:
        return {name: np.zeros((0, len(steps), *patches.shape[-2:]), np.float32) for name in DIRECTIONS}
    mu = bundle.ensemble.encode(patches).mu.cpu()  # (N, D) of the primary member
    t = torch.as_tensor(steps, dtype=torch.float32)
    out = {}
    for name in DIRECTIONS:
        direction = latent_direction(bundle, name, mu.shape[1])
        codes = mu[:, None, :] + t[None, :, None] * direction[None, None, :]  # (N, F, D)
        decoded = bundle.ensemble.decode(codes.reshape(n * len(steps), -1)).cpu()  # (N * F, 1, S, S)
        out[name] = decoded.reshape(n, len(steps), *decoded.shape[-2:]).numpy().astype(np.float32)
    return out
