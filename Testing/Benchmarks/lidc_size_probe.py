"""Probe of the LIDC data's size signal on the benchmark's outer folds (lidc_notes.md, section 1).

Run:  .venv/bin/python Testing/Benchmarks/lidc_size_probe.py [--data ../shared/data/lidc-nodules]

Logistic regression on slice-level inputs, trained on each outer fold's training patients and scored on its
test patients (the same patient-grouped folds as `lnmstaging benchmark lidc`, seed 0); nodule score = mean
of its slices. Plus one model-free baseline: the largest lesion area in pixels per nodule. Prints the mean
and SD of the nodule AUC over the 5 folds.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from LNMStagingLib.data.lidc import build_dataset, default_lidc_dir, read_nodule_arrays
from LNMStagingLib.data.splits import patient_folds
from LNMStagingLib.imaging.measure import measure_cross_section


def nodule_auc(dataset, test_rows: np.ndarray, slice_scores: np.ndarray) -> float:
    nodules = dataset.nodule_id[test_rows]
    keys = np.unique(nodules)
    labels = [dataset.slice_label[test_rows][nodules == k][0] for k in keys]
    return roc_auc_score(labels, [slice_scores[nodules == k].mean() for k in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_lidc_dir()))
    args = parser.parse_args()
    arrays, diameters = read_nodule_arrays(args.data)
    dataset = build_dataset(arrays, diameters)
    pixel = [measure_cross_section(mask, (1.0, 1.0)) for mask in arrays["masks"].astype(bool)]
    log_pixel_sizes = np.log([[c.short_axis_mm, c.long_axis_mm, c.area_mm2] for c in pixel])
    labels = dataset.patient_labels()
    patients = dataset.patients
    folds = patient_folds(patients, [labels[p] for p in patients], 5, 0)
    inputs = {
        "size/border features in mm (the models' node features)": dataset.features,
        "log short axis, long axis, area in pixels": log_pixel_sizes,
        "mm features + log pixel sizes": np.c_[dataset.features, log_pixel_sizes],
        "shape features (ratio, convexity, compactness) + log pixel sizes": np.c_[dataset.features[:, 2:], log_pixel_sizes],
    }
    for name, x in inputs.items():
        aucs = []
        for train, test in folds:
            train_rows, test_rows = dataset.subset_patients(train), dataset.subset_patients(test)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            model.fit(x[train_rows], dataset.slice_label[train_rows])
            aucs.append(nodule_auc(dataset, test_rows, model.predict_proba(x[test_rows])[:, 1]))
        print(f"{name}: nodule AUC {np.mean(aucs):.3f} +/- {np.std(aucs):.3f}")
    area = log_pixel_sizes[:, 2]
    aucs = []
    for _, test in folds:
        test_rows = dataset.subset_patients(test)
        nodules = dataset.nodule_id[test_rows]
        keys = np.unique(nodules)
        aucs.append(roc_auc_score([dataset.slice_label[test_rows][nodules == k][0] for k in keys],
                                  [area[test_rows][nodules == k].max() for k in keys]))
    print(f"largest lesion area in pixels per nodule (no model): nodule AUC {np.mean(aucs):.3f} +/- {np.std(aucs):.3f}")


if __name__ == "__main__":
    main()
