"""Checks that an image fits a bundle (declared preset, DICOM modality) and the clinical inputs it uses."""

from __future__ import annotations

from pathlib import Path

from ..bundle import ModelBundle, load_bundle
from ..clinical import encode_clinical
from ..errors import BundleError
from ..io.cohort import ClinicalData
from ..io.image import read_modality
from .results import ClinicalUse


def image_modality(path: str | Path) -> str | None:
    """The DICOM modality of an image (None when the format carries none); see imageio.read_modality."""
    return read_modality(path)


def load_bundle_for_case(model: str | Path | None = None, declared_preset: str | None = None,
                         modality: str | None = None) -> ModelBundle:
    """The one way to get the bundle for a case: load and verify it, then refuse it when the image was declared
    for another preset or its modality is not the preset's (:func:`check_intended_input`).

    Args:
        model: a bundle folder, an installed bundle's name, or None (the default bundle).
        declared_preset: the preset the image is meant for (None: not declared).
        modality: the image's DICOM modality (None: unknown).

    Returns:
        The loaded bundle.
    """
    bundle = load_bundle(model)
    check_intended_input(bundle, declared_preset, modality)
    return bundle


def check_intended_input(bundle: ModelBundle, declared_preset: str | None = None, modality: str | None = None) -> None:
    """Refuse an image declared for another preprocessing preset, or whose DICOM modality is not the
    preset's: the model would see intensities it was never trained on.

    Args:
        bundle: the loaded bundle.
        declared_preset: the preset (name or .json) the image is meant for, or None.
        modality: the image's DICOM modality, or None.
    """
    preset = bundle.config.preprocessing
    name = preset.name
    if declared_preset and Path(declared_preset).stem != name and declared_preset != name:
        raise BundleError(bundle.path, f"bundle {bundle.name} expects preset {name}, the image was declared {declared_preset}")
    expected = preset.modality.strip().upper()
    if modality and expected and modality.strip().upper() != expected:
        raise BundleError(
            bundle.path,
            f"bundle {bundle.name} expects {expected} images (preset {name}), the image is DICOM modality {modality}",
        )


def input_caveats(bundle: ModelBundle) -> list[str]:
    """What makes a lymph-node case not this model's intended input, from the model card's ``intended_input``
    (``{"description": ..., "lymph_nodes": false}``): said in the result's headline, beside the probability.

    Args:
        bundle: the loaded bundle.

    Returns:
        One sentence per caveat (empty: the card declares lymph nodes, or declares nothing).
    """
    intended = bundle.card.get("intended_input")
    if not isinstance(intended, dict) or intended.get("lymph_nodes", True):
        return []
    trained = intended.get("description") or "other lesions"
    return [f"not this model's intended input: it was trained on {trained}, not on lymph nodes, so this probability "
            "is not a validated lymph node metastasis probability"]


def check_case_domain(case_source: str, bundle: ModelBundle, mismatches: list[str], allow: bool) -> list[str]:
    """Refuse a case outside the bundle's training domain unless the user allowed it; the warnings every
    output then carries beside the probability.

    Args:
        case_source: the image, for the message.
        bundle: the loaded bundle.
        mismatches: :func:`~LNMStagingLib.bundle.domain.domain_mismatches` of the case.
        allow: the user's ``--allow-out-of-domain``.

    Returns:
        The warnings for the outputs (the mismatches, or that the bundle's domain is unknown).
    """
    from ..bundle.domain import UNKNOWN_DOMAIN

    if bundle.domain is None:
        return [f"input domain not checked: {UNKNOWN_DOMAIN}"]
    if mismatches and not allow:
        raise BundleError(case_source, f"is outside the input domain of bundle {bundle.name} ({'; '.join(mismatches)}); "
                                       "pass --allow-out-of-domain to predict anyway with this warning in every output")
    return [f"OUT OF THE MODEL'S INPUT DOMAIN: {mismatch}" for mismatch in mismatches]


def clinical_range_warnings(bundle: ModelBundle, values: dict[str, float | None]) -> list[str]:
    """A warning per clinical value outside the range the model was trained on (the model sees it clipped).

    Args:
        bundle: the loaded bundle (its clinical inputs and their ranges).
        values: the encoded clinical values (None: missing).

    Returns:
        One sentence per value out of range.
    """
    warnings = []
    for spec in bundle.config.clinical_inputs:
        value = values.get(spec.name)
        if value is not None and not spec.minimum <= value <= spec.maximum:
            seen = min(max(value, spec.minimum), spec.maximum)
            warnings.append(f"{spec.name} {value:g} lies outside the model's trained range {spec.minimum:g}-"
                            f"{spec.maximum:g}: the model received {seen:g}")
    return warnings


def clinical_inputs(bundle: ModelBundle, clinical: ClinicalData | None) -> tuple[dict[str, float | None], ClinicalUse]:
    """The clinical values a bundle's model receives, and what the report says about them.

    Args:
        bundle: the loaded bundle (its declared clinical inputs).
        clinical: the patient's clinical data (None: all missing).

    Returns:
        (values keyed by the bundle's clinical input names, None = declared missing, which the model sees as a
        neutral value plus a missingness indicator; the report's :class:`ClinicalUse`).
    """
    clinical = clinical or ClinicalData()
    used = [spec.name for spec in bundle.config.clinical_inputs]
    values = encode_clinical(clinical, used)
    shown = {name: getattr(clinical, name, None) for name in used}
    missing = [name for name in used if values[name] is None]
    if not used:
        given = [name for name in ("age", "sex", "t_stage") if getattr(clinical, name) is not None]
        note = "clinical data are not used by this model" + (
            f" (given but ignored: {', '.join(given)})" if given else "")
    elif missing:
        note = (f"declared missing: {', '.join(missing)}; the model receives a neutral value plus a "
                "missingness indicator for each, never a silent zero")
    else:
        note = "all clinical inputs of the model were given"
    out_of_range = clinical_range_warnings(bundle, values)
    if out_of_range:
        note += "; " + "; ".join(out_of_range)
    return values, ClinicalUse(used, shown, missing, note, out_of_range)
