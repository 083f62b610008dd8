"""Two simple baselines of the nested benchmark, on the same outer folds as the learned rows:

* ``area``: the largest lesion cross-section area in source pixels (no learning: the score is the area);
* ``logreg``: a logistic regression on the five simple features (short axis, long axis, axis ratio, convexity,
  compactness) of the largest cross-section.

A patient's score is its largest node's; a node's is its own. The threshold (Youden J) and, for ``area``, the
Platt calibration of the log area are fitted on the training patients only, so the rows' ECE and decisions are
as honest as the learned rows'. They answer "how much of the prediction is size?".
"""

from __future__ import annotations

import time

import numpy as np

from ..data.dataset import PatchDataset
from ..models.calibration import fit_platt
from ..training.threshold import choose_threshold
from .metrics import binary_metrics

BASELINES = ("area", "logreg")


def _largest(dataset: PatchDataset, group: np.ndarray, names: np.ndarray) -> np.ndarray:
    """For each name in ``names``, the row index of its largest cross-section (ties: the first row)."""
    area = dataset.area_mm2
    rows = []
    for name in names:
        idx = np.flatnonzero(group == name)
        rows.append(int(idx[np.argmax(area[idx])]))
    return np.asarray(rows, dtype=int)


def _units(dataset: PatchDataset, level: str, patients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, row of each name's largest cross-section, labels) of the patients or the labelled nodules."""
    idx = dataset.subset_patients(patients)
    if level == "patient":
        names = np.asarray(sorted(set(dataset.patient_id[idx].tolist())))
        labels = dataset.patient_labels()
        rows = _largest(dataset, dataset.patient_id, names)
    else:
        labels = dataset.nodule_labels()
        names = np.asarray(sorted(n for n in set(dataset.nodule_id[idx].tolist()) if labels[n] >= 0))
        rows = _largest(dataset, dataset.nodule_id, names)
    return names, rows, np.asarray([int(labels[n]) for n in names])


def _area_px(dataset: PatchDataset, rows: np.ndarray) -> np.ndarray:
    return dataset.area_mm2[rows] / np.square(dataset.mm_per_px[rows])


def _fit_predict(method: str, dataset: PatchDataset, level: str, train, test) -> dict:
    """One level's training fit and test predictions: (names, labels, probabilities, threshold, score)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, tr_rows, tr_y = _units(dataset, level, train)
    names, te_rows, te_y = _units(dataset, level, test)
    if method == "area":
        calibration = fit_platt(tr_y, _squash(np.log(_area_px(dataset, tr_rows))))
        p_train = calibration.apply(_squash(np.log(_area_px(dataset, tr_rows))))
        p_test = calibration.apply(_squash(np.log(_area_px(dataset, te_rows))))
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(dataset.features[tr_rows], tr_y)
        p_train = model.predict_proba(dataset.features[tr_rows])[:, 1]
        p_test = model.predict_proba(dataset.features[te_rows])[:, 1]
    threshold = choose_threshold(tr_y, p_train)
    return {"names": names, "y": te_y, "p": p_test, "threshold": threshold,
            "patients": np.asarray([dataset.patient_id[r] for r in te_rows])}


def _squash(log_area: np.ndarray) -> np.ndarray:
    """log area -> (0, 1) by the logistic function (Platt then rescales it; the order is kept)."""
    return 1.0 / (1.0 + np.exp(-(log_area - 4.0)))


def run_baseline_fold(dataset: PatchDataset, method: str, train, test) -> dict:
    """A baseline's fold result in the format of :func:`~LNMStagingLib.evaluation.benchmark.run_fold`.

    Args:
        dataset: the patches of every patient.
        method: ``area`` or ``logreg``.
        train: the training patients.
        test: the test patients.

    Returns:
        The result (metrics, threshold, predictions); nodes at their own threshold fitted on training nodes.
    """
    t0 = time.time()
    patient = _fit_predict(method, dataset, "patient", train, test)
    nodule = _fit_predict(method, dataset, "nodule", train, test)
    return {
        "method": method,
        "train_patients": sorted(map(str, train)),
        "test_patients": sorted(map(str, test)),
        "threshold": patient["threshold"],
        "nodule_threshold": nodule["threshold"],
        "selection": {"threshold_source": "Youden J on the training patients"},
        "patient": binary_metrics(patient["y"], patient["p"], patient["threshold"]),
        "nodule": binary_metrics(nodule["y"], nodule["p"], nodule["threshold"]) if len(nodule["y"]) else None,
        "predictions": {"patient_id": patient["names"].tolist(), "patient_prob": patient["p"].tolist(),
                        "patient_label": patient["y"].tolist(), "nodule_id": nodule["names"].tolist(),
                        "nodule_prob": nodule["p"].tolist(), "nodule_label": nodule["y"].tolist(),
                        "nodule_patient": nodule["patients"].tolist()},
        "wall_seconds": time.time() - t0,
        "torch_threads": 0,
    }


__all__ = ["BASELINES", "run_baseline_fold"]
