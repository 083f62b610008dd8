"""Confidence intervals of proportions: Wilson score intervals, and the MOVER combination of two."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 %


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n``.

    Args:
        successes: the count of events.
        n: the count of trials (0 gives (nan, nan)).
        z: the normal quantile (1.96 for 95 %).

    Returns:
        (lower, upper), within [0, 1].
    """
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_of_two_interval(a: float, a_ci: tuple[float, float], b: float,
                         b_ci: tuple[float, float]) -> tuple[float, float]:
    """Interval of ``(a + b) / 2`` for two independent proportions from their own intervals (MOVER, Zou and
    Donner 2008, on Wilson intervals): used for balanced accuracy, which is not itself a binomial proportion.

    Args:
        a, b: the two estimates (e.g. sensitivity and specificity).
        a_ci, b_ci: their intervals.

    Returns:
        (lower, upper) of the mean.
    """
    values = (a, b, *a_ci, *b_ci)
    if not all(math.isfinite(v) for v in values):
        return math.nan, math.nan
    low = math.sqrt((a - a_ci[0]) ** 2 + (b - b_ci[0]) ** 2)
    high = math.sqrt((a_ci[1] - a) ** 2 + (b_ci[1] - b) ** 2)
    mean = (a + b) / 2
    return max(0.0, mean - low / 2), min(1.0, mean + high / 2)


def confusion_proportions(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int | list[float]]:
    """Counts and the proportions of a 2 x 2 table, each with its 95 % interval (``<name>_ci95``).

    Args:
        tp, fp, fn, tn: the counts.

    Returns:
        ``tp, fp, fn, tn, sensitivity, specificity, accuracy, balanced_accuracy, ppv, npv`` and, for each
        proportion, ``<name>_ci95 = [lower, upper]`` (Wilson; balanced accuracy: MOVER of the two Wilson
        intervals). An undefined proportion (empty denominator) is nan.
    """
    out: dict[str, float | int | list[float]] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    parts = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "accuracy": (tp + tn, tp + fp + fn + tn),
             "ppv": (tp, tp + fp), "npv": (tn, tn + fn)}
    for name, (k, n) in parts.items():
        out[name] = k / n if n else math.nan
        out[f"{name}_ci95"] = list(wilson_interval(k, n))
    sens, spec = float(out["sensitivity"]), float(out["specificity"])
    out["balanced_accuracy"] = (sens + spec) / 2
    out["balanced_accuracy_ci95"] = list(mean_of_two_interval(sens, tuple(out["sensitivity_ci95"]), spec,
                                                              tuple(out["specificity_ci95"])))
    return out
