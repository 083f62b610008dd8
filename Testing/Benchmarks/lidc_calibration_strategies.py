"""Calibration strategies compared post hoc on one ``lnmstaging benchmark lidc`` run, without retraining.

Every ``vae`` fold of the run keeps ``raw_predictions.json`` (LNMStagingLib/evaluation/benchmark.py): the
uncalibrated patient outputs of the fold's final classifier (retrained on all the fold's training patients) and
of each inner-fold classifier, on the training and on the outer test patients, and each inner classifier's
held-out training patients. From these, each strategy below gives every outer test patient a probability; the
outer test patients are never used to fit anything.

* ``A_final_platt_oof``: the final classifier + Platt fitted on the pooled inner out-of-fold predictions (the
  calibration is fitted on other models than the one it is applied to; the strategy before 2026-12-02);
* ``A_final_isotonic_oof``: the same with isotonic regression;
* ``B_inner_platt``: cross-fitted ensemble: the mean of the K inner classifiers, each Platt-calibrated on its own
  held-out inner fold (calibration and model match; what training does since 2026-12-02);
* ``B_inner_isotonic``: the same with isotonic regression per inner classifier;
* ``B_inner_platt_plus_final``: B's K calibrated inner classifiers and A's final one, averaged;
* ``D_mean_platt_oof``: the mean of the K raw inner outputs, Platt-calibrated on the pooled inner out-of-fold
  predictions (one calibration shared by the inner models whose held-out outputs it was fitted on).

For each: pooled patient AUC, fold-mean AUC, the gap, pooled ECE with a patient bootstrap 95% interval, fold-mean
ECE, the share of patients in the report's uncertain band, and the ECE a perfectly calibrated model would show
with these very probabilities and this many patients (labels drawn ~ Bernoulli(p), many times: the metric's
noise floor, so that a target of <= 0.05 can be read).

Run:  .venv/bin/python Testing/Benchmarks/lidc_calibration_strategies.py runs/benchmark [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from LNMStagingLib.evaluation.metrics import expected_calibration_error, fast_auc
from LNMStagingLib.models.calibration import fit_isotonic, fit_platt
from LNMStagingLib.prediction.results import UNCERTAIN_RANGE
from LNMStagingLib.training.threshold import choose_threshold


def _rows(part: dict, ids) -> np.ndarray:
    position = {p: i for i, p in enumerate(part["patient_id"])}
    return np.asarray([position[str(p)] for p in ids])


def _fold_strategies(raw: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{strategy: (calibrated test probabilities, calibrated out-of-fold training probabilities)} of one fold."""
    train, test = raw["train"], raw["test"]
    y_train = np.asarray(train["patient_label"])
    inner_train, inner_test = np.asarray(train["inner"]), np.asarray(test["inner"])
    final_test = np.asarray(test["final"])
    val_rows = [_rows(train, ids) for ids in raw["inner_validation"]]
    oof_rows = np.concatenate(val_rows)
    oof = np.concatenate([inner_train[k, rows] for k, rows in enumerate(val_rows)])
    y_oof = y_train[oof_rows]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, fitter in (("platt", fit_platt), ("isotonic", fit_isotonic)):
        pooled = fitter(y_oof, oof)
        out[f"A_final_{name}_oof"] = (pooled.apply(final_test), pooled.apply(oof))
        own = [fitter(y_train[rows], inner_train[k, rows]) for k, rows in enumerate(val_rows)]
        tests = np.stack([c.apply(inner_test[k]) for k, c in enumerate(own)])
        oof_cal = np.concatenate([c.apply(inner_train[k, rows]) for k, (c, rows) in enumerate(zip(own, val_rows,
                                                                                              strict=True))])
        out[f"B_inner_{name}"] = (tests.mean(0), oof_cal)
        if name == "platt":
            out["B_inner_platt_plus_final"] = (np.vstack([tests, pooled.apply(final_test)[None]]).mean(0), oof_cal)
            out["D_mean_platt_oof"] = (pooled.apply(inner_test.mean(0)), pooled.apply(oof))
    return out, y_oof


def _bootstrap_ece(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        values.append(expected_calibration_error(y[idx], p[idx]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _noise_floor(p: np.ndarray, n_sim: int, seed: int = 1) -> dict:
    """The ECE of labels drawn from ``p`` itself (a perfectly calibrated model with these probabilities)."""
    rng = np.random.default_rng(seed)
    values = np.asarray([expected_calibration_error((rng.uniform(size=len(p)) < p).astype(int), p)
                         for _ in range(n_sim)])
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)),
            "share_above_0.05": float((values > 0.05).mean())}


