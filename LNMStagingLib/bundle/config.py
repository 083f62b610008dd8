"""The parsed ``config.json`` of a bundle, typed: read once at load, every key required, unknown keys refused.

Each fact is stored once: the model's patch size is ``vae.patch_size``, the node features and clinical inputs
are ``mil.feature_names`` / ``mil.clinical``, eta is ``mil.eta``, the sampled field of view is
``patch_sampling.fov_mm`` and lesion-only input is ``preset.mask_background``; :class:`BundleConfig` offers
them as read-only properties. A config written by an earlier version that still repeats them
(:data:`LEGACY_KEYS`) loads when the repeats agree with their source.

The JSON Schema ``config.schema.json`` next to this module describes the file; :func:`check_schema` applies it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import BundleError, InputError
from ..fromdict import from_dict
from ..imaging.patches import PatchConfig
from ..imaging.presets import Preset
from ..models.mil import ClinicalSpec, MILConfig
from ..models.vae import VAEConfig

MemberRole = Literal["final", "fold"]
MEMBER_ROLES: tuple[str, ...] = get_args(MemberRole)
SCHEMA_FILE = Path(__file__).with_name("config.schema.json")


@dataclass
class MemberSpec:
    """One ensemble member of a bundle: its weights file and what differs from the bundle's defaults."""

    file: str
    role: MemberRole = "fold"  # "final" (trained on all data) or "fold" (cross-validation fold model)
    fold: int | None = None
    feature_min: list[float] | None = None  # this member's own normalisation (None: the bundle's)
    feature_max: list[float] | None = None
    mil: MILConfig | None = None  # this member's classifier (None: the bundle's ``mil``); e.g. its own eta
    threshold: float | None = None  # this member's own inner-validation threshold (informative)
    # Platt scaling of this member's patient probability, fitted on its inner out-of-fold predictions and
    # applied before members are averaged (None: identity, bundles written before calibration existed)
    calibration: dict | None = None
    # SHA-256 of the member's sorted training patient ids (format.training_set_sha256): which patients it
    # learned from, independent of the features (None: bundles written before it was recorded)
    training_patients_sha256: str | None = None
    # with K entries the member carries K classifier heads (weights ``heads.<i>.*``, same architecture as its
    # classifier), each with its calibration: the member's output is their calibrated mean, and ``calibration``
    # belongs to its ``mil`` (then unused). None: no heads (bundles written before)
    head_calibrations: list[dict] | None = None

    @property
    def n_heads(self) -> int:
        return len(self.head_calibrations or [])

    def to_json(self) -> dict:
        data = asdict(self)
        data["mil"] = self.mil.to_dict() if self.mil is not None else None
        return data


def _legacy_values(config: BundleConfig) -> dict[str, Any]:
    """What each repeated key of an earlier config would have to say (JSON values)."""
    return {"patch_size": config.patch_size, "fov_mm": config.fov_mm, "feature_names": config.feature_names,
            "clinical_inputs": [asdict(c) for c in config.clinical_inputs], "eta": config.eta,
            "masked_input": config.masked_input}


LEGACY_KEYS: tuple[str, ...] = ("patch_size", "fov_mm", "feature_names", "clinical_inputs", "eta", "masked_input")


