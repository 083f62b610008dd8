"""What the "uncertain" band is worth on LIDC: the calibrated out-of-fold patient predictions of a
``lnmstaging benchmark lidc`` run (each patient predicted by the fold model that never saw it), split at the
report's uncertain range (prediction/results.py UNCERTAIN_RANGE).

For each side of the band: how many patients, the error rate at each fold's own threshold, the observed share of
positives against the mean calibrated probability (calibration inside the band), and the pooled ECE. A band whose
patients are wrong far more often than the others' justifies the flag; a flag on many more patients than the
band holds does not.

Run:  .venv/bin/python Testing/Benchmarks/lidc_uncertainty.py runs/benchmark [--method vae]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from LNMStagingLib.evaluation.metrics import expected_calibration_error, fast_auc
from LNMStagingLib.prediction.results import UNCERTAIN_RANGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the benchmark run folder")
    parser.add_argument("--method", default="vae")
    args = parser.parse_args()
    ys, ps, wrong, fold_aucs = [], [], [], []
    for fold in sorted((args.run / args.method).glob("fold_*/result.json")):
        result = json.loads(fold.read_text(encoding="utf-8"))
        y = np.asarray(result["predictions"]["patient_label"])
        p = np.asarray(result["predictions"]["patient_prob"])
        ys.append(y)
        ps.append(p)
        wrong.append((p >= result["threshold"]) != (y == 1))
        fold_aucs.append(result["patient"]["auc"])
    y, p, wrong = np.concatenate(ys), np.concatenate(ps), np.concatenate(wrong)
    low, high = UNCERTAIN_RANGE
    band = (p >= low) & (p <= high)
    print(f"{args.run}/{args.method}: {len(y)} patients, {len(fold_aucs)} folds")
    print(f"pooled AUC {fast_auc(y, p):.3f}, fold mean AUC {np.mean(fold_aucs):.3f}, "
          f"pooled ECE {expected_calibration_error(y, p):.3f}")
    for name, keep in ((f"in {low}-{high}", band), ("outside", ~band)):
        if keep.any():
            print(f"{name}: {keep.sum()} patients ({100 * keep.mean():.1f}%), error rate {wrong[keep].mean():.3f}, "
                  f"positives {y[keep].mean():.3f} vs mean probability {p[keep].mean():.3f}")


if __name__ == "__main__":
    main()
