"""Intervals of the benchmark's summary figures: the fold mean's t-interval and the paired bootstrap of an AUC
difference between two rows on the same patients.

The fold mean (each fold's AUC, averaged) and the pooled figure (one AUC of every out-of-fold prediction) answer
different questions and get different intervals: the fold mean's interval is a t-interval over the folds; the
pooled figure's is a patient bootstrap (:func:`~LNMStagingLib.evaluation.benchmark.summarise`).
"""

from __future__ import annotations

import numpy as np

from .metrics import fast_auc


def fold_mean_interval(values) -> list[float]:
    """The 95% t-interval of the mean of per-fold values (NaN folds left out).

    Returns:
        [low, high]; [mean, mean] with one fold.
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [float("nan"), float("nan")]
    if len(v) == 1:
        return [float(v[0]), float(v[0])]
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return [float(v.mean() - half), float(v.mean() + half)]


def _pooled(results: list[dict]) -> dict[str, tuple[int, float]]:
    """patient id -> (label, out-of-fold probability) over a row's folds."""
    out = {}
    for r in results:
        pred = r["predictions"]
        for pid, y, p in zip(pred["patient_id"], pred["patient_label"], pred["patient_prob"], strict=True):
            out[str(pid)] = (int(y), float(p))
    return out


def paired_auc_difference(results_a: list[dict], results_b: list[dict], n_boot: int = 2000,
                          seed: int = 0) -> dict | None:
    """AUC of row a minus AUC of row b on the patients both predicted out of fold, with a paired patient
    bootstrap 95% interval (the same resampled patients score both rows) and the per-fold differences.

    Args:
        results_a: the fold results of row a (``predictions`` with patient ids, labels, probabilities).
        results_b: the fold results of row b.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.

    Returns:
        ``pooled_difference``, ``ci95``, ``fold_differences``, ``fold_mean_difference``, ``fold_mean_ci95``,
        ``share_of_resamples_a_better``, ``patients``; None when the rows share no patients.
    """
    a, b = _pooled(results_a), _pooled(results_b)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    y = np.asarray([a[pid][0] for pid in common])
    pa = np.asarray([a[pid][1] for pid in common])
    pb = np.asarray([b[pid][1] for pid in common])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            diffs.append(fast_auc(y[idx], pa[idx]) - fast_auc(y[idx], pb[idx]))
    diffs = np.asarray(diffs)
    by_fold_b = {tuple(sorted(map(str, r["test_patients"]))): r["patient"]["auc"] for r in results_b}
    fold_diffs = [float(r["patient"]["auc"] - by_fold_b[key]) for r in results_a
                  if (key := tuple(sorted(map(str, r["test_patients"])))) in by_fold_b]
    return {
        "pooled_difference": float(fast_auc(y, pa) - fast_auc(y, pb)),
        "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "share_of_resamples_a_better": float(np.mean(diffs > 0)),
        "fold_differences": fold_diffs,
        "fold_mean_difference": float(np.mean(fold_diffs)) if fold_diffs else float("nan"),
        "fold_mean_ci95": fold_mean_interval(fold_diffs),
        "patients": len(common),
    }


__all__ = ["fold_mean_interval", "paired_auc_difference"]
