"""Patient bags for the multiple-instance classifier.

A bag is one patient: up to ``max_patches`` patches (largest node cross-sections first, exactly like
``PatchSet.stacked()``), zero padded, with a validity mask, the node each patch belongs to,
the raw (mm) size/border features of each patch's cross-section, and optional clinical data.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Bag:
    """One patient.

    ``patches`` (M, H, W) float32 in [0, 1] (already masked when the model wants lesion-only input);
    ``features`` (M, F) float32 raw size/border features (mm, ratios) in the model's ``feature_names`` order;
    ``valid`` (M,) bool; ``node_index`` (M,) int64, patches of one node share an index (padding: -1);
    ``clinical`` dict of named clinical values (missing keys or None = missing); ``label`` optional (0/1);
    ``node_ids`` the node identifier of each distinct index; ``node_labels`` optional per index (-1 unknown).
    """

    patches: np.ndarray
    features: np.ndarray
    valid: np.ndarray
    node_index: np.ndarray
    clinical: dict | None = None
    label: int | None = None
    patient_id: str = ""
    node_ids: list = field(default_factory=list)
    node_labels: np.ndarray | None = None

    @property
    def max_patches(self) -> int:
        return int(self.valid.shape[0])

    @classmethod
    def from_patches(
        cls,
        images: Sequence[np.ndarray] | np.ndarray,
        features: Sequence[Sequence[float]] | np.ndarray,
        node_ids: Sequence[Hashable],
        areas: Sequence[float] | None = None,
        max_patches: int = 15,
        clinical: dict | None = None,
        label: int | None = None,
        patient_id: str = "",
        node_labels: dict | None = None,
    ) -> Bag:
        """Build a padded bag from a patient's patches: keeps the ``max_patches`` largest by ``areas``
        (:func:`bag_slots`, the bag builder of training and evaluation too)."""
        images = np.asarray(images, dtype=np.float32)
        features = np.asarray(features, dtype=np.float32)
        n = images.shape[0]
        if features.shape[0] != n or len(node_ids) != n:
            raise ValueError("images, features and node_ids differ in length")
        keys = np.asarray([str(node) for node in node_ids])
        slot_areas = np.zeros(n) if areas is None else np.asarray(areas, dtype=np.float64)
        slots, node_index = bag_slots(np.zeros(n, dtype=np.int64), keys, slot_areas, [0], max_patches)
        slots, node_index = slots[0], node_index[0]
        valid = slots >= 0
        size = images.shape[1:] if n else (32, 32)
        patches = np.zeros((max_patches, *size), dtype=np.float32)
        patches[valid] = images[slots[valid]]
        feats = np.zeros((max_patches, features.shape[1] if features.ndim == 2 else 0), dtype=np.float32)
        feats[valid] = features[slots[valid]]
        node_index = np.where(valid, node_index, -1)
        distinct = list(dict.fromkeys(node_ids[i] for i in slots[valid]))
        labels = None
        if node_labels is not None:
            labels = np.asarray([int(node_labels.get(node, -1)) for node in distinct], dtype=np.int64)
        return cls(patches, feats, valid, node_index, clinical, label, patient_id, distinct, labels)


def bag_slots(patient_id: np.ndarray, nodule_id: np.ndarray, area: np.ndarray, patients,
              max_patches: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """The one bag builder: each patient's ``max_patches`` largest slices, in order of decreasing area.

    Args:
        patient_id: (N,) the patient of each slice.
        nodule_id: (N,) the node of each slice.
        area: (N,) cross-section areas (ties keep the slices' order).
        patients: the bags to build, in this order.
        max_patches: the bag size.

    Returns:
        (slots, nodes): (B, M) the slice index of each slot (-1 = padding) and the node index of each slot
        (patches of one node share an index, numbered by first appearance; padding 0).
    """
    patients = list(patients)
    slots = np.full((len(patients), max_patches), -1, dtype=np.int64)
    nodes = np.zeros((len(patients), max_patches), dtype=np.int64)
    by_patient: dict[str, list[int]] = {}
    for i, p in enumerate(patient_id):
        by_patient.setdefault(str(p), []).append(i)
    for b, p in enumerate(patients):
        idx = np.asarray(by_patient.get(str(p), []), dtype=np.int64)
        if len(idx) == 0:
            continue
        idx = idx[np.argsort(-area[idx], kind="stable")][:max_patches]
        slots[b, : len(idx)] = idx
        distinct: list[str] = []
        for s, i in enumerate(idx):
            key = str(nodule_id[i])
            if key not in distinct:
                distinct.append(key)
            nodes[b, s] = distinct.index(key)
    return slots, nodes
