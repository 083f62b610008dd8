"""The learned node-feature models of the rectal benchmark, each fitted with its choices made on inner folds.

* ``mil``: the multiple-instance head of :mod:`LNMStagingLib.models.mil` in its features-only form: every T2
  node is one instance with features ``short_axis_mm`` and the one-hot reads (round, irregular border,
  heterogeneous; signal low / intermediate / high / not assessable); patient inputs age, sex and therapy
  (a covariate). The inner folds choose the head's size and mixing, the epochs and the threshold.
* ``logistic``: a logistic regression on the largest node's features (the same one-hot reads; a flag for
  a patient without T2 nodes) plus age, sex and therapy; the inner folds choose C and the threshold.

Both functions see only the outer training patients; the outer test patients are predicted once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.rectal import RectalPatient
from ..data.splits import patient_folds
from ..imaging.criteria import SIGNALS, NodeReads
from ..models.mil import ClinicalSpec, FeatureScaler, MILConfig, clinical_vector
from ..training.mil_train import MILData, MILTrainConfig, predict_mil, train_mil
from ..training.threshold import choose_threshold
from .metrics import fast_auc

NODE_FEATURES = ("short_axis_mm", "round", "irregular_border", "heterogeneous",
                 *(f"signal_{s}" for s in SIGNALS), "signal_not_assessable")
CLINICAL = (ClinicalSpec("age", 18.0, 100.0, "age in years"), ClinicalSpec("sex", 0.0, 1.0, "0 = female, 1 = male"),
            ClinicalSpec("therapy", 0.0, 1.0, "0 = surgery alone, 1 = neoadjuvant therapy before the MRI"))
MAX_NODES = 32  # the data's largest patient has 29 T2 nodes: every node is kept


def node_vector(reads: NodeReads) -> list[float]:
    """One node's raw features in :data:`NODE_FEATURES` order (short axis in mm, the reads one-hot)."""
    signal = [float(reads.signal == s) for s in SIGNALS] + [float(reads.signal is None)]
    return [reads.short_axis_mm, float(reads.round), float(reads.irregular_border), float(reads.heterogeneous),
            *signal]


def clinical_values(patient: RectalPatient) -> dict[str, float]:
    """The patient inputs: age, sex (1 male), therapy (1 neoadjuvant)."""
    return {"age": patient.age, "sex": float(patient.sex == "m"), "therapy": float(patient.therapy != "surgeryAlone")}


def strata(patients: list[RectalPatient]) -> np.ndarray:
    """Fold strata: N status x therapy, so every fold holds both cohorts and both classes."""
    return np.asarray([p.n_status + 2 * int(p.therapy != "surgeryAlone") for p in patients])


def _bags(patients: list[RectalPatient], scaler: FeatureScaler) -> MILData:
    n = len(patients)
    features = np.zeros((n, MAX_NODES, len(NODE_FEATURES)), dtype=np.float32)
    valid = np.zeros((n, MAX_NODES), dtype=bool)
    for b, p in enumerate(patients):
        nodes = sorted(p.nodes, key=lambda r: -r.short_axis_mm)[:MAX_NODES]  # largest first, as the bags are
        if nodes:
            features[b, : len(nodes)] = scaler.transform(np.asarray([node_vector(r) for r in nodes]))
            valid[b, : len(nodes)] = True
    node_index = np.tile(np.arange(MAX_NODES), (n, 1))  # every instance is its own node
    clinical = np.stack([clinical_vector(CLINICAL, clinical_values(p)) for p in patients])
    labels = np.asarray([p.n_status for p in patients], dtype=np.float32)
    return MILData(None, torch.from_numpy(features), torch.from_numpy(valid), torch.from_numpy(node_index),
                   torch.from_numpy(labels), None, torch.from_numpy(clinical))


def _scaler(patients: list[RectalPatient]) -> FeatureScaler:
    rows = [node_vector(r) for p in patients for r in p.nodes]
    return FeatureScaler.fit(NODE_FEATURES, np.asarray(rows, dtype=np.float64))


@dataclass(frozen=True)
class MILSettings:
    """The features-only MIL head's fixed training settings and its inner-fold grid."""

    epochs: int = 80
    batch_size: int = 16
    lr: float = 3e-3
    grid: tuple[dict, ...] = (
        {"patch_hidden": 16, "patient_hidden": 8, "eta": 0.5, "weight_decay": 1e-2},
        {"patch_hidden": 32, "patient_hidden": 16, "eta": 0.8, "weight_decay": 1e-2},
        {"patch_hidden": 16, "patient_hidden": 8, "mode": "max", "weight_decay": 1e-1},
    )

    @classmethod
    def quick(cls) -> MILSettings:
        return cls(epochs=8, grid=cls.grid[:2])


