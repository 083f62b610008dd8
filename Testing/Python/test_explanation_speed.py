"""The faster explanation paths (issue 15) compute what the plain ones do: channels-last weights only for the
time of a block, integrated gradients in batches equal to one pass over all nodes."""

from __future__ import annotations

import numpy as np
import torch

from LNMStagingLib.models.ensemble import channels_last
from LNMStagingLib.models.member import ModelMember
from LNMStagingLib.models.mil import MILConfig
from LNMStagingLib.models.vae import VAEConfig
from LNMStagingLib.prediction import gradcam
from LNMStagingLib.prediction.stages import prepare


def _member(kind: str = "gaussian", seed: int = 0) -> ModelMember:
    torch.manual_seed(seed)
    vae = VAEConfig(kind=kind, base=4)
    return ModelMember(vae, MILConfig(latent_dim=vae.latent_dim)).eval()


def test_channels_last_gives_the_same_outputs_and_restores_the_layout():
    member = _member()
    x, features = torch.rand(5, 1, 32, 32), torch.rand(5, 5)
    with torch.no_grad():
        expected = member(x, features)
        with channels_last(member):
            assert member.vae.encoder.blocks[1][0].weight.is_contiguous(memory_format=torch.channels_last)
            inside = member(x, features)
    assert all(p.is_contiguous() for p in member.parameters())
    np.testing.assert_allclose(inside.numpy(), expected.numpy(), atol=1e-5)


def test_batched_channels_last_heatmaps_equal_one_plain_pass(phantom_case, tiny_bundle, monkeypatch):
    inputs = prepare(phantom_case, tiny_bundle, lambda *_: None)
    primary = [inputs.patch_set.primary_index(m.node_id) for m in inputs.usable]
    patches, raw = inputs.model_input[primary], inputs.features[primary]
    assert len(primary) > 2
    monkeypatch.setattr(gradcam, "IG_BATCH", 2 * gradcam.IG_STEPS)  # two nodes a pass: several passes
    batched = gradcam.node_gradcam(tiny_bundle, patches, raw)
    expected = torch.zeros(batched.shape)
    for index, member in enumerate(tiny_bundle.ensemble.members):  # the plain NCHW pass over every node at once
        features = tiny_bundle.ensemble.normalise_features(raw, index)
        evidence = gradcam.member_attributions(member, patches.detach(), features).clamp(min=0)[:, 0]
        expected += evidence / evidence.reshape(len(evidence), -1).max(1).values.clamp(min=1e-12)[:, None, None]
    np.testing.assert_allclose(batched, (expected / tiny_bundle.n_members).numpy(), atol=1e-5)
    assert batched.max() > 0.5  # a real map, not zeros on both sides
