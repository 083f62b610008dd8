"""The decision threshold chosen on validation predictions (the calibration step of training)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def choose_threshold(y, p) -> float:
    """Threshold maximising Youden's J (= balanced accuracy) on validation predictions.

    Args:
        y: 0/1 labels.
        p: predicted probabilities.

    Returns:
        The threshold in [0, 1] (0.5 when ``y`` has one class).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p)
    j = tpr - fpr
    best = int(np.argmax(j))
    t = thresholds[best]
    if not np.isfinite(t):
        t = 1.0
    return float(np.clip(t, 0.0, 1.0))
