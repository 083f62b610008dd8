"""Turn fitted VAE-MLP models into a self-describing bundle (see :mod:`LNMStagingLib.bundle`)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..bundle import TRAINING_PATIENTS_KEY, BundleConfig, MemberSpec, patient_fingerprints, write_bundle
from ..data.dataset import PatchDataset
from ..models.member import MEMBER_GRADCAM_LAYER, ModelMember
from ..models.vae import VAE
from .fitted import FittedModel
from .gate import gate_passed
from .threshold import choose_threshold
from .vae_train import encode_images


def member_from_fitted(fitted: FittedModel) -> ModelMember:
    if not isinstance(fitted.encoder, VAE):
        raise ValueError("only VAE-MLP models can be bundled")
    heads = fitted.heads
    member = ModelMember(fitted.encoder.config, fitted.mil.config, len(heads))
    member.vae.load_state_dict(fitted.encoder.state_dict())
    member.mil.load_state_dict(fitted.mil.state_dict())
    for target, head in zip(member.heads, heads, strict=True):
        target.load_state_dict(head.state_dict())
    return member.eval()


def _head_calibrations(fitted: FittedModel) -> list[dict] | None:
    """The member's ``head_calibrations`` (None: a model without heads, its ``mil`` and ``calibration`` apply)."""
    return [c.to_dict() for c in fitted.head_calibrations] or None


def raw_latent_directions(vae: VAE, dataset: PatchDataset) -> tuple[np.ndarray, np.ndarray]:
    """Directions in the latent space (paper, section 3.4): mean code of the largest quarter of the
    cross-sections minus the smallest quarter (growth), and of the most irregular quarter minus the most
    regular (border: rank of (1 - convexity) + rank of compactness), before orthogonalisation."""
    mu = encode_images(vae, torch.as_tensor(dataset.patches)).numpy()
    names = list(dataset.feature_names)

    def direction(score: np.ndarray) -> np.ndarray:
        lo, hi = np.quantile(score, [0.25, 0.75])
        return (mu[score >= hi].mean(0) - mu[score <= lo].mean(0)).astype(float)

    size = dataset.features[:, names.index("short_axis_mm")] if "short_axis_mm" in names else dataset.area_mm2
    irregular = np.zeros(len(dataset))
    if "convexity" in names:
        irregular += np.argsort(np.argsort(-dataset.features[:, names.index("convexity")]))
    if "compactness" in names:
        irregular += np.argsort(np.argsort(dataset.features[:, names.index("compactness")]))
    return direction(size), direction(irregular)


def latent_directions(vae: VAE, dataset: PatchDataset) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The bundle's ``latent_directions``: growth, and border irregularity orthogonal to growth
    (:func:`orthogonal_to`), with the cosine between the two before and after (recorded in the bundle).

    Returns:
        (``{"growth": [...], "border_irregularity": [...]}``, ``{"raw": cosine, "stored": cosine}``).
    """
    growth, border = raw_latent_directions(vae, dataset)
    stored = orthogonal_to(border, growth)
    return ({"growth": growth.tolist(), "border_irregularity": stored.tolist()},
            {"raw": _cosine(growth, border), "stored": _cosine(growth, stored)})


def orthogonal_to(vector: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``vector`` without its component along ``reference``, rescaled to its own length: large nodes are also
    the irregular ones, so the raw border direction mostly repeats growth (cosine 0.94 in an earlier bundle)."""
    unit = reference / max(float(np.linalg.norm(reference)), 1e-12)
    rest = vector - float(vector @ unit) * unit
    return rest * (float(np.linalg.norm(vector)) / max(float(np.linalg.norm(rest)), 1e-12))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def pooled_threshold(y, p) -> tuple[float, str]:
    """The ensemble's threshold: Youden J on pooled calibrated out-of-fold patient predictions.

    Returns:
        (threshold, its source as recorded in the bundle).
    """
    return choose_threshold(y, p), (f"Youden J on {len(np.asarray(y))} pooled out-of-fold patient predictions of "
                                    "the calibrated fold members (each patient predicted by the member that "
                                    "never saw it)")


def held_out_threshold(folds: list[FittedModel], dataset: PatchDataset) -> tuple[float, str] | None:
    """:func:`pooled_threshold` of fold members that record their held-out patients (``selection``'s
    ``held_out_patients``), or None when none does."""
    ys, ps = [], []
    for fitted in folds:
        held_out = fitted.selection.get("held_out_patients")
        if held_out and gate_passed(fitted.selection):
            pred = fitted.predict(dataset, held_out)
            ys.append(pred["patient_label"])
            ps.append(pred["patient_prob"])
    if not ys:
        return None
    return pooled_threshold(np.concatenate(ys), np.concatenate(ps))


