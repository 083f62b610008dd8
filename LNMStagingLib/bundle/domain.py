"""The input domain a bundle was trained on, and the check of a case against it.

At training time :func:`domain_statistics` records, from the very patches the model learned from (after the
preset's preprocessing), the distribution of the intensity inside the nodes and in a ring around them, the
fraction of node pixels the preset's clamp saturates, the pixel spacing range and the modality; the bundle
keeps them in ``domain.json`` (listed in its manifest). At prediction :func:`domain_mismatches` compares a
case's patches with them, patient by patient as the model sees a patient: the median over the case's patches
must lie inside the range of the central 98% of the training patients' medians, widened by a quarter of its
width. A bundle without
``domain.json`` (made before this check existed) is checked only for the preset and the DICOM modality, and
every output says that its input domain is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

DOMAIN_FILE = "domain.json"
DOMAIN_FORMAT = "lnmstaging-input-domain"
# Pixels within this distance of the clamp's bounds count as saturated (8-bit data: half a grey level).
SATURATION_EPS = 0.002
RING_PIXELS = 3
# Tolerance around the training range, as a fraction of its width: training patients are a sample, and a
# case just outside their range is not yet foreign.
MARGIN = 0.25
QUANTILES = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)


def patch_summaries(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per patch: mean intensity inside the node, in a ring of :data:`RING_PIXELS` around it, and the fraction
    of node pixels at the clamp's bounds (0 or 1).

    Args:
        images: (N, S, S) or (N, 1, S, S) preprocessed patches (clipped to [0, 1] here, as the model sees them).
        masks: (N, S, S) node masks.

    Returns:
        ``inside``, ``ring``, ``saturated``: (N,) arrays (NaN where a patch has no node or ring pixel).
    """
    images = np.clip(np.asarray(images, dtype=np.float64).reshape(len(images), *np.shape(masks)[-2:]), 0.0, 1.0)
    masks = np.asarray(masks, dtype=bool).reshape(images.shape)
    inside = np.full(len(images), np.nan)
    ring = np.full(len(images), np.nan)
    saturated = np.full(len(images), np.nan)
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if mask.any():
            values = image[mask]
            inside[index] = values.mean()
            saturated[index] = np.mean((values <= SATURATION_EPS) | (values >= 1.0 - SATURATION_EPS))
        around = ndimage.binary_dilation(mask, iterations=RING_PIXELS) & ~mask
        if around.any():
            ring[index] = image[around].mean()
    return {"inside": inside, "ring": ring, "saturated": saturated}


