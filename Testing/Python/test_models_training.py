"""VAEs, the multiple-instance classifier and their training, on small synthetic data (seconds on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LNMStagingLib.data.lidc import build_dataset
from LNMStagingLib.models.mil import PAPER_CLINICAL, MILConfig, MILModel, clinical_vector
from LNMStagingLib.models.vae import GRADCAM_LAYER, VAE, VAEConfig, kld_annealing, ssim
from LNMStagingLib.synthetic.nodules import make_synthetic_nodules
from LNMStagingLib.training.vae_train import VAETrainConfig, reconstruction_metrics, train_vae

# tiny tensors: one torch thread is faster, and steadier on a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset():
    arrays, diameters = make_synthetic_nodules(n_patients=40, seed=3)
    return build_dataset(arrays, diameters, patch_size=32)


@pytest.mark.parametrize("kind", ["gaussian", "dirichlet"])
def test_vae_architecture(kind):
    config = VAEConfig(kind=kind, base=4, latent_size=5)
    model = VAE(config).eval()
    assert config.latent_dim == 20
    encoder_blocks = list(model.encoder.blocks)
    assert len(encoder_blocks) == 6
    assert all(isinstance(b[0], torch.nn.Conv2d) and isinstance(b[1], torch.nn.BatchNorm2d)
               and isinstance(b[2], torch.nn.GELU) for b in encoder_blocks)
    assert dict(model.named_modules())[GRADCAM_LAYER] is model.gradcam_layer
    ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 2 and all(u.mode == "bilinear" and u.scale_factor == 2 for u in ups)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        rec, mu, logvar = model(x)
    assert rec.shape == x.shape and mu.shape == (3, 20) and logvar.shape == (3, 20)
    assert float(rec.min()) >= 0 and float(rec.max()) <= 1  # sigmoid output
    assert torch.all(model.kld(mu, logvar) >= -1e-4)
    if kind == "dirichlet":  # the decoder sees a point on the simplex
        with torch.no_grad():
            assert torch.allclose(model.decode(mu), model.decoder(torch.softmax(mu, 1)))


def test_ssim_and_annealing():
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    assert float(ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)).mean()) < 0.9
    values = [kld_annealing(e, 10) for e in range(15)]
    assert values[0] == 0.0 and values[10] == 1.0 and values[-1] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert values[5] < 0.5  # exponential: slow start


def test_vae_training_improves_held_out_reconstruction_and_resumes(dataset, tmp_path):
    patients = dataset.patients
    train = torch.as_tensor(dataset.patches[dataset.subset_patients(patients[:30])])
    held_out = torch.as_tensor(dataset.patches[dataset.subset_patients(patients[30:])])
    config = VAEConfig(base=4, latent_size=4)
    untrained = reconstruction_metrics(VAE(config), held_out)
    train_config = VAETrainConfig(epochs=6, min_epochs=6, batch_size=16, lr=1e-2, seed=1)
    model, history = train_vae(train, held_out, config, train_config, checkpoint_dir=tmp_path, progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    trained = reconstruction_metrics(model, held_out)
    assert trained["ssim"] > untrained["ssim"] + 0.3
    assert trained["mse"] < untrained["mse"]
    # resume: a longer run picks up after the 6 checkpointed epochs
    longer = VAETrainConfig(epochs=8, min_epochs=8, batch_size=16, lr=1e-2, seed=1)
    _, resumed = train_vae(train, held_out, config, longer, checkpoint_dir=tmp_path, progress=False)
    assert len(resumed["train_loss"]) == 8 and resumed["train_loss"][:6] == history["train_loss"]


def _bag_batch(b=3, m=15, d=6, f=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(b, m, d, generator=g)
    features = torch.rand(b, m, f, generator=g)
    valid = torch.zeros(b, m, dtype=torch.bool)
    valid[0, :4] = True
    valid[1, :1] = True
    valid[2, :15] = True
    node_index = torch.zeros(b, m, dtype=torch.long)
    node_index[0, :4] = torch.tensor([0, 0, 1, 2])
    node_index[2] = torch.arange(15) // 3
    return latent, features, valid, node_index


def test_mil_combines_patient_mlp_and_largest_node():
    config = MILConfig(latent_dim=6, eta=0.7)
    model = MILModel(config).eval()
    latent, features, valid, node_index = _bag_batch()
    out = model(latent, features, valid, node_index)
    assert torch.allclose(out["final"], 0.7 * out["patient_mlp"] + 0.3 * out["node_max"], atol=1e-6)
    p = out["patch_prob"][0]
    node_means = torch.stack([p[:2].mean(), p[2], p[3]])
    assert torch.allclose(out["node_max"][0], node_means.max(), atol=1e-6)
    assert torch.all(out["patch_prob"][~valid] == 0)
    # padding content never matters
    latent2, features2 = latent.clone(), features.clone()
    latent2[~valid] = 100.0
    features2[~valid] = 5.0
    out2 = model(latent2, features2, valid, node_index)
    assert torch.allclose(out["final"], out2["final"], atol=1e-6)
    for mode, key in (("max", "node_max"), ("mlp", "patient_mlp")):
        ablation = MILModel(MILConfig(latent_dim=6, mode=mode)).eval()
        ablation.load_state_dict(model.state_dict())
        o = ablation(latent, features, valid, node_index)
        assert torch.allclose(o["final"], o[key])


def test_clinical_inputs_have_missingness_indicators():
    vector = clinical_vector(PAPER_CLINICAL, {"age": 59.0, "sex": None})
    assert vector.tolist() == pytest.approx([0.5, 0.0, 0.5, 1.0, 0.5, 1.0])
    vector = clinical_vector(PAPER_CLINICAL, {"age": 100.0, "sex": 0.0, "t_stage": 4})
    assert vector.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    model = MILModel(MILConfig(latent_dim=6, clinical=PAPER_CLINICAL)).eval()
    latent, features, valid, node_index = _bag_batch()
    with pytest.raises(ValueError, match="clinical"):
        model(latent, features, valid, node_index)
    clinical = torch.as_tensor(np.stack([clinical_vector(PAPER_CLINICAL, {})] * 3))
    assert model(latent, features, valid, node_index, clinical)["final"].shape == (3,)


def test_pipeline_learns_on_synthetic_data(dataset):
    from LNMStagingLib.evaluation.metrics import binary_metrics
    from LNMStagingLib.training.config import PipelineConfig
    from LNMStagingLib.training.context import RunContext
    from LNMStagingLib.training.mil_train import MILTrainConfig
    from LNMStagingLib.training.pipeline import fit

    labels = dataset.patient_labels()
    patients = dataset.patients
    train, test = patients[:28], patients[28:]
    assert {labels[p] for p in test} == {0, 1}
    config = PipelineConfig(method="vae", vae=VAEConfig(base=4, latent_size=4),
                            vae_train=VAETrainConfig(epochs=4, min_epochs=2, batch_size=32),
                            mil={"patch_hidden": 16, "patient_hidden": 8}, mil_train=MILTrainConfig(epochs=20),
                            mil_grid=[{"eta": 0.8}, {"eta": 0.5}], inner_folds=2, synthetic_patients=3)
    fitted = fit(dataset, train, config, RunContext(progress=False, log=lambda *_: None))
    assert fitted.selection["overrides"] in config.mil_grid
    assert 1 <= fitted.selection["epochs"] <= 20 and 0 <= fitted.threshold <= 1
    pred = fitted.predict(dataset, test)
    assert binary_metrics(pred["nodule_label"], pred["nodule_prob"])["auc"] > 0.8
    assert binary_metrics(pred["patient_label"], pred["patient_prob"])["auc"] > 0.8


def test_training_is_seeded(dataset):
    x = torch.as_tensor(dataset.patches[:64])
    config = VAEConfig(base=4, latent_size=4)
    runs = [train_vae(x, x[:16], config, VAETrainConfig(epochs=2, min_epochs=2, batch_size=16, seed=7),
                      progress=False)[1]["train_loss"] for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("method", ["dirvae", "cnn", "size"])
def test_other_encoders_fit(dataset, method):
    from LNMStagingLib.models.cnn import CNNConfig
    from LNMStagingLib.training.config import PipelineConfig
    from LNMStagingLib.training.context import RunContext
    from LNMStagingLib.training.mil_train import MILTrainConfig
    from LNMStagingLib.training.pipeline import fit

    config = PipelineConfig(method=method, vae=VAEConfig(base=4, latent_size=4),
                            vae_train=VAETrainConfig(epochs=2, min_epochs=1, batch_size=32), em_rounds=1, em_epochs=1,
                            cnn=CNNConfig(init_features=8, growth_rate=4, block_config=(2, 2)), cnn_epochs=1,
                            mil={"patch_hidden": 8, "patient_hidden": 8}, mil_train=MILTrainConfig(epochs=3),
                            mil_grid=[{}], inner_folds=2, synthetic_patients=2)
    fitted = fit(dataset, dataset.patients[:30], config, RunContext(progress=False, log=lambda *_: None))
    pred = fitted.predict(dataset, dataset.patients[30:])
    assert np.all((pred["patient_prob"] >= 0) & (pred["patient_prob"] <= 1))
    if method == "dirvae":
        assert fitted.encoder.config.kind == "dirichlet" and len(fitted.history["em"]) == 1
    if method == "size":
        assert fitted.encoder is None and not fitted.mil.config.use_latent
