"""The parsed ``config.json`` of a bundle: every key required, unknown keys refused."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BundleError


@dataclass
class MemberSpec:
    """One ensemble member of a bundle: its weights file and what differs from the bundle's defaults."""

    file: str
    role: str = "fold"  # "final" (trained on all data) or "fold" (cross-validation fold model)
    fold: int | None = None
    feature_min: list[float] | None = None  # this member's own normalisation (None: the bundle's)
    feature_max: list[float] | None = None
    mil: dict | None = None  # this member's MILConfig (None: the bundle's ``mil``); e.g. its own eta
    threshold: float | None = None  # this member's own inner-validation threshold (informative)


@dataclass
class BundleConfig:
    """The parsed ``config.json`` of a bundle (every key required, unknown keys refused)."""

    name: str
    version: str
    preset: dict  # the Preset as JSON (e.g. "lidc-png")
    patch_size: int
    fov_mm: float | None
    patch_sampling: dict  # the PatchConfig as JSON (size, fov_mm, max_patches, ...)
    masked_input: bool  # patches are lesion-only (outside the node mask = 0)
    feature_names: list[str]
    feature_min: list[float]
    feature_max: list[float]
    clinical_inputs: list[dict]  # ClinicalSpec dicts; [] = no clinical data (e.g. LIDC)
    eta: float
    threshold: float
    threshold_source: str
    latent_directions: dict[str, list[float]]  # {"growth": [...], "border_irregularity": [...]}
    gradcam_layer: str  # dotted module name inside a member (ModelMember), e.g. "vae.encoder.blocks.5"
    vae: dict  # VAEConfig JSON
    mil: dict  # MILConfig JSON
    members: list[MemberSpec]
    weights_dtype: str = "float16"
    node_threshold: float = 0.5  # for node-level decisions (inner validation), informative
    training: dict = field(default_factory=dict)  # provenance (seeds, epochs, data), informative only

    @classmethod
    def from_json(cls, data: Any, source: Path) -> BundleConfig:
        if not isinstance(data, dict):
            raise BundleError(source, "config must be a JSON object")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("weights_dtype", "training", "node_threshold")}
        unknown = set(data) - names
        missing = required - set(data)
        if unknown:
            raise BundleError(source, f"unknown config keys {sorted(unknown)}")
        if missing:
            raise BundleError(source, f"config keys missing: {sorted(missing)}")
        values = dict(data)
        try:
            values["members"] = [MemberSpec(**m) for m in data["members"]]
            config = cls(**values)
            config._check(source)
        except (TypeError, ValueError) as error:
            raise BundleError(source, f"invalid config ({error})") from None
        return config

    def _check(self, source: Path) -> None:
        n = len(self.feature_names)
        if len(self.feature_min) != n or len(self.feature_max) != n:
            raise BundleError(source, "feature_names, feature_min and feature_max differ in length")
        if not 0.0 <= float(self.threshold) <= 1.0 or not 0.0 <= float(self.eta) <= 1.0:
            raise BundleError(source, "threshold and eta must be in [0, 1]")
        if not self.members:
            raise BundleError(source, "config lists no ensemble members")
        if self.weights_dtype not in ("float16", "float32"):
            raise BundleError(source, f"unsupported weights_dtype {self.weights_dtype!r}")
        for key in ("growth", "border_irregularity"):
            if key not in self.latent_directions:
                raise BundleError(source, f"latent_directions lacks {key!r}")

    def to_json(self) -> dict:
        data = asdict(self)
        return data