def _patient_medians(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    medians = []
    for patient in np.unique(patients):
        chosen = values[(patients == patient) & np.isfinite(values)]
        if len(chosen):
            medians.append(float(np.median(chosen)))
    return np.array(medians)


def domain_statistics(images: np.ndarray, masks: np.ndarray, patients: Iterable, mm_per_px: np.ndarray,
                      modality: str, preset: str, masked_input: bool) -> dict:
    """The training domain of a bundle, for ``domain.json``.

    Args:
        images: the training patches (N, 1, S, S) after preprocessing.
        masks: their node masks (N, S, S).
        patients: the patient of each patch.
        mm_per_px: the source pixel spacing of each patch (mm).
        modality: the preset's modality ("CT", "MR", "" unknown).
        preset: the preset's name.
        masked_input: whether the model sees only the node's pixels (then the ring is not compared).

    Returns:
        A JSON-ready dict: per statistic the quantiles of the per-patient medians.
    """
    patients = np.asarray(list(patients))
    summaries = patch_summaries(images, masks)
    stats = {}
    for name, values in summaries.items():
        medians = _patient_medians(values, patients)
        if len(medians):
            stats[name] = {f"q{round(q * 100):02d}": float(np.quantile(medians, q)) for q in QUANTILES}
    ring_varies = "ring" in stats and stats["ring"]["q100"] - stats["ring"]["q00"] > 1e-6
    spacing = np.asarray(mm_per_px, dtype=float)
    spacing = spacing[np.isfinite(spacing) & (spacing > 0)]
    return {
        "format": DOMAIN_FORMAT,
        "preset": preset,
        "modality": modality,
        "patients": int(len(np.unique(patients))),
        "patches": int(len(patients)),
        "statistic": "per patient, the median over its patches; quantiles over the training patients",
        "patient_medians": stats,
        "compared": ["inside", "saturated"] + (["ring"] if ring_varies and not masked_input else []),
        "spacing_mm": [float(spacing.min()), float(spacing.max())] if len(spacing) else None,
        "margin": MARGIN,
    }


_DESCRIPTIONS = {
    "inside": "mean intensity inside the nodes",
    "ring": "mean intensity around the nodes",
    "saturated": "fraction of node pixels at the preset's bounds (0 or 1)",
}


def domain_mismatches(domain: dict, images: np.ndarray, masks: np.ndarray, pixel_mm: float | None = None) -> list[str]:
    """Why one case is outside a bundle's training domain (empty: inside it).

    Args:
        domain: the bundle's ``domain.json``.
        images: the case's preprocessed patches.
        masks: their node masks.
        pixel_mm: the case's in-plane pixel spacing (mm), or None.

    Returns:
        One short phrase per mismatch, e.g. "mean intensity inside the nodes 0.004 after preprocessing, the
        training patients had 0.30 to 0.95".
    """
    summaries = patch_summaries(images, masks)
    mismatches = []
    for name in domain.get("compared", []):
        recorded = domain["patient_medians"].get(name)
        values = summaries[name][np.isfinite(summaries[name])]
        if recorded is None or not len(values):
            continue
        value = float(np.median(values))
        # the central 98% of training patients, widened by the margin: a few outlying training patients
        # must not stretch the accepted range to everything (saturation reaches 0.87 in one LIDC patient)
        low, high = recorded["q01"], recorded["q99"]
        slack = domain.get("margin", MARGIN) * max(high - low, 0.02)
        if not low - slack <= value <= high + slack:
            mismatches.append(f"{_DESCRIPTIONS[name]} {value:.3g} after preprocessing, 98% of the training "
                              f"patients had {low:.3g} to {high:.3g}")
    spacing = domain.get("spacing_mm")
    if spacing and pixel_mm is not None and not spacing[0] / 2 <= pixel_mm <= spacing[1] * 2:
        mismatches.append(f"pixel spacing {pixel_mm:.3g} mm, the training images had {spacing[0]:.3g} to "
                          f"{spacing[1]:.3g} mm")
    return mismatches


UNKNOWN_DOMAIN = ("the bundle records no input domain (made before domain checks): only its preset and DICOM "
                  "modality were checked")
# A data set is refused when more of its patients than this fall outside the domain: the training data's own
# outlying patients (2 of 395 for LIDC) must not make it unusable, a systematic mismatch (another scale,
# modality, preset) flags nearly all.
DATASET_TOLERANCE = 0.05


def dataset_domain(domain: dict | None, images: np.ndarray, masks: np.ndarray, patients: Iterable,
                   mm_per_px: np.ndarray | None = None) -> dict:
    """The domain check of a whole data set, patient by patient (``evaluate``, ``explain clusters``).

    Args:
        domain: the bundle's ``domain.json`` (None: unknown).
        images: every patch (N, 1, S, S) after preprocessing.
        masks: their node masks.
        patients: the patient of each patch.
        mm_per_px: each patch's source pixel spacing (None: not compared).

    Returns:
        ``checked``, ``patients``, ``patients_out_of_domain``, ``fraction_out_of_domain`` and up to three
        ``examples`` ("patient: mismatch").
    """
    if domain is None:
        return {"checked": False, "note": UNKNOWN_DOMAIN}
    patients = np.asarray(list(patients))
    flagged = []
    for patient in np.unique(patients):
        chosen = patients == patient
        spacing = None if mm_per_px is None else float(np.median(np.asarray(mm_per_px)[chosen]))
        found = domain_mismatches(domain, images[chosen], np.asarray(masks)[chosen], spacing)
        if found:
            flagged.append(f"{patient}: {found[0]}")
    return domain_summary(int(len(np.unique(patients))), flagged)


def domain_summary(patients: int, flagged: list[str]) -> dict:
    """The domain section of a data set's outputs.

    Args:
        patients: how many patients were checked.
        flagged: "patient: mismatch" for each patient outside the domain.

    Returns:
        ``checked``, ``patients``, ``patients_out_of_domain``, ``fraction_out_of_domain``, ``examples``.
    """
    return {"checked": True, "patients": patients, "patients_out_of_domain": len(flagged),
            "fraction_out_of_domain": len(flagged) / max(patients, 1), "examples": flagged[:3]}


def require_dataset_in_domain(summary: dict, source: str, bundle_name: str, allow: bool) -> None:
    """Refuse a data set of which more than :data:`DATASET_TOLERANCE` of the patients are out of domain.

    Args:
        summary: :func:`dataset_domain`'s result.
        source: the data's path, for the message.
        bundle_name: the bundle's name.
        allow: the user's ``--allow-out-of-domain``.
    """
    from ..errors import BundleError

    if allow or not summary.get("checked") or summary["fraction_out_of_domain"] <= DATASET_TOLERANCE:
        return
    raise BundleError(source, f"{summary['patients_out_of_domain']} of {summary['patients']} patients are outside "
                              f"the input domain of bundle {bundle_name} (e.g. {summary['examples'][0]}); pass "
                              "--allow-out-of-domain to go on with the warning in the outputs")
