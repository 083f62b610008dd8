"""The configuration of the learning pipeline (:class:`PipelineConfig`) and the methods it knows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..fromdict import from_dict
from ..models.cnn import CNNConfig
from ..models.mil import MILConfig
from ..models.vae import VAEConfig, VAELossConfig
from .mil_train import MILTrainConfig
from .vae_train import VAETrainConfig

METHODS = ("size", "cnn", "vae", "dirvae")
@dataclass
class PipelineConfig:
    method: str = "vae"  # "vae" (Gaussian VAE-MLP), "dirvae", "cnn" (CNN + MIL head), "size" (size-only)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: VAETrainConfig = field(default_factory=VAETrainConfig)
    em_rounds: int = 0  # EM-style fine-tuning rounds (VAE loss + patch classifier BCE)
    em_epochs: int = 4
    em_weight: float = 1.0
    cnn: CNNConfig = field(default_factory=CNNConfig)
    cnn_epochs: int = 20
    cnn_lr: float = 2e-3
    cnn_patience: int = 6
    mil: dict = field(default_factory=dict)  # MILConfig overrides (eta, hidden sizes, dropout, mode ...)
    mil_train: MILTrainConfig = field(default_factory=MILTrainConfig)
    mil_grid: list = field(default_factory=lambda: [{"eta": 0.8}, {"eta": 0.5}])  # chosen on inner folds
    inner_folds: int = 5
    synthetic_patients: int = 25
    max_patches: int = 15
    val_fraction: float = 0.15
    seed: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["vae"] = self.vae.to_dict()
        data["cnn"] = self.cnn.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        def vae_train(values: dict) -> VAETrainConfig:
            return from_dict(VAETrainConfig, values, {"loss": lambda loss: from_dict(VAELossConfig, loss)})

        config = from_dict(cls, data, {
            "vae": VAEConfig.from_dict, "vae_train": vae_train, "cnn": CNNConfig.from_dict,
            "mil_train": lambda values: from_dict(MILTrainConfig, values),
        })
        if config.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        return config


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    mil_keys = {f.name for f in fields(MILConfig)}
    train_keys = {f.name for f in fields(MILTrainConfig)}
    m = {k: v for k, v in overrides.items() if k in mil_keys}
    t = {k: v for k, v in overrides.items() if k in train_keys}
    unknown = set(overrides) - set(m) - set(t)
    if unknown:
        raise ValueError(f"unknown MIL hyperparameters {sorted(unknown)}")
    return m, t