def _render(value, key: str = "") -> str:
    """Pairs: ``*_mean_sd`` keys as mean ± SD, other pairs (``*_ci95``) as [low, high]."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:.3f} ± {value[1]:.3f}" if key.endswith("mean_sd") else f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_render(v, k)}" for k, v in value.items())
    return str(value)


def card_markdown(card: dict) -> str:
    """A readable Markdown model card from the card dict."""
    lines = [f"# Model card: {card['name']} {card['version']}", "", card.get("summary", ""), ""]
    for section in ("intended_use", "inputs", "outputs", "data", "training", "evaluation", "limits", "changelog"):
        value = card.get(section)
        if value is None:
            continue
        lines += [f"## {section.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, str):
            lines.append(value)
        elif isinstance(value, list):
            lines.extend(f"- {v}" for v in value)
        else:
            lines.extend(f"- **{k.replace('_', ' ')}**: {_render(v, k)}" for k, v in value.items())
        lines.append("")
    return "\n".join(lines)


def card_inputs_outputs(config: BundleConfig) -> dict:
    """The model card's ``inputs`` and ``outputs`` sections, from the bundle's config (so they cannot drift)."""
    preset = config.preprocessing
    clinical = ", ".join(f"{c.name} ({c.description or f'{c.minimum:g}-{c.maximum:g}'})"
                         for c in config.clinical_inputs) or "none"
    fov = f"{config.fov_mm:g} mm field of view" if config.fov_mm else "the image's own pixel size"
    return {
        "inputs": {
            "image": f"a 3D {preset.modality or 'scalar'} image prepared with preset {preset.name} "
                     f"({preset.description})",
            "segmentation": "the lymph nodes (or lesions): a labelmap or a Slicer .seg.nrrd, one node per label "
                            "or segment",
            "patches": f"{config.patch_sampling.size}x{config.patch_sampling.size} axial patches per node ({fov}), "
                       f"resized to {config.patch_size}x{config.patch_size}"
                       + (", lesion-only" if config.masked_input else "")
                       + f"; the patient's {config.mil.max_patches} largest form the patient bag",
            "node_features": ", ".join(config.feature_names),
            "clinical": clinical,
        },
        "outputs": {
            "node_probability": "per node: mean over its patches and over the ensemble members, with the SD",
            "patient_probability": f"eta * patient MLP + (1 - eta) * largest node probability (eta {config.eta:g}), "
                                   f"ensemble mean and SD; positive at or above the threshold {config.threshold:.3f}",
            "explanations": "a heatmap of each node's patch on the image grid (integrated gradients of the patch "
                            "logit, inside the node for lesion-only models); latent growth, border (orthogonal to "
                            "growth) and classifier traversals decoded by the primary member, each frame with its "
                            "probability",
        },
    }


def _training_hash(fitted: FittedModel, what: str) -> str:
    """The member's ``training_patients_sha256`` (recorded by :func:`~LNMStagingLib.training.pipeline.fit`)."""
    value = fitted.selection.get("training_patients_sha256")
    if not value:
        raise ValueError(f"{what}: its fitted model does not record the hash of its training patients")
    return str(value)


