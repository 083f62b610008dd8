"""A fitted model of the pipeline (encoder + MIL classifier + scaler + threshold): prediction as a one-member
:class:`~LNMStagingLib.models.ensemble.Ensemble`, persistence with safetensors and JSON (never pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import PatchDataset
from ..data.predict import predict_dataset
from ..models.calibration import Calibration
from ..models.cnn import CNNEncoder
from ..models.ensemble import Ensemble
from ..models.member import EncoderMember
from ..models.mil import FeatureScaler, MILConfig, MILModel
from ..models.vae import VAE
from .config import PipelineConfig

# what a fold result.json keeps of the predictions (the per-slice probabilities would make it large)
FITTED_PREDICTION_KEYS = ("patient_id", "patient_prob", "patient_label", "patient_mlp", "patient_max", "nodule_id",
                          "nodule_prob", "nodule_label", "nodule_patient", "patient_prob_uncalibrated")


@dataclass
class FittedModel:
    """Encoder + MIL classifier + scaler, the patient threshold (on calibrated probabilities) and the
    calibration of the patient probability (fitted on the inner out-of-fold predictions).

    ``inner_mils``: the inner-fold classifiers of the chosen hyperparameters (the ones whose held-out predictions
    are the out-of-fold predictions), in the order of ``selection["inner_validation"]`` (their held-out
    patients); empty for models fitted before they were kept. ``head_calibrations``: each one's Platt scaling,
    fitted on its own held-out patients. With them, the model's patient probability is the mean of the calibrated
    inner classifiers; without them (earlier models), the final ``mil`` with ``calibration``.
    """

    method: str
    encoder: torch.nn.Module | None
    mil: MILModel
    scaler: FeatureScaler
    threshold: float
    selection: dict
    history: dict
    calibration: Calibration = Calibration()
    inner_mils: list[MILModel] = field(default_factory=list)
    head_calibrations: list[Calibration] = field(default_factory=list)

    @property
    def heads(self) -> list[MILModel]:
        """The classifiers whose calibrated mean is the output: the inner-fold ones when they have their
        calibrations, else none (the final ``mil`` with ``calibration`` applies)."""
        return self.inner_mils if self.head_calibrations else []

    @property
    def mil_config(self) -> MILConfig:
        return self.mil.config

    def ensemble(self) -> Ensemble:
        """This model as a one-member :class:`Ensemble` (the forward path of bundles and evaluation)."""
        heads = self.heads
        return Ensemble([EncoderMember(self.encoder, self.mil.eval(), heads)], [self.scaler], self.threshold,
                        calibrations=[self.calibration], head_calibrations=[self.head_calibrations if heads else []])

    def raw_predictions(self, dataset: PatchDataset, patients) -> dict:
        """The uncalibrated patient probabilities of the final and of every inner-fold classifier.

        Args:
            dataset: the patches.
            patients: the patients to predict.

        Returns:
            ``patient_id``, ``patient_label``, ``final`` (B,) and ``inner`` (K, B), through the same forward path
            as :meth:`predict` with every calibration the identity.
        """
        mils = [self.mil, *self.inner_mils]
        members = [EncoderMember(self.encoder, m.eval()) for m in mils]
        pred = predict_dataset(Ensemble(members, [self.scaler] * len(mils), 0.5), dataset, patients,
                               batch_size=512)
        raw = np.asarray(pred["patient_per_member"], dtype=float)
        return {"patient_id": [str(p) for p in pred["patient_id"]],
                "patient_label": np.asarray(pred["patient_label"]).astype(int).tolist(),
                "final": raw[0].tolist(), "inner": raw[1:].tolist()}

    def predict(self, dataset: PatchDataset, patients=None) -> dict:
        """Slice, nodule and patient probabilities for ``patients`` (default: all); see
        :func:`~LNMStagingLib.data.predict.predict_dataset`."""
        pred = predict_dataset(self.ensemble(), dataset, patients, batch_size=512)
        return {key: pred[key] for key in FITTED_PREDICTION_KEYS}

    # -- persistence (safetensors + JSON, never pickle)
    def save(self, directory: Path, pipeline: PipelineConfig) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.mil.state_dict().items()}, str(directory / "mil.safetensors"))
        if self.encoder is not None:
            save_file({k: v.contiguous() for k, v in self.encoder.state_dict().items()},
                      str(directory / "encoder.safetensors"))
        for k, inner in enumerate(self.inner_mils):
            save_file({n: v.contiguous() for n, v in inner.state_dict().items()},
                      str(directory / f"inner_mil_{k}.safetensors"))
        meta = {"method": self.method, "mil": self.mil.config.to_dict(), "scaler": self.scaler.to_dict(),
                "threshold": self.threshold, "selection": self.selection, "history": self.history,
                "calibration": self.calibration.to_dict(), "inner_mils": len(self.inner_mils),
                "head_calibrations": [c.to_dict() for c in self.head_calibrations],
                "pipeline": pipeline.to_dict()}
        (directory / "fitted.json").write_text(json.dumps(meta, indent=1, default=float), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> FittedModel:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / "fitted.json").read_text(encoding="utf-8"))
        pipeline = PipelineConfig.from_dict(meta["pipeline"])
        mil = MILModel(MILConfig.from_dict(meta["mil"]))
        mil.load_state_dict(load_file(str(directory / "mil.safetensors")))
        encoder = new_encoder(meta["method"], pipeline)
        if encoder is not None:
            encoder.load_state_dict(load_file(str(directory / "encoder.safetensors")))
            encoder.eval()
        mil.eval()
        inner = []
        for k in range(int(meta.get("inner_mils", 0))):
            inner.append(MILModel(mil.config))
            inner[-1].load_state_dict(load_file(str(directory / f"inner_mil_{k}.safetensors")))
            inner[-1].eval()
        return cls(meta["method"], encoder, mil, FeatureScaler.from_dict(meta["scaler"]), float(meta["threshold"]),
                   meta["selection"], meta["history"], Calibration.from_dict(meta.get("calibration")), inner,
                   [Calibration.from_dict(c) for c in meta.get("head_calibrations", [])])


def new_encoder(method: str, config: PipelineConfig) -> torch.nn.Module | None:
    """An untrained encoder of ``method`` ("size": none; "cnn"; "vae"/"dirvae": Gaussian/Dirichlet VAE)."""
    if method == "size":
        return None
    if method == "cnn":
        return CNNEncoder(config.cnn)
    vae_config = replace(config.vae, kind="dirichlet" if method == "dirvae" else "gaussian")
    return VAE(vae_config)
