"""Training data from a user's own cohort (a cohort manifest CSV: image, segmentation, clinical data, N stage).

Each case is loaded and prepared (``load_case``, ``prepare_case`` with a preset,
``extract_patches``); every node's patches (largest cross-section plus secondary slices) become training
patches, with the size/border features of that cross-section (``patches.patch_features``: the prepared grid,
as at prediction). Labels are patient-level (N0 -> 0, N1/N2 -> 1): weak supervision; node labels are
unknown (-1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..clinical import encode_clinical
from ..models.mil import DEFAULT_FEATURES
from .dataset import PatchDataset


def has_clinical_data(dataset: PatchDataset) -> bool:
    """Whether any patient of ``dataset`` has any clinical value."""
    return any(value is not None for values in (dataset.clinical or {}).values() for value in values.values())


def load_cohort(manifest: str | Path, preset="mri-t2", patch_size: int = 32, fov_mm: float | None = None,
                max_patches: int = 15, progress: bool = True, require_labels: bool = True) -> PatchDataset:
    """A :class:`PatchDataset` from a cohort manifest, prepared and cut exactly as prediction does.

    Args:
        manifest: the cohort manifest CSV.
        preset: a preset name, a preset .json or a ``Preset``.
        patch_size: patch pixels.
        fov_mm: patch field of view (None: the prepared grid's pixels).
        max_patches: the bag size.
        progress: show a progress bar.
        require_labels: skip patients without an N stage (else keep them with the label -1, unknown).

    Returns:
        The data set (patient labels from the N stage, clinical values from :func:`encode_clinical`).
    """
    from ..errors import InputError
    from ..imaging.case import load_case, prepare_case
    from ..imaging.patches import PatchConfig, extract_patches, patch_features
    from ..imaging.presets import Preset, get_preset
    from ..io.cohort import read_manifest

    entries = read_manifest(manifest)
    preset_obj = preset if isinstance(preset, Preset) else get_preset(preset)
    config = PatchConfig(size=patch_size, fov_mm=fov_mm, max_patches=max_patches)
    patches, masks, feats, nodules, patients, areas = [], [], [], [], [], []
    clinical, labels = {}, {}
    for entry in tqdm(entries, desc="cases", disable=not progress):
        if entry.label is None and require_labels:
            continue
        case = load_case(entry.image, entry.segmentation)
        prepared = prepare_case(case, preset_obj)
        patch_set = extract_patches(prepared, config)
        if not patch_set.patches:
            continue
        f = patch_features(prepared, patch_set.patches, DEFAULT_FEATURES)
        for patch, row in zip(patch_set.patches, f, strict=True):
            patches.append(patch.image)
            masks.append(patch.mask)
            feats.append(row)
            nodules.append(f"{entry.patient_id}/{patch.node_id}")
            patients.append(entry.patient_id)
            areas.append(patch.area_mm2)
        clinical[entry.patient_id] = encode_clinical(entry.clinical)
        labels[entry.patient_id] = int(entry.label) if entry.label is not None else -1
    if not patches:
        raise InputError(manifest, "no labelled patient with segmented nodes")
    n = len(patches)
    return PatchDataset(
        patches=np.clip(np.stack(patches), 0, 1)[:, None].astype(np.float32),
        masks=np.stack(masks),
        features=np.stack(feats),
        feature_names=DEFAULT_FEATURES,
        slice_label=np.full(n, -1, dtype=np.int64),
        nodule_id=np.asarray(nodules),
        patient_id=np.asarray(patients),
        area_mm2=np.asarray(areas, dtype=np.float32),
        mm_per_px=np.full(n, np.nan),
        source_size=patch_size,
        clinical=clinical,
        patient_label=labels,
    )