def compare(run: Path, method: str = "vae", n_boot: int = 2000, n_sim: int = 2000,
            log: Callable[[str], None] = print) -> dict:
    """Every strategy's figures on the run's folds (see the module docstring).

    Args:
        run: the benchmark run folder.
        method: the row whose folds keep raw predictions.
        n_boot: bootstrap resamples of the pooled ECE interval.
        n_sim: simulated label sets of the noise floor.
        log: a print-like function.

    Returns:
        {strategy: figures}.
    """
    folds = sorted((run / method).glob("fold_*/raw_predictions.json"))
    if not folds:
        raise SystemExit(f"{run / method}: no fold keeps raw_predictions.json (run the benchmark with this code)")
    per_fold = []
    for path in folds:
        raw = json.loads(path.read_text(encoding="utf-8"))
        result = json.loads((path.parent / "result.json").read_text(encoding="utf-8"))
        strategies, y_oof = _fold_strategies(raw)
        y_test = np.asarray(raw["test"]["patient_label"])
        # the run's own patient probabilities are one of the strategies: a check that the file and the run agree
        used = "B_inner_platt" if result["selection"].get("head_calibrations") else "A_final_platt_oof"
        ran = np.asarray(result["predictions"]["patient_prob"])
        order = _rows(raw["test"], result["predictions"]["patient_id"])
        gap = float(np.max(np.abs(strategies[used][0][order] - ran)))
        per_fold.append((y_test, y_oof, strategies, gap, used))
    log(f"{run}/{method}: {len(per_fold)} folds, {sum(len(f[0]) for f in per_fold)} test patients; the run used "
        f"{sorted({f[4] for f in per_fold})}, reproduced here to {max(f[3] for f in per_fold):.1e}")
    low, high = UNCERTAIN_RANGE
    out = {}
    for name in per_fold[0][2]:
        y = np.concatenate([f[0] for f in per_fold])
        p = np.concatenate([f[2][name][0] for f in per_fold])
        wrong = np.concatenate([(f[2][name][0] >= choose_threshold(f[1], f[2][name][1])) != (f[0] == 1)
                                for f in per_fold])
        fold_auc = [fast_auc(f[0], f[2][name][0]) for f in per_fold]
        fold_ece = [expected_calibration_error(f[0], f[2][name][0]) for f in per_fold]
        band = (p >= low) & (p <= high)
        figures = {
            "pooled_auc": fast_auc(y, p), "fold_mean_auc": float(np.mean(fold_auc)),
            "pooled_ece": expected_calibration_error(y, p), "pooled_ece_ci95": _bootstrap_ece(y, p, n_boot),
            "fold_mean_ece": float(np.mean(fold_ece)), "uncertain_fraction": float(band.mean()),
            "error_rate_in_band": float(wrong[band].mean()) if band.any() else float("nan"),
            "error_rate_outside": float(wrong[~band].mean()) if (~band).any() else float("nan"),
            "balanced_accuracy": float((1 - wrong[y == 1].mean() + 1 - wrong[y == 0].mean()) / 2),
            "ece_noise_floor": _noise_floor(p, n_sim),
        }
        figures["auc_gap"] = figures["fold_mean_auc"] - figures["pooled_auc"]
        out[name] = figures
        floor = figures["ece_noise_floor"]
        log(f"{name:26s} pooled AUC {figures['pooled_auc']:.3f}  fold-mean AUC {figures['fold_mean_auc']:.3f}  "
            f"gap {figures['auc_gap']:+.3f}  pooled ECE {figures['pooled_ece']:.3f} "
            f"[{figures['pooled_ece_ci95'][0]:.3f}-{figures['pooled_ece_ci95'][1]:.3f}]  fold-mean ECE "
            f"{figures['fold_mean_ece']:.3f}  uncertain {figures['uncertain_fraction']:.3f} (errors "
            f"{figures['error_rate_in_band']:.2f} in, {figures['error_rate_outside']:.2f} out)  bal.acc "
            f"{figures['balanced_accuracy']:.3f}  ECE if calibrated: {floor['mean']:.3f} (95th pct "
            f"{floor['p95']:.3f}, > 0.05 in {100 * floor['share_above_0.05']:.0f}%)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the benchmark run folder")
    parser.add_argument("--method", default="vae")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = compare(args.run, args.method)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
