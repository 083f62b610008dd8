"""The data set every training and evaluation step works on: one row per patch (a node's cross-section)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PatchDataset:
    """Patches of node (or nodule) cross-sections with their features, nodes, patients and labels: the training
    and evaluation data of every source (LIDC-layout folders, cohort manifests, the synthetic cohort).

    ``patches`` (N, 1, S, S) float32 in [0, 1]; ``features`` (N, F) raw (mm).
    """

    patches: np.ndarray
    masks: np.ndarray  # (N, S, S) bool, at patch resolution
    features: np.ndarray
    feature_names: tuple[str, ...]
    slice_label: np.ndarray  # (N,) int, -1 unknown
    nodule_id: np.ndarray  # (N,) str
    patient_id: np.ndarray  # (N,) str
    area_mm2: np.ndarray  # (N,) cross-section area (bag order)
    mm_per_px: np.ndarray  # (N,) at the source resolution
    source_size: int  # pixels of the source crops (64 for LIDC)
    clinical: dict | None = None  # patient -> {"age": .., "sex": 0/1, "t_stage": 1-4} (None: no clinical data)
    patient_label: dict | None = None  # patient -> 0/1 when labels are patient-level only (cohorts)

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def patients(self) -> np.ndarray:
        return np.unique(self.patient_id)

    def patient_labels(self) -> dict[str, int]:
        if self.patient_label is not None:
            return dict(self.patient_label)
        out: dict[str, int] = {}
        for p, y in zip(self.patient_id, self.slice_label, strict=True):
            out[p] = max(out.get(p, 0), int(y))
        return out

    def nodule_labels(self) -> dict[str, int]:
        return {n: int(y) for n, y in zip(self.nodule_id, self.slice_label, strict=True)}

    def subset_patients(self, patients) -> np.ndarray:
        """Indices of the slices of the given patients."""
        return np.flatnonzero(np.isin(self.patient_id, np.asarray(list(patients))))

    def fov_mm(self) -> float:
        """Median field of view (mm) of a source crop over nodules."""
        _, first = np.unique(self.nodule_id, return_index=True)
        return float(np.median(self.mm_per_px[first] * self.source_size))
