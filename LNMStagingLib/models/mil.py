"""Multiple-instance classifier of Keel et al. (MIUA 2025, section 3.3).

* Patch MLP: ``[latent mean, node size/border features in [0, 1]] -> patch probability`` (BatchNorm1d,
  dropout, GELU; sigmoid output). A node's probability is the mean over its patches (slices).
* Patient MLP (4 linear layers): ``[padded patch probabilities (max_patches), patient clinical data with
  missingness indicators, features of the patch with the largest short axis] -> probability``.
* Final probability: ``eta * patient MLP + (1 - eta) * largest node probability``.

Clinical data: each declared input (e.g. age, sex, T stage) is normalised with a stored min/max and
goes in as two numbers, ``(value or 0.5 when missing, 1 when missing else 0)``: a missing value is never
silently 0. A model declared without clinical inputs (LIDC) has none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ..fromdict import from_dict

MILMode = Literal["combined", "max", "mlp"]
MIL_MODES: tuple[str, ...] = get_args(MILMode)
DEFAULT_FEATURES: tuple[str, ...] = ("short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness")


@dataclass
class ClinicalSpec:
    """One patient-level input: normalised by ``(value - minimum) / (maximum - minimum)``, clipped to [0, 1]."""

    name: str
    minimum: float
    maximum: float
    description: str = ""

    def normalise(self, value: float | None) -> tuple[float, float]:
        """(normalised value or neutral 0.5, missingness indicator)."""
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return 0.5, 1.0
        span = self.maximum - self.minimum
        scaled = (float(value) - self.minimum) / span if span > 0 else 0.5
        return float(np.clip(scaled, 0.0, 1.0)), 0.0


# Clinical inputs the paper used, for a user's own cohort (age in years, sex 0 female / 1 male, T stage 1-4).
PAPER_CLINICAL: tuple[ClinicalSpec, ...] = (
    ClinicalSpec("age", 18.0, 100.0, "age in years"),
    ClinicalSpec("sex", 0.0, 1.0, "0 = female, 1 = male"),
    ClinicalSpec("t_stage", 1.0, 4.0, "primary tumour T stage 1-4"),
)


def clinical_vector(specs: list[ClinicalSpec] | tuple[ClinicalSpec, ...], values: dict | None) -> np.ndarray:
    """Patient clinical inputs as ``[v1, missing1, v2, missing2, ...]`` (float32, length 2 * len(specs))."""
    values = values or {}
    out: list[float] = []
    for spec in specs:
        out.extend(spec.normalise(values.get(spec.name)))
    return np.asarray(out, dtype=np.float32)


@dataclass
class MILConfig:
    latent_dim: int
    feature_names: tuple[str, ...] = DEFAULT_FEATURES
    clinical: tuple[ClinicalSpec, ...] = ()
    max_patches: int = 15
    patch_hidden: int = 128
    patch_dropout: float = 0.3
    patient_hidden: int = 32
    patient_dropout: float = 0.3
    eta: float = 0.8  # weight of the patient MLP, in [0.5, 0.8]
    mode: MILMode = "combined"  # "combined" | "max" (max node only) | "mlp" (patient MLP only)
    use_latent: bool = True  # False: size/border features only (the size-only baseline)
    use_node_features: bool = True
    use_clinical: bool = True

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_clinical_inputs(self) -> int:
        return 2 * len(self.clinical) if self.use_clinical else 0

    def validate(self) -> None:
        if self.mode not in MIL_MODES:
            raise ValueError(f"MIL mode must be combined, max or mlp, not {self.mode!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError("eta must be in [0, 1]")
        if not (self.use_latent or self.use_node_features):
            raise ValueError("the patch MLP needs the latent or the node features")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["feature_names"] = list(self.feature_names)
        data["clinical"] = [asdict(c) for c in self.clinical]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> MILConfig:
        config = from_dict(cls, data, {
            "feature_names": tuple,
            "clinical": lambda specs: tuple(from_dict(ClinicalSpec, spec) for spec in specs),
        })
        config.validate()
        return config


def _mlp_layer(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.GELU(), nn.Dropout(dropout)]


class PatchMLP(nn.Module):
    def __init__(self, n_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_mlp_layer(n_in, hidden, dropout), *_mlp_layer(hidden, max(hidden // 2, 4), dropout),
            nn.Linear(max(hidden // 2, 4), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # logits


class PatientMLP(nn.Module):
    """4 linear layers."""

    def __init__(self, n_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_mlp_layer(n_in, hidden, dropout),
            *_mlp_layer(hidden, hidden, dropout),
            *_mlp_layer(hidden, max(hidden // 2, 4), dropout),
            nn.Linear(max(hidden // 2, 4), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class MILModel(nn.Module):
    """Patch MLP + patient MLP + eta mixing. Inputs are batches of padded bags (see :meth:`forward`)."""

    def __init__(self, config: MILConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        n_patch_in = (config.latent_dim if config.use_latent else 0) + (
            config.n_features if config.use_node_features else 0
        )
        self.patch_mlp = PatchMLP(n_patch_in, config.patch_hidden, config.patch_dropout)
        n_patient_in = config.max_patches + config.n_clinical_inputs + (
            config.n_features if config.use_node_features else 0
        )
        self.patient_mlp = PatientMLP(n_patient_in, config.patient_hidden, config.patient_dropout)
        names = list(config.feature_names)
        self.short_axis_index = names.index("short_axis_mm") if "short_axis_mm" in names else 0

    def patch_inputs(self, latent: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.config.use_latent:
            if latent is None:
                raise ValueError("this MIL model needs latent codes")
            parts.append(latent)
        if self.config.use_node_features:
            parts.append(features)
        return torch.cat(parts, dim=-1)

    def patch_logits(self, latent: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
        """Per-patch logits for flat inputs ``latent (N, D)``, normalised ``features (N, F)``."""
        return self.patch_mlp(self.patch_inputs(latent, features))

    def forward(
        self,
        latent: torch.Tensor | None,
        features: torch.Tensor,
        valid: torch.Tensor,
        node_index: torch.Tensor,
        clinical: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Bags: ``latent (B, M, D)``, normalised ``features (B, M, F)``, ``valid (B, M)`` bool,
        ``node_index (B, M)`` long (patches of one node share an index in [0, M); padding: any),
        ``clinical (B, 2C)`` from :func:`clinical_vector` (or None without clinical inputs).

        Returns ``patch_logit``/``patch_prob`` (B, M) (0 at padding), ``node_max`` (B,) the largest node
        probability (node = mean of its patches), ``patient_mlp`` (B,), ``final`` (B,).
        """
        b, m = valid.shape
        if m != self.config.max_patches:
            raise ValueError(f"bags must hold {self.config.max_patches} patches (padded), not {m}")
        valid = valid.bool()
        flat_latent = latent.reshape(b * m, -1) if (latent is not None and self.config.use_latent) else None
        flat_features = features.reshape(b * m, -1)
        patch_logit = torch.zeros(b * m, dtype=features.dtype, device=features.device)
        flat_valid = valid.reshape(-1)
        if flat_valid.any():
            selected_latent = flat_latent[flat_valid] if flat_latent is not None else None
            patch_logit = patch_logit.masked_scatter(
                flat_valid, self.patch_logits(selected_latent, flat_features[flat_valid])
            )
        patch_logit = patch_logit.reshape(b, m)
        patch_prob = torch.sigmoid(patch_logit) * valid

        # node probability = mean of its patches; largest node probability per bag
        onehot = (node_index.unsqueeze(-1) == torch.arange(m, device=valid.device)) & valid.unsqueeze(-1)
        onehot = onehot.to(patch_prob.dtype)  # (B, M patches, M nodes)
        node_sum = torch.einsum("bp,bpn->bn", patch_prob, onehot)
        node_count = onehot.sum(1)
        node_prob = torch.where(node_count > 0, node_sum / node_count.clamp(min=1), torch.full_like(node_sum, -1))
        node_max = node_prob.max(1).values.clamp(min=0)

        parts = [patch_prob]
        if self.config.use_node_features:
            short_axis = features[..., self.short_axis_index].masked_fill(~valid, -1e9)
            largest = short_axis.argmax(1)
            parts.append(features[torch.arange(b, device=features.device), largest])
        if self.config.n_clinical_inputs:
            if clinical is None:
                raise ValueError("this MIL model declares clinical inputs: pass them (missing values allowed)")
            parts.append(clinical)
        patient_mlp = torch.sigmoid(self.patient_mlp(torch.cat(parts, dim=-1)))
        if self.config.mode == "max":
            final = node_max
        elif self.config.mode == "mlp":
            final = patient_mlp
        else:
            final = self.config.eta * patient_mlp + (1 - self.config.eta) * node_max
        return {
            "patch_logit": patch_logit,
            "patch_prob": patch_prob,
            "node_max": node_max,
            "patient_mlp": patient_mlp,
            "final": final,
        }