def _mil_configs(entry: dict, settings: MILSettings, seed: int) -> tuple[MILConfig, MILTrainConfig]:
    head = {k: v for k, v in entry.items() if k != "weight_decay"}
    config = MILConfig(latent_dim=0, feature_names=NODE_FEATURES, clinical=CLINICAL, max_patches=MAX_NODES,
                       use_latent=False, **head)
    train = MILTrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                           weight_decay=entry.get("weight_decay", 1e-2), oversample_positive=1.0, node_weight=0.0,
                           seed=seed)
    return config, train


def fit_predict_mil(train: list[RectalPatient], test: list[RectalPatient], settings: MILSettings, inner: int,
                    seed: int) -> tuple[np.ndarray, float, dict]:
    """Choose the MIL head on inner folds of ``train``, refit on all of ``train``, predict ``test``.

    Args:
        train: the outer training patients (the only ones any choice sees).
        test: the outer test patients.
        settings: training settings and the grid.
        inner: the number of inner folds.
        seed: the seed of the inner folds and of every fit.

    Returns:
        (test probabilities, threshold chosen on the inner predictions, the choices made).
    """
    y = np.asarray([p.n_status for p in train])
    folds = patient_folds(np.arange(len(train)), strata(train), inner, seed)
    best = None
    for g, entry in enumerate(settings.grid):
        pooled, epochs = np.zeros(len(train)), []
        for k, (tr, va) in enumerate(folds):
            part = [train[i] for i in tr]
            scaler = _scaler(part)
            config, tconf = _mil_configs(entry, settings, seed + 100 * g + k)
            model, history = train_mil(_bags(part, scaler), _bags([train[i] for i in va], scaler), config, tconf)
            pooled[va] = predict_mil(model, _bags([train[i] for i in va], scaler))["final"]
            epochs.append(history["best_epoch"] + 1)
        auc = fast_auc(y, pooled)
        if best is None or auc > best[0]:
            best = (auc, g, int(np.median(epochs)), choose_threshold(y, pooled))
    auc, g, n_epochs, threshold = best
    scaler = _scaler(train)
    config, tconf = _mil_configs(settings.grid[g], settings, seed + 7919)
    model, _ = train_mil(_bags(train, scaler), None, config, replace(tconf, epochs=n_epochs), fixed_epochs=n_epochs)
    probabilities = predict_mil(model, _bags(test, scaler))["final"].astype(np.float64)
    return probabilities, threshold, {"grid_index": g, "epochs": n_epochs, "inner_auc": auc, "threshold": threshold}


def largest_node_matrix(patients: list[RectalPatient]) -> np.ndarray:
    """Per patient: the largest node's features (zeros and a flag when it has no T2 node) + age, sex, therapy."""
    rows = []
    for p in patients:
        largest = max(p.nodes, key=lambda r: r.short_axis_mm, default=None)
        node = node_vector(largest) if largest else [0.0] * len(NODE_FEATURES)
        clinical = clinical_values(p)
        rows.append([*node, float(largest is None), clinical["age"], clinical["sex"], clinical["therapy"]])
    return np.asarray(rows, dtype=np.float64)


C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_predict_logistic(train: list[RectalPatient], test: list[RectalPatient], inner: int,
                         seed: int) -> tuple[np.ndarray, float, dict]:
    """Choose C on inner folds of ``train``, refit on all of ``train``, predict ``test``.

    Args:
        train: the outer training patients.
        test: the outer test patients.
        inner: the number of inner folds.
        seed: the seed of the inner folds.

    Returns:
        (test probabilities, threshold chosen on the inner predictions, the choices made).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = largest_node_matrix(train), np.asarray([p.n_status for p in train])
    folds = patient_folds(np.arange(len(train)), strata(train), inner, seed)

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    best = None
    for c in C_GRID:
        pooled = np.zeros(len(train))
        for tr, va in folds:
            pooled[va] = model(c).fit(x[tr], y[tr]).predict_proba(x[va])[:, 1]
        auc = fast_auc(y, pooled)
        if best is None or auc > best[0]:
            best = (auc, c, choose_threshold(y, pooled))
    auc, c, threshold = best
    probabilities = model(c).fit(x, y).predict_proba(largest_node_matrix(test))[:, 1]
    return probabilities, threshold, {"C": c, "inner_auc": auc, "threshold": threshold}
