"""Patient-grouped, stratified folds. Every slice and nodule of a patient stays in one fold."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold


def patient_folds(patients, labels, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds over patients.

    Args:
        patients: unique patient ids.
        labels: the patient label of each (stratification).
        n_splits: the number of folds.
        seed: the shuffling seed.

    Returns:
        A list of (train_patients, test_patients) arrays; every patient is tested exactly once.
    """
    patients = np.asarray(list(patients))
    labels = np.asarray(list(labels)).astype(int)
    if len(np.unique(patients)) != len(patients):
        raise ValueError("patient ids must be unique")
    counts = np.bincount(labels, minlength=2)
    splits = min(n_splits, int(counts[counts > 0].min())) if counts.min() > 0 else n_splits
    if splits < 2:
        raise ValueError("too few patients of one class for cross-validation")
    skf = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    return [(patients[tr], patients[te]) for tr, te in skf.split(patients, labels)]


def nested_folds(patients, labels, outer: int = 5, inner: int = 5, seed: int = 0) -> list[dict]:
    """Outer folds, each with inner folds drawn from its training patients only.

    Returns [{"train": ..., "test": ..., "inner": [(inner_train, inner_val), ...]}]."""
    patients = np.asarray(list(patients))
    labels = np.asarray(list(labels)).astype(int)
    lookup = dict(zip(patients.tolist(), labels.tolist(), strict=True))
    out = []
    for k, (train, test) in enumerate(patient_folds(patients, labels, outer, seed)):
        inner_folds = patient_folds(train, [lookup[p] for p in train], inner, seed + 1 + k)
        out.append({"train": train, "test": test, "inner": inner_folds})
    return out


def holdout_split(patients, labels, fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified (train, validation) split of patients (for early stopping).

    Args:
        patients: patient ids.
        labels: the patient label of each.
        fraction: the share of each class held out.
        seed: the shuffling seed.

    Returns:
        (train patients, validation patients).
    """
    patients = np.asarray(list(patients))
    labels = np.asarray(list(labels)).astype(int)
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = patients[labels == cls]
        members = members[rng.permutation(len(members))]
        take = max(1, int(round(len(members) * fraction))) if len(members) > 1 else 0
        val.extend(members[:take].tolist())
    val_set = set(val)
    train = np.asarray([p for p in patients if p not in val_set])
    return train, np.asarray(val)