@dataclass
class BundleConfig:
    """The parsed ``config.json`` of a bundle.

    ``preset`` stays the preset's JSON object (what the Slicer module reads); :attr:`preprocessing` is the
    parsed :class:`~LNMStagingLib.imaging.presets.Preset`.
    """

    name: str
    version: str
    preset: dict
    patch_sampling: PatchConfig
    feature_min: list[float]
    feature_max: list[float]
    threshold: float
    threshold_source: str
    latent_directions: dict[str, list[float]]  # {"growth": [...], "border_irregularity": [...]}
    gradcam_layer: str  # dotted module name inside a member (ModelMember), e.g. "vae.encoder.blocks.5"
    vae: VAEConfig
    mil: MILConfig
    members: list[MemberSpec]
    weights_dtype: Literal["float16", "float32"] = "float16"
    node_threshold: float = 0.5  # for node-level decisions (inner validation), informative
    training: dict = field(default_factory=dict)  # provenance (seeds, epochs, data), informative only
    preprocessing: Preset = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.preprocessing = Preset.from_dict(self.preset, "preset")

    # -- facts stored once, offered where callers look for them
    @property
    def patch_size(self) -> int:
        """The model's input patch size (``vae.patch_size``)."""
        return int(self.vae.patch_size)

    @property
    def fov_mm(self) -> float | None:
        """The sampled patch field of view in mm (``patch_sampling.fov_mm``; None: the image's pixels)."""
        return self.patch_sampling.fov_mm

    @property
    def feature_names(self) -> list[str]:
        return list(self.mil.feature_names)

    @property
    def clinical_inputs(self) -> list[ClinicalSpec]:
        return list(self.mil.clinical)

    @property
    def eta(self) -> float:
        return float(self.mil.eta)

    @property
    def masked_input(self) -> bool:
        """Patches are lesion-only (outside the node mask = 0): the preset's ``mask_background``."""
        return bool(self.preprocessing.mask_background)

    @classmethod
    def from_json(cls, data: Any, source: Path) -> BundleConfig:
        """The config from its JSON object; :class:`BundleError` naming ``source`` when anything is wrong."""
        if not isinstance(data, dict):
            raise BundleError(source, "config must be a JSON object")
        legacy = {key: data[key] for key in LEGACY_KEYS if key in data}
        values = {key: value for key, value in data.items() if key not in legacy}
        try:
            config = from_dict(cls, values, {
                "patch_sampling": lambda v: from_dict(PatchConfig, v, what="patch_sampling"),
                "vae": VAEConfig.from_dict,
                "mil": MILConfig.from_dict,
                "members": lambda members: [from_dict(MemberSpec, m, {"mil": _member_mil}, what="member")
                                            for m in members],
            }, required=[name for name in cls.__dataclass_fields__ if name not in
                         ("weights_dtype", "training", "node_threshold", "preprocessing")], what="config")
        except (TypeError, ValueError, InputError) as error:
            message = error.problem if isinstance(error, InputError) else str(error)
            raise BundleError(source, message if message.startswith(("unknown config", "config keys"))
                              else f"invalid config ({message})") from None
        config._check(source)
        expected = _legacy_values(config)
        for key, value in legacy.items():
            if json.loads(json.dumps(value)) != json.loads(json.dumps(expected[key])):
                raise BundleError(source, f"{key} differs from the value it repeats ({expected[key]!r})")
        return config

    def _check(self, source: Path) -> None:
        n = len(self.feature_names)
        if len(self.feature_min) != n or len(self.feature_max) != n:
            raise BundleError(source, "mil.feature_names, feature_min and feature_max differ in length")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise BundleError(source, "threshold must be in [0, 1]")
        if not self.members:
            raise BundleError(source, "config lists no ensemble members")
        if self.weights_dtype not in ("float16", "float32"):
            raise BundleError(source, f"unsupported weights_dtype {self.weights_dtype!r}")
        if any(member.role not in MEMBER_ROLES for member in self.members):
            raise BundleError(source, f"member roles must be one of {', '.join(MEMBER_ROLES)}")
        for key in ("growth", "border_irregularity"):
            if key not in self.latent_directions:
                raise BundleError(source, f"latent_directions lacks {key!r}")
        if self.patch_sampling.size != self.patch_size and self.patch_sampling.fov_mm is None:
            raise BundleError(source, "patch_sampling.size differs from vae.patch_size")
        if self.patch_sampling.max_patches != self.mil.max_patches:  # both name the patient bag's size
            raise BundleError(source, "patch_sampling.max_patches differs from mil.max_patches")

    def member_mil(self, index: int) -> MILConfig:
        """The classifier configuration of member ``index`` (its own, else the bundle's)."""
        own = self.members[index].mil
        return own if own is not None else self.mil

    def to_json(self) -> dict:
        """The JSON object written as config.json."""
        return {
            "name": self.name, "version": self.version, "preset": self.preset,
            "patch_sampling": asdict(self.patch_sampling), "feature_min": list(self.feature_min),
            "feature_max": list(self.feature_max), "threshold": self.threshold,
            "threshold_source": self.threshold_source, "latent_directions": self.latent_directions,
            "gradcam_layer": self.gradcam_layer, "vae": self.vae.to_dict(), "mil": self.mil.to_dict(),
            "members": [member.to_json() for member in self.members], "weights_dtype": self.weights_dtype,
            "node_threshold": self.node_threshold, "training": self.training,
        }


def _member_mil(value: Any) -> MILConfig | None:
    return None if value is None else MILConfig.from_dict(value)


@cache
def config_schema() -> dict:
    """The JSON Schema of config.json (shipped with the package)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def check_schema(data: Any, source: Path) -> None:
    """Check a config.json object against :func:`config_schema`; :class:`BundleError` with the first problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(part) for part in errors[0].absolute_path) or "(top level)"
        raise BundleError(source, f"does not follow the config schema at {where}: {errors[0].message}")
