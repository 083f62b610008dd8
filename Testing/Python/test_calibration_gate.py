"""Per-member calibration and the collapse and quality gate, on data with known answers."""

from __future__ import annotations

import numpy as np

from LNMStagingLib.evaluation.comparison import fold_mean_interval, paired_auc_difference
from LNMStagingLib.evaluation.metrics import expected_calibration_error, fast_auc
from LNMStagingLib.models.calibration import Calibration, fit_platt
from LNMStagingLib.training.gate import MIN_INNER_AUC, judge


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
