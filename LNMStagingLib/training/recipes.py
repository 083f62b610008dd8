"""The training recipes: the fixed settings of every method (the benchmark's rows, ``lnmstaging train``)."""

from __future__ import annotations

from ..models.cnn import CNNConfig
from ..models.vae import VAEConfig, VAELossConfig
from .config import PipelineConfig
from .mil_train import MILTrainConfig
from .vae_train import VAETrainConfig


def benchmark_configs(quick: bool = False) -> dict[str, PipelineConfig]:
    """The benchmark's fixed settings (chosen a priori for 2 CPU cores; nothing tuned on test folds)."""
    vae = VAEConfig(base=4, latent_size=4) if quick else VAEConfig(base=8, latent_size=8)
    vae_train = (VAETrainConfig(epochs=3, min_epochs=2, patience=2) if quick else
                 VAETrainConfig(epochs=30, min_epochs=15, patience=6, batch_size=128, lr=2e-3,
                                loss=VAELossConfig(alpha=0.5, lam=10.0, gamma=1.0, beta=1e-3, anneal_epochs=10)))
    mil_train = MILTrainConfig(epochs=15 if quick else 60, batch_size=64, lr=3e-3, weight_decay=1e-2,
                               oversample_positive=1.5, node_weight=0.5)
    common = dict(vae=vae, vae_train=vae_train, mil_train=mil_train,
                  mil={"patch_hidden": 128, "patch_dropout": 0.3, "patient_hidden": 32, "patient_dropout": 0.3},
                  mil_grid=[{"eta": 0.8}, {"eta": 0.5}] if not quick else [{"eta": 0.8}],
                  inner_folds=2 if quick else 3, synthetic_patients=4 if quick else 25,
                  cnn=CNNConfig(), cnn_epochs=2 if quick else 10, cnn_patience=4)
    return {
        "size": PipelineConfig(method="size", **common),
        "vae": PipelineConfig(method="vae", **common),
        "cnn": PipelineConfig(method="cnn", **common),
        "dirvae": PipelineConfig(method="dirvae", em_rounds=1, em_epochs=2 if quick else 5, **common),
        "vae_max": PipelineConfig(method="vae", **{**common, "mil": {**common["mil"], "mode": "max"},
                                                   "mil_grid": [{}]}),
        "vae_mlp_only": PipelineConfig(method="vae", **{**common, "mil": {**common["mil"], "mode": "mlp"},
                                                        "mil_grid": [{}]}),
        "vae_no_clinical": PipelineConfig(method="vae", **{**common, "mil": {**common["mil"], "use_clinical": False}}),
    }
