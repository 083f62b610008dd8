"""Per-member calibration and the collapse and quality gate, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from LNMStagingLib.evaluation.comparison import fold_mean_interval, paired_auc_difference
from LNMStagingLib.evaluation.metrics import expected_calibration_error, fast_auc
from LNMStagingLib.models.calibration import Calibration, fit_platt
from LNMStagingLib.training.gate import MIN_INNER_AUC, judge
from LNMStagingLib.training.threshold import choose_threshold


def _scaled_member(rng, n: int, squeeze: float, shift: float):
    """Labels with true probabilities q, and a member that reports q on a squeezed, shifted logit scale."""
    q = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < q).astype(int)
    logit = np.log(q / (1 - q))
    return y, q, 1 / (1 + np.exp(-(squeeze * logit + shift)))


def test_platt_puts_members_on_different_scales_back_on_one():
    rng = np.random.default_rng(0)
    y_a, _, p_a = _scaled_member(rng, 4000, 0.2, 0.3)  # a member squeezed near 0.57 (like a near-collapse)
    y_b, _, p_b = _scaled_member(rng, 4000, 2.0, -1.0)
    cal_a, cal_b = fit_platt(y_a, p_a), fit_platt(y_b, p_b)
    assert abs(cal_a.slope - 5.0) < 0.8 and abs(cal_b.slope - 0.5) < 0.1
    y, raw = np.concatenate([y_a, y_b]), np.concatenate([p_a, p_b])
    calibrated = np.concatenate([cal_a.apply(p_a), cal_b.apply(p_b)])
    assert expected_calibration_error(y, raw) > 0.1
    assert expected_calibration_error(y, calibrated) < 0.03
    # pooling across scales loses ranking; calibration recovers it (each member's own AUC is unchanged)
    assert fast_auc(y, calibrated) > fast_auc(y, raw) + 0.02
    assert np.isclose(fast_auc(y_a, cal_a.apply(p_a)), fast_auc(y_a, p_a))


def test_calibration_round_trips_and_one_class_gives_the_identity():
    cal = Calibration(1.7, -0.2, "platt", 12)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict(None).is_identity
    assert fit_platt([1, 1, 1], [0.2, 0.5, 0.9]).is_identity


def test_gate_catches_a_collapse_and_a_weak_recipe():
    rng = np.random.default_rng(1)
    oof = rng.uniform(0.1, 0.9, 200)
    collapsed = judge(rng.uniform(0.513, 0.540, 200), oof, 0.8, seed=0)  # the shipped member 3's range
    assert not collapsed["passed"] and collapsed["retry"] and "collapsed" in collapsed["reasons"][0]
    weak = judge(rng.uniform(0.1, 0.9, 200), oof, MIN_INNER_AUC - 0.05, seed=0)
    assert not weak["passed"] and not weak["retry"]  # another seed of the final model cannot fix the recipe
    assert judge(rng.uniform(0.1, 0.9, 200), oof, 0.8, seed=0)["passed"]


def test_head_gate_drops_a_collapsed_or_a_weak_head():
    from LNMStagingLib.training.gate import MIN_HEAD_SPREAD, judge_head

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 50)
    ranked = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, 100), 0, 1)
    assert judge_head(ranked, y)["passed"]
    constant = 0.5 + 1e-5 * (ranked - 0.5)  # the same output for every patient, to float noise
    verdict = judge_head(constant, y)
    assert not verdict["passed"] and "collapsed" in verdict["reasons"][0] and verdict["output_sd"] < MIN_HEAD_SPREAD
    reversed_ = judge_head(1.0 - ranked, y)  # ranks its unseen patients the wrong way round
    assert not reversed_["passed"] and reversed_["auc_judged"] and reversed_["auc"] < MIN_INNER_AUC
    # narrow heads that rank well pass (their own Platt scaling stretches them): an epoch-1 LIDC head (SD ~0.035)
    # and the tiny recipe's (SD ~0.001, AUC 1)
    assert judge_head(0.5 + 0.12 * (ranked - 0.5), y)["passed"]
    assert judge_head(0.5 + 0.004 * (ranked - 0.5), y)["passed"]
    # on 5 patients of each class the AUC is mostly chance: not judged
    few = judge_head(1.0 - ranked[45:55], y[45:55])
    assert few["passed"] and not few["auc_judged"]


def test_paired_difference_and_fold_interval():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.6, 300)
    noise = rng.normal(0, 1, 300)

    def folds(p):
        return [{"test_patients": [str(i) for i in range(k, 300, 3)], "patient": {"auc": fast_auc(y[k::3], p[k::3])},
                 "predictions": {"patient_id": [str(i) for i in range(k, 300, 3)], "patient_label": y[k::3].tolist(),
                                 "patient_prob": p[k::3].tolist()}} for k in range(3)]

    diff = paired_auc_difference(folds(good), folds(noise), n_boot=300)
    assert diff["patients"] == 300 and diff["ci95"][0] > 0.2  # a real difference excludes zero
    same = paired_auc_difference(folds(good), folds(good + 1e-9 * noise), n_boot=300)
    assert same["ci95"][0] <= 0 <= same["ci95"][1] or abs(same["pooled_difference"]) < 1e-6
    low, high = fold_mean_interval([0.8, 0.82, 0.84])
    assert low < 0.82 < high and np.isclose((low + high) / 2, 0.82)


# ---------------------------------------------------------------- cross-fitted calibration (real fit, tiny data)
@pytest.fixture(scope="module")
def tiny_fit():
    """A real fit on synthetic blobs (the tiny bundle's recipe) and its training patients."""
    from LNMStagingLib.data.lidc import build_dataset
    from LNMStagingLib.synthetic.nodules import make_synthetic_nodules
    from LNMStagingLib.training.context import RunContext
    from LNMStagingLib.training.pipeline import fit
    from LNMStagingLib.training.tiny import tiny_pipeline_config

    dataset = build_dataset(*make_synthetic_nodules(n_patients=30, seed=3), patch_size=32)
    train = dataset.patients[:22]
    fitted = fit(dataset, train, tiny_pipeline_config(3), RunContext(progress=False, log=lambda *_: None))
    return dataset, train, fitted


def test_each_head_is_calibrated_on_its_own_held_out_patients_and_the_output_is_their_mean(tiny_fit):
    dataset, train, fitted = tiny_fit
    held_out = fitted.selection["inner_validation"]
    gate = fitted.selection["quality_gate"]
    assert len(gate["heads"]) == 2 and all(set(v) >= {"passed", "auc", "output_sd"} for v in gate["heads"])
    kept = [k for k, v in enumerate(gate["heads"]) if v["passed"]]
    assert gate["dropped_heads"] == [k for k in range(2) if k not in kept]
    assert len(fitted.inner_mils) == len(fitted.head_calibrations) == len(held_out) == len(kept) == 2
    assert sorted(p for ids in held_out for p in ids) == sorted(map(str, train))  # a partition of the patients
    raw = fitted.raw_predictions(dataset, train)
    position = {p: i for i, p in enumerate(raw["patient_id"])}
    y = np.asarray(raw["patient_label"])
    calibrated_oof = np.empty(len(y))
    for k, ids in enumerate(held_out):
        rows = [position[p] for p in ids]
        own = fit_platt(y[rows], np.asarray(raw["inner"][k])[rows])  # refitted on head k's own held-out outputs
        assert np.isclose(own.slope, fitted.head_calibrations[k].slope, atol=1e-3)
        assert np.isclose(own.intercept, fitted.head_calibrations[k].intercept, atol=1e-3)
        calibrated_oof[rows] = fitted.head_calibrations[k].apply(np.asarray(raw["inner"][k])[rows])
    # the threshold is chosen on the calibrated out-of-fold predictions
    assert np.isclose(fitted.threshold, choose_threshold(y, calibrated_oof))
    # the patient probability applied is the mean of the calibrated heads (not the final classifier)
    test = dataset.patients[22:]
    pred, test_raw = fitted.predict(dataset, test), fitted.raw_predictions(dataset, test)
    expected = np.mean([c.apply(np.asarray(test_raw["inner"][k])) for k, c in enumerate(fitted.head_calibrations)],
                       axis=0)
    assert np.allclose(pred["patient_prob"], expected, atol=1e-5)
    assert not np.allclose(pred["patient_prob"], fitted.calibration.apply(np.asarray(test_raw["final"])), atol=1e-3)


def test_a_fitted_model_with_heads_round_trips(tiny_fit, tmp_path):
    from LNMStagingLib.training.fitted import FittedModel
    from LNMStagingLib.training.tiny import tiny_pipeline_config

    dataset, _, fitted = tiny_fit
    fitted.save(tmp_path / "model", tiny_pipeline_config(3))
    again = FittedModel.load(tmp_path / "model")
    assert again.head_calibrations == fitted.head_calibrations and len(again.inner_mils) == 2
    patients = dataset.patients[22:]
    assert np.allclose(again.predict(dataset, patients)["patient_prob"], fitted.predict(dataset, patients)["patient_prob"])


def test_isotonic_calibration_is_monotone_round_trips_and_agrees_in_torch():
    import torch

    from LNMStagingLib.models.calibration import fit_isotonic

    rng = np.random.default_rng(4)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(size=500) < p**2).astype(int)  # the true frequency is p squared
    iso = fit_isotonic(y, p)
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(iso.apply(grid)) >= 0)
    assert abs(float(iso.apply(np.array([0.5]))[0]) - 0.25) < 0.12
    assert Calibration.from_dict(iso.to_dict()) == iso
    assert np.allclose(iso.apply(torch.as_tensor(grid)).numpy(), iso.apply(grid), atol=1e-9)
    with pytest.raises(ValueError):
        Calibration.from_dict({**iso.to_dict(), "knots_y": list(iso.knots_y)[::-1]})
