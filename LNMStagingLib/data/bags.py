"""Patient bags for the multiple-instance classifier.

A bag is one patient: up to ``max_patches`` patches (largest node cross-sections first, exactly like the
foundation's ``PatchSet.stacked()``), zero padded, with a validity mask, the node each patch belongs to,
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
        """Build a padded bag from a patient's patches: keeps the ``max_patches`` largest by ``areas``."""
        images = np.asarray(images, dtype=np.float32)
        features = np.asarray(features, dtype=np.float32)
        n = images.shape[0]
        if features.shape[0] != n or len(node_ids) != n:
            raise ValueError("images, features and node_ids differ in length")
        order = np.arange(n) if areas is None else np.argsort(-np.asarray(areas, dtype=np.float64), kind="stable")
        order = order[:max_patches]
        size = images.shape[1:] if n else (32, 32)
        patches = np.zeros((max_patches, *size), dtype=np.float32)
        feats = np.zeros((max_patches, features.shape[1] if features.ndim == 2 else 0), dtype=np.float32)
        valid = np.zeros(max_patches, dtype=bool)
        node_index = np.full(max_patches, -1, dtype=np.int64)
        distinct: list = []
        for slot, source in enumerate(order):
            patches[slot] = images[source]
            feats[slot] = features[source]
            valid[slot] = True
            node = node_ids[source]
            if node not in distinct:
                distinct.append(node)
            node_index[slot] = distinct.index(node)
        labels = None
        if node_labels is not None:
            labels = np.asarray([int(node_labels.get(node, -1)) for node in distinct], dtype=np.int64)
        return cls(patches, feats, valid, node_index, clinical, label, patient_id, distinct, labels)


def stack_bags(bags: Sequence[Bag]) -> dict[str, np.ndarray]:
    """Stack bags to arrays: patches (B, M, H, W), features (B, M, F), valid (B, M), node_index (B, M)."""
    return {
        "patches": np.stack([b.patches for b in bags]),
        "features": np.stack([b.features for b in bags]),
        "valid": np.stack([b.valid for b in bags]),
        "node_index": np.stack([np.where(b.node_index < 0, 0, b.node_index) for b in bags]),
    }


def bag_slots(patient_id: np.ndarray, nodule_id: np.ndarray, area: np.ndarray, patients,
              max_patches: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """For each patient: the indices of its ``max_patches`` largest slices (-1 = padding) (B, M), and the
    node index of each slot (B, M) (patches of one nodule share an index; padding 0)."""
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


def gather_slots(values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """values (N, ...) gathered into (B, M, ...) with zeros at padding (slots == -1)."""
    out = np.zeros((*slots.shape, *values.shape[1:]), dtype=values.dtype)
    keep = slots >= 0
    out[keep] = values[slots[keep]]
    return out