@dataclass
class FeatureScaler:
    """Min/max normalisation of node features to [0, 1] (values outside the stored range are clipped)."""

    names: tuple[str, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    extra: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, names, values: np.ndarray) -> FeatureScaler:
        values = np.asarray(values, dtype=np.float64)
        return cls(tuple(names), tuple(np.nanmin(values, 0).tolist()), tuple(np.nanmax(values, 0).tolist()))

    def transform(self, values):
        lo = np.asarray(self.minimum, dtype=np.float32)
        hi = np.asarray(self.maximum, dtype=np.float32)
        span = np.where(hi - lo > 0, hi - lo, 1.0).astype(np.float32)
        if isinstance(values, torch.Tensor):
            lo_t = torch.as_tensor(lo, dtype=values.dtype, device=values.device)
            span_t = torch.as_tensor(span, dtype=values.dtype, device=values.device)
            return ((values - lo_t) / span_t).clamp(0.0, 1.0)
        return np.clip((np.asarray(values, dtype=np.float32) - lo) / span, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "minimum": list(self.minimum), "maximum": list(self.maximum)}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureScaler:
        names, lo, hi = tuple(data["names"]), tuple(data["minimum"]), tuple(data["maximum"])
        if not (len(names) == len(lo) == len(hi)):
            raise ValueError("feature names, minimum and maximum differ in length")
        return cls(names, tuple(float(v) for v in lo), tuple(float(v) for v in hi))
