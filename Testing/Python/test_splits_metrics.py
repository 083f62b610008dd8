"""Cross-validation never leaks patients; metrics are computed correctly; fitting never touches test patients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LNMStagingLib.data.splits import holdout_split, nested_folds, patient_folds
from LNMStagingLib.evaluation.metrics import (
    binary_metrics,
    bootstrap_intervals,
    expected_calibration_error,
    summarise_folds,
)
from LNMStagingLib.training.threshold import choose_threshold


def _patients(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray([f"p{i:03d}" for i in range(n)]), (rng.random(n) < 0.35).astype(int)


def test_patient_folds_partition_patients_and_stratify():
    patients, labels = _patients()
    folds = patient_folds(patients, labels, 5, seed=1)
    assert len(folds) == 5
    tests = [set(te) for _, te in folds]
    assert set().union(*tests) == set(patients)
    assert sum(len(t) for t in tests) == len(patients)  # every patient tested exactly once
    rate = labels.mean()
    lookup = dict(zip(patients, labels, strict=True))
    for train, test in folds:
        assert not set(train) & set(test)
        assert abs(np.mean([lookup[p] for p in test]) - rate) < 0.15


def test_nested_inner_folds_never_see_the_outer_test_fold():
    patients, labels = _patients(80, seed=2)
    for fold in nested_folds(patients, labels, outer=5, inner=3, seed=0):
        outer_test = set(fold["test"])
        assert not outer_test & set(fold["train"])
        for inner_train, inner_val in fold["inner"]:
            assert not (set(inner_train) | set(inner_val)) & outer_test
            assert not set(inner_train) & set(inner_val)
            assert set(inner_train) | set(inner_val) == set(fold["train"])
    train, val = holdout_split(patients, labels, 0.2, seed=0)
    assert not set(train) & set(val) and set(train) | set(val) == set(patients)
    assert 0 < labels[np.isin(patients, val)].sum() < len(val)


def test_binary_metrics_known_values():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = binary_metrics(y, p, 0.5)
    assert m["sensitivity"] == pytest.approx(0.75) and m["specificity"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75) and m["f1"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(15 / 16)
    assert 0.3 <= choose_threshold(y, p) <= 0.7
    assert expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5)) == pytest.approx(0.0)
    ci = bootstrap_intervals(y, p, 0.5, n_boot=200)
    assert ci["auc"][0] <= m["auc"] <= ci["auc"][1]
    summary = summarise_folds([{"auc": 0.8}, {"auc": 0.9}])
    assert summary["auc"][0] == pytest.approx(0.85) and summary["auc"][1] == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_fit_never_reads_test_patients():
    """Poison the test patients' patches and features with NaN: fitting must stay finite."""
    from LNMStagingLib.data.lidc import build_dataset
    from LNMStagingLib.models.vae import VAEConfig
    from LNMStagingLib.synthetic.nodules import make_synthetic_nodules
    from LNMStagingLib.training.config import PipelineConfig
    from LNMStagingLib.training.context import RunContext
    from LNMStagingLib.training.mil_train import MILTrainConfig
    from LNMStagingLib.training.pipeline import fit
    from LNMStagingLib.training.vae_train import VAETrainConfig

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arrays, diameters = make_synthetic_nodules(n_patients=30, seed=5)
        dataset = build_dataset(arrays, diameters)
        test = dataset.patients[-8:]
        poisoned = dataset.subset_patients(test)
        dataset.patches[poisoned] = np.nan
        dataset.features[poisoned] = np.nan
        dataset.area_mm2[poisoned] = np.nan
        train = dataset.patients[:-8]
        config = PipelineConfig(method="vae", vae=VAEConfig(base=4, latent_size=4),
                                vae_train=VAETrainConfig(epochs=2, min_epochs=1, batch_size=32),
                                mil={"patch_hidden": 8, "patient_hidden": 8}, mil_train=MILTrainConfig(epochs=5),
                                mil_grid=[{"eta": 0.8}], inner_folds=2, synthetic_patients=2)
        fitted = fit(dataset, train, config, RunContext(progress=False, log=lambda *_: None))
        for module in (fitted.encoder, fitted.mil):
            for name, tensor in module.state_dict().items():
                if tensor.is_floating_point():
                    assert torch.isfinite(tensor).all(), name
        assert np.isfinite(fitted.threshold)
        assert np.all(np.isfinite(fitted.scaler.minimum)) and np.all(np.isfinite(fitted.scaler.maximum))
    finally:
        torch.set_num_threads(previous)
