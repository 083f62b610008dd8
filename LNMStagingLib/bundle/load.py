"""Loading a bundle: verified files, the parsed config and card, and the members as an
:class:`~LNMStagingLib.models.ensemble.Ensemble`."""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError
from ..models.calibration import Calibration
from ..models.ensemble import Ensemble
from .config import BundleConfig, check_schema
from .discovery import resolve_bundle
from .domain import DOMAIN_FILE, DOMAIN_FORMAT
from .format import (
    CARD_JSON,
    CARD_MD,
    CONFIG,
    MANIFEST,
    TRAINING_PATIENTS_KEY,
    patient_fingerprints,
    sha256_file,
    strict_json,
    verify_bundle,
)


class ModelBundle:
    """A verified, loaded bundle: where it came from, its config and card, and its :attr:`ensemble`.

    Args:
        path: the bundle folder.
        manifest: the verified manifest.
        manifest_sha256: SHA-256 of manifest.json (identifies the bundle's exact files).
        config: the parsed config.json.
        card: model_card.json.
        card_markdown: MODEL_CARD.md ("" when absent).
        ensemble: the members, their feature scalers and the threshold.
        domain: the training input domain (``domain.json``), None for a bundle made without it.
    """

    def __init__(self, path: Path, manifest: dict, manifest_sha256: str, config: BundleConfig,
                 card: dict, card_markdown: str, ensemble: Ensemble, domain: dict | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256
        self.config = config
        self.name = config.name
        self.version = config.version
        self.card = card
        self.card_markdown = card_markdown
        self.ensemble = ensemble
        self.domain = domain

    def __repr__(self) -> str:
        return f"ModelBundle(name={self.name!r}, version={self.version!r}, members={self.n_members})"

    @property
    def n_members(self) -> int:
        return self.ensemble.n_members

    @property
    def threshold(self) -> float:
        return self.ensemble.threshold

    def to(self, device: str) -> ModelBundle:
        self.ensemble.to(device)
        return self

    def prepare_patches(self, images, masks=None):
        """(N, H, W) or (N, 1, H, W) images in [0, 1] (+ optional masks) -> (N, 1, S, S) model input:
        lesion-only when the bundle says so, area-resized to the bundle's patch size when needed."""
        import torch
        import torch.nn.functional as F

        x = self.ensemble.tensor(images)
        if x.ndim == 3:
            x = x[:, None]
        if masks is not None and self.config.masked_input:
            m = self.ensemble.tensor(masks)
            x = x * (m[:, None] if m.ndim == 3 else m)
        size = self.config.patch_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return torch.clamp(x, 0.0, 1.0)

    def patients_seen_in_training(self, patient_ids) -> int | None:
        """How many of ``patient_ids`` trained this bundle (None: the bundle does not record it)."""
        recorded = self.config.training.get(TRAINING_PATIENTS_KEY)
        if not isinstance(recorded, list):
            return None
        known = set(recorded)
        return sum(fingerprint in known for fingerprint in patient_fingerprints(patient_ids))


def _scalers(config: BundleConfig) -> list:
    """Each member's feature scaler: its own min/max when the config gives them, else the bundle's."""
    from ..models.mil import FeatureScaler

    names = tuple(config.feature_names)
    shared = FeatureScaler(names, tuple(config.feature_min), tuple(config.feature_max))
    return [FeatureScaler(names, tuple(spec.feature_min), tuple(spec.feature_max))
            if spec.feature_min is not None and spec.feature_max is not None else shared
            for spec in config.members]


def load_bundle(path: str | Path | None = None, device: str = "cpu") -> ModelBundle:
    """Verify (SHA-256 of every file) and load a bundle folder, an installed bundle's name, or the default.

    Args:
        path: a bundle folder, an installed bundle's name, or None for the default bundle.
        device: where the members are placed.

    Returns:
        The loaded :class:`ModelBundle`.

    Raises :class:`~LNMStagingLib.errors.BundleError` naming the offending file when anything is missing,
    truncated, altered, unlisted, or malformed.
    """
    bundle_dir = resolve_bundle(path)
    manifest = verify_bundle(bundle_dir)
    manifest_sha = sha256_file(bundle_dir / MANIFEST)
    raw_config = strict_json(bundle_dir / CONFIG)
    config = BundleConfig.from_json(raw_config, bundle_dir / CONFIG)
    check_schema(raw_config, bundle_dir / CONFIG)
    card = strict_json(bundle_dir / CARD_JSON)
    if not isinstance(card, dict):
        raise BundleError(bundle_dir / CARD_JSON, "model card must be a JSON object")
    card_md_path = bundle_dir / CARD_MD
    card_markdown = card_md_path.read_text(encoding="utf-8") if card_md_path.is_file() else ""
    domain = None
    if DOMAIN_FILE in manifest["files"]:
        domain = strict_json(bundle_dir / DOMAIN_FILE)
        if not isinstance(domain, dict) or domain.get("format") != DOMAIN_FORMAT:
            raise BundleError(bundle_dir / DOMAIN_FILE, f"not a {DOMAIN_FORMAT} file")
    members = _load_members(bundle_dir, manifest, config, device)
    try:
        calibrations = [Calibration.from_dict(spec.calibration) for spec in config.members]
        heads = [[Calibration.from_dict(c) for c in spec.head_calibrations or []] for spec in config.members]
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(bundle_dir / CONFIG, f"invalid member calibration ({error})") from None
    ensemble = Ensemble(members, _scalers(config), float(config.threshold), device, calibrations, heads)
    return ModelBundle(bundle_dir, manifest, manifest_sha, config, card, card_markdown, ensemble, domain)


def _load_members(bundle_dir: Path, manifest: dict, config: BundleConfig, device: str) -> list:
    """The members' weights (safetensors only), each checked against the configured architecture."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models.member import ModelMember
    from .checks import check_architecture_limits, check_member_shapes

    check_architecture_limits(config.vae, [config.member_mil(i) for i in range(len(config.members))],
                              bundle_dir / CONFIG)
    members = []
    for index, spec in enumerate(config.members):
        file = bundle_dir / spec.file
        if spec.file not in manifest["files"]:
            raise BundleError(file, "member weights not listed in the manifest")
        # before any real tensor is allocated
        check_member_shapes(file, config.vae, config.member_mil(index), spec.n_heads)
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as error:
            raise BundleError(file, f"unreadable weights ({error})") from None
        member = ModelMember(config.vae, config.member_mil(index), spec.n_heads)
        state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
        try:
            member.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise BundleError(file, f"weights do not fit the configured architecture ({str(error)[:200]})") from None
        member.eval().to(device)
        members.append(member)
    return members


__all__ = ["ModelBundle", "load_bundle"]
