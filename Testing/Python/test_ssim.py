"""SSIM as one grouped convolution gives what one convolution per local statistic gives (values and gradients)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from LNMStagingLib.models.vae import ssim


def _ssim_separately(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM with five separate depthwise convolutions (the textbook formulation)."""
    coords = torch.arange(11, dtype=x.dtype) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    channels = x.shape[1]
    w = (g[:, None] * g[None, :])[None, None].expand(channels, 1, -1, -1)
    mu_x, mu_y = F.conv2d(x, w, groups=channels), F.conv2d(y, w, groups=channels)
    sxx = F.conv2d(x * x, w, groups=channels) - mu_x**2
    syy = F.conv2d(y * y, w, groups=channels) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=channels) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return value.flatten(1).mean(1)


def test_grouped_ssim_equals_separate_convolutions_to_1e7():
    generator = torch.Generator().manual_seed(0)
    for channels in (1, 2):
        x = torch.rand(16, channels, 32, 32, generator=generator)
        y = (x + 0.2 * torch.randn(16, channels, 32, 32, generator=generator)).clamp(0, 1)
        assert torch.allclose(ssim(x, y), _ssim_separately(x, y), rtol=0, atol=1e-7)
        assert abs(float(ssim(x, y, reduction="mean")) - float(_ssim_separately(x, y).mean())) < 1e-7
    assert torch.allclose(ssim(x, x), torch.ones(16), atol=1e-6)


def test_grouped_ssim_gradients_equal_separate_convolutions():
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(8, 1, 32, 32, generator=generator)
    start = torch.rand(8, 1, 32, 32, generator=generator)
    grads = []
    for function in (lambda a: ssim(a, target, reduction="mean"), lambda a: _ssim_separately(a, target).mean()):
        x = start.clone().requires_grad_(True)
        function(x).backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-8)