def build_bundle(out_dir: Path, name: str, version: str, primary: FittedModel, folds: list[FittedModel],
                 dataset: PatchDataset, preset: str, fov_mm: float | None, card: dict,
                 training: dict | None = None, clinical_absent_reason: str = "",
                 threshold: tuple[float, str] | None = None, record_domain: bool = True) -> Path:
    """Write a bundle: member 0 = ``primary`` (role final), then the fold models (role fold) that passed the
    quality gate (:mod:`~LNMStagingLib.training.gate`; the dropped ones are recorded in ``training``).

    Args:
        out_dir: the new bundle folder (must be empty or absent).
        name: the bundle's name.
        version: its version.
        primary: member 0, trained on every patient.
        folds: cross-validation fold models (the ensemble for uncertainty).
        dataset: the training data (latent directions, training-patient fingerprints).
        preset: the preprocessing preset's name.
        fov_mm: the patch field of view (None: the prepared grid's pixels).
        card: the model card's sections (inputs and outputs are added from the config).
        training: provenance recorded in ``config.training``.
        clinical_absent_reason: why there are no clinical inputs, when there are none.
        threshold: (threshold, source) chosen on the calibrated ensemble's out-of-fold predictions
            (:func:`pooled_threshold`); None: member 0's own (on its calibrated inner out-of-fold predictions).
        record_domain: write ``domain.json`` (the training input domain, checked at prediction); only test
            fixtures whose training data cover no real image leave it out.

    Returns:
        ``out_dir``.
    """
    from ..imaging.patches import PatchConfig
    from ..imaging.presets import get_preset

    kept = [(k, fitted) for k, fitted in enumerate(folds) if gate_passed(fitted.selection)]
    members = [member_from_fitted(primary)] + [member_from_fitted(f) for _, f in kept]
    mil = primary.mil.config
    specs = [MemberSpec(file="members/member_0.safetensors", role="final", fold=None, threshold=primary.threshold,
                        calibration=primary.calibration.to_dict(), head_calibrations=_head_calibrations(primary),
                        training_patients_sha256=_training_hash(primary, "member 0"))]
    for index, (k, fitted) in enumerate(kept):
        specs.append(MemberSpec(file=f"members/member_{index + 1}.safetensors", role="fold", fold=k,
                                feature_min=list(fitted.scaler.minimum), feature_max=list(fitted.scaler.maximum),
                                mil=fitted.mil.config, threshold=fitted.threshold,
                                calibration=fitted.calibration.to_dict(),
                                head_calibrations=_head_calibrations(fitted),
                                training_patients_sha256=_training_hash(fitted, f"fold member {k}")))
    gate = {"member_0": primary.selection.get("quality_gate", {"passed": True, "attempts": []}),
            "fold_members": {str(k): f.selection.get("quality_gate", {"passed": True, "attempts": []})
                             for k, f in enumerate(folds)},
            "dropped_fold_members": [k for k, f in enumerate(folds) if not gate_passed(f.selection)]}
    directions, cosines = latent_directions(primary.encoder, dataset)
    threshold_value, threshold_source = threshold or (
        float(primary.threshold), primary.selection.get("threshold_source", "inner validation"))
    patch_size = primary.encoder.config.patch_size
    sampling = PatchConfig(size=patch_size, fov_mm=fov_mm, max_patches=mil.max_patches)
    config = BundleConfig(
        name=name,
        version=version,
        preset=get_preset(preset).to_dict(),
        patch_sampling=sampling,
        feature_min=list(primary.scaler.minimum),
        feature_max=list(primary.scaler.maximum),
        threshold=float(threshold_value),
        threshold_source=threshold_source,
        latent_directions=directions,
        gradcam_layer=MEMBER_GRADCAM_LAYER,
        vae=primary.encoder.config,
        mil=mil,
        members=specs,
        weights_dtype="float16",
        node_threshold=float(primary.selection.get("node_threshold", 0.5)),
        training={
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "lnmstaging_version": __version__,
            "clinical_inputs_absent": clinical_absent_reason,
            # every member trained on a subset of these patients: lets `evaluate` flag in-sample data
            TRAINING_PATIENTS_KEY: patient_fingerprints(dataset.patients),
            "quality_gate": gate,
            "latent_direction_cosine": {"growth_vs_border_irregularity": cosines,
                                        "note": "border direction stored orthogonal to growth"},
            **(training or {}),
        },
    )
    card = {"name": name, "version": version, **card, **card_inputs_outputs(config)}
    card.setdefault("changelog", [f"{version}: trained with lnmstaging {__version__}"])
    return write_bundle(Path(out_dir), config, members, card, card_markdown(card),
                        training_domain(config, dataset) if record_domain else None)


def training_domain(config: BundleConfig, dataset: PatchDataset) -> dict:
    """The input domain of the bundle's training data (``domain.json``, see :mod:`LNMStagingLib.bundle.domain`).

    Args:
        config: the bundle's config (preset, whether the model sees only the node).
        dataset: the patches the members were trained on.

    Returns:
        The domain statistics.
    """
    from ..bundle.domain import domain_statistics

    preset = config.preprocessing
    return domain_statistics(dataset.patches, dataset.masks, dataset.patient_id, dataset.mm_per_px,
                             preset.modality, preset.name, config.masked_input)


def backfill_domain(bundle_dir: Path, dataset: PatchDataset) -> Path:
    """Add ``domain.json`` to an existing bundle from its training data and rehash its manifest; the weights,
    config and card are left as they are (for bundles made before the input-domain check).

    Args:
        bundle_dir: the bundle folder (verified first).
        dataset: the data the bundle was trained on, read as its recipe reads it.

    Returns:
        The path of the new ``domain.json``.
    """
    from ..bundle import load_bundle
    from ..bundle.domain import DOMAIN_FILE
    from ..bundle.format import MANIFEST, rehash_manifest
    from ..io.atomic import write_text_atomic

    bundle = load_bundle(bundle_dir)
    target = Path(bundle_dir) / DOMAIN_FILE
    import json

    write_text_atomic(target, json.dumps(training_domain(bundle.config, dataset), indent=2) + "\n")
    rehash_manifest(Path(bundle_dir), bundle.manifest)
    load_bundle(bundle_dir)  # the rewritten manifest verifies
    assert (Path(bundle_dir) / MANIFEST).is_file()
    return target
