"""Binary classification metrics, bootstrap intervals, calibration."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

METRIC_KEYS = ("auc", "sensitivity", "specificity", "accuracy", "f1", "balanced_accuracy", "ece")


def fast_auc(y, p) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks); NaN with one class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(int)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(p, dtype=float))
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    y = np.asarray(y).astype(float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def binary_metrics(y, p, threshold: float = 0.5, auc: float | None = None) -> dict[str, float]:
    """AUC, sensitivity, specificity, accuracy, F1, balanced accuracy, ECE (+ counts) at ``threshold``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * prec * sens / (prec + sens) if (prec + sens) > 0 and np.isfinite(sens) else 0.0
    if auc is None:
        auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {
        "auc": auc,
        "sensitivity": float(sens),
        "specificity": float(spec),
        "accuracy": float((tp + tn) / max(len(y), 1)),
        "f1": float(f1),
        "balanced_accuracy": float((sens + spec) / 2),
        "ece": expected_calibration_error(y, p),
        "threshold": float(threshold),
        "n": int(len(y)),
        "n_positive": int(y.sum()),
    }


def bootstrap_intervals(y, p, threshold: float, n_boot: int = 1000, seed: int = 0, groups=None,
                        keys=METRIC_KEYS) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals; with ``groups`` (e.g. patient ids) whole groups are resampled."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [np.array([i]) for i in range(len(y))]
    else:
        groups = np.asarray(groups)
        units = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n_boot):
        pick = rng.integers(0, len(units), len(units))
        idx = np.concatenate([units[i] for i in pick])
        if len(np.unique(y[idx])) < 2:
            continue
        m = binary_metrics(y[idx], p[idx], threshold, auc=fast_auc(y[idx], p[idx]))
        for k in keys:
            samples[k].append(m[k])
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] if v else [float("nan")] * 2
            for k, v in samples.items()}


def summarise_folds(per_fold: list[dict], keys=METRIC_KEYS) -> dict[str, list[float]]:
    """Mean and SD over folds: {key: [mean, sd]}."""
    out = {}
    for k in keys:
        values = np.asarray([f[k] for f in per_fold if k in f], dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            out[k] = [float("nan"), float("nan")]
            continue
        out[k] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
    return out


def reliability_curve(y, p, n_bins: int = 10) -> dict[str, list[float]]:
    y = np.asarray(y).astype(float)
    p = np.asarray(p, dtype=float)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    conf, acc, count = [], [], []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            conf.append(float(p[sel].mean()))
            acc.append(float(y[sel].mean()))
            count.append(int(sel.sum()))
    return {"confidence": conf, "observed": acc, "count": count}
