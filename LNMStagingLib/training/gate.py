"""The collapse and quality gate of a fitted model, applied after the final classifier is retrained.

The final classifier is retrained for a fixed number of epochs without validation, so nothing else would notice
a classifier that collapsed to one output for every patient (a bundled fold member once gave 0.51-0.54 to every
held-out patient). Two checks, both on training patients only:

* quality: the pooled inner-validation AUC of the chosen hyperparameters is at least :data:`MIN_INNER_AUC`
  (a recipe that cannot rank patients it did not see is not retrained with another seed: it fails);
* spread: the SD of the final model's patient outputs on its training patients is at least
  :data:`MIN_SPREAD` and at least :data:`MIN_RELATIVE_SPREAD` of the SD of the inner out-of-fold outputs
  (a collapsed model is retrained with another seed and twice the epochs, up to :data:`RETRIES` times).

A model whose output is the mean of its inner-fold classifiers (the heads, see training/pipeline.py) is judged by
those, since they give the output: each head on its own held-out inner patients must rank them (AUC at least
:data:`MIN_INNER_AUC`, judged when that fold has :data:`MIN_HEAD_CLASS_PATIENTS` patients of each class: on
fewer the AUC is mostly chance) and not be numerically constant (output SD at least :data:`MIN_HEAD_SPREAD`: a
narrow head that ranks well is fine, its own Platt scaling stretches it); a failing head is dropped (with its
calibration), and a model with no head left fails.
"""

from __future__ import annotations

import numpy as np

MIN_INNER_AUC = 0.6
MIN_SPREAD = 0.01
MIN_RELATIVE_SPREAD = 0.5
RETRIES = 2
SEED_STEP = 1000  # the seed of retry r is the pipeline seed + r * SEED_STEP
MIN_HEAD_SPREAD = 1e-4
MIN_HEAD_CLASS_PATIENTS = 10


def judge(final_outputs, oof_outputs, inner_auc: float, seed: int) -> dict:
    """The gate's verdict on one final classifier.

    Args:
        final_outputs: the final model's patient probabilities of its training patients.
        oof_outputs: the inner out-of-fold patient probabilities of the same patients.
        inner_auc: the pooled inner-validation AUC of the chosen hyperparameters.
        seed: the seed the final classifier was trained with (recorded).

    Returns:
        ``passed``, ``retry`` (whether another seed can help), ``quality_ok`` (the recipe's inner-validation AUC
        reached the floor), ``reasons`` and the measured values.
    """
    spread = float(np.std(np.asarray(final_outputs, dtype=float)))
    oof_spread = float(np.nanstd(np.asarray(oof_outputs, dtype=float)))
    needed = max(MIN_SPREAD, MIN_RELATIVE_SPREAD * oof_spread)
    reasons = []
    quality_ok = bool(np.isfinite(inner_auc) and inner_auc >= MIN_INNER_AUC)
    if not quality_ok:
        reasons.append(f"inner-validation AUC {inner_auc:.3f} below the floor {MIN_INNER_AUC}")
    if spread < needed:
        reasons.append(f"collapsed: output SD {spread:.4f} on the training patients below {needed:.4f}")
    return {"passed": not reasons, "retry": quality_ok and bool(reasons), "quality_ok": quality_ok,
            "reasons": reasons, "seed": int(seed),
            "output_sd": spread, "inner_oof_sd": oof_spread, "inner_auc": float(inner_auc),
            "min_inner_auc": MIN_INNER_AUC, "min_output_sd": needed}


def judge_head(outputs, labels) -> dict:
    """The gate's verdict on one classifier head, from its raw outputs on its own held-out inner patients.

    Args:
        outputs: the head's patient probabilities of the patients it never saw.
        labels: their 0/1 labels.

    Returns:
        ``passed``, ``reasons``, the measured ``auc`` (NaN with one class), whether it was judged
        (``auc_judged``) and ``output_sd``.
    """
    from sklearn.metrics import roc_auc_score

    outputs = np.asarray(outputs, dtype=float)
    labels = np.asarray(labels).astype(int)
    auc = float(roc_auc_score(labels, outputs)) if len(np.unique(labels)) == 2 else float("nan")
    spread = float(np.std(outputs))
    judged = bool(np.isfinite(auc) and min(np.bincount(labels, minlength=2)) >= MIN_HEAD_CLASS_PATIENTS)
    reasons = []
    if judged and auc < MIN_INNER_AUC:
        reasons.append(f"held-out AUC {auc:.3f} below the floor {MIN_INNER_AUC}")
    if spread < MIN_HEAD_SPREAD:
        reasons.append(f"collapsed: output SD {spread:.2e} on its held-out patients below {MIN_HEAD_SPREAD}")
    return {"passed": not reasons, "reasons": reasons, "auc": auc, "auc_judged": judged, "output_sd": spread,
            "min_auc": MIN_INNER_AUC, "min_output_sd": MIN_HEAD_SPREAD}


def gate_passed(selection: dict) -> bool:
    """Whether a fitted model's selection record says it passed the gate (models fitted before the gate: yes)."""
    return bool(selection.get("quality_gate", {}).get("passed", True))


__all__ = ["MIN_HEAD_CLASS_PATIENTS", "MIN_HEAD_SPREAD", "MIN_INNER_AUC", "MIN_RELATIVE_SPREAD", "MIN_SPREAD",
           "RETRIES", "SEED_STEP", "gate_passed", "judge", "judge_head"]
