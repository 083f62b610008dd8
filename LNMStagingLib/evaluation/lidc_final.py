"""The bundled LIDC model: a VAE-MLP trained on all LIDC patients (member 0) plus the benchmark's five outer-fold
VAE-MLP models (members 1-5, an ensemble for uncertainty), with the benchmark's nested-CV figures in the card.

Run in the background (``lnmstaging train --data ... --final-bundle``); it resumes from checkpoints.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..bundle.format import training_set_sha256
from ..data.lidc import load_lidc
from ..training.bundling import build_bundle, pooled_threshold
from ..training.context import RunContext
from ..training.fitted import FittedModel
from ..training.pipeline import fit
from ..training.recipes import benchmark_configs
from ..training.run import check_bundle_folder
from .benchmark import summarise

FINAL_NAME = "lidc-vae-mlp"

# what each version of the shipped bundle changed (the card lists the entries up to the version it is built as)
CHANGELOG = {
    "1.0.0": "2026-11-23: VAE-MLP, member 0 + 5 outer-fold members of the nested benchmark as the ensemble.",
    "1.1.0": "2026-12-01: classifier stage refitted on 1.0.0's VAE encoders: collapse and quality gate, per-member "
             "Platt calibration, threshold on the calibrated out-of-fold predictions, disagreement on calibrated "
             "probabilities.",
    "1.2.0": "2026-12-02: node features measured anew (radiological short axis robust to near-ties, border features "
             "without smoothing, docs/measurements.md); cross-fitted calibration (each member's probability is the "
             "mean of its 3 inner-fold classifiers, each Platt-calibrated on its own held-out patients; the "
             "explanations use the same classifiers); classifier stage refitted on 1.0.0's VAE encoders (each fold "
             "member proven by the hash of its training patients).",
}
# selection entries that list patient ids: the card gives their sizes only (bundles hold hashed ids, never raw)
_PATIENT_LISTS = ("inner_validation", "held_out_patients")


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def card_selection(selection: dict) -> dict:
    """Member 0's selection as the card shows it: no hyperparameter grid, patient lists as their sizes.

    Args:
        selection: :attr:`FittedModel.selection`.

    Returns:
        A copy safe to publish (no patient ids).
    """
    shown = {k: v for k, v in selection.items() if k != "grid" and k not in _PATIENT_LISTS}
    for key in _PATIENT_LISTS:
        value = selection.get(key)
        if value:
            shown[f"{key}_patients"] = ([len(v) for v in value] if isinstance(value[0], (list, tuple))
                                        else len(value))
    return shown


def _card(dataset, summary: dict | None, n_folds_found: int, primary: FittedModel) -> dict:
    labels = dataset.patient_labels()
    card = {
        "summary": "VAE-MLP (Keel et al., MIUA 2025 / BMVC 2023 method) for malignancy of CT lung nodules, "
                   "trained on LIDC-IDRI solid-nodule slices. Research use only; not a medical device.",
        "intended_use": [
            "Research on interpretable multiple-instance malignancy prediction for CT lung nodules.",
            "Input: axial CT slices of segmented nodules, lesion-only 32x32 patches (preset lidc-png), "
            "with per-slice size/border features.",
            "Not for clinical decisions; not validated on lymph nodes, MRI or other scanners.",
        ],
        # read by prediction/inputs.py: a lymph-node case is not this model's intended input (said beside P)
        "intended_input": {"description": "CT lung nodules (LIDC-IDRI, preset lidc-png)", "modality": "CT",
                           "lymph_nodes": False},
        "data": {
            "source": "LIDC-IDRI (Armato et al., Med Phys 2011; TCIA, CC BY 3.0), solid nodules, 64x64 slices "
                      "via MaximoDouglas/pulmonary-nodule-classification",
            "slices": int(len(dataset)), "nodules": int(len(np.unique(dataset.nodule_id))),
            "patients": len(labels), "positive_patients": int(sum(labels.values())),
            "labels": "median radiologist malignancy rating: 1-2 benign, 4-5 malignant, 3 excluded (not pathology)",
            "clinical_inputs": "none (LIDC has no clinical data; the patient MLP is declared without clinical inputs)",
        },
        "training": {
            "member_0": "trained on all patients; MIL hyperparameters, epochs and threshold chosen on inner folds",
            "fold_members": f"{n_folds_found} outer-fold models of the nested benchmark (each trained on 4/5 of the "
                           "patients), used as an ensemble for uncertainty",
            "selection": card_selection(primary.selection),
        },
        "limits": [
            "CT lung nodules only; labels are radiologist ratings, not pathology.",
            "Spacing is estimated from the nodule diameter (LIDC crops store no pixel spacing).",
            "2D slices, no clinical data; patient = exam.",
            "Research use only, not a medical device.",
        ],
    }
    if summary is not None:
        card["evaluation"] = {
            "protocol": "nested, patient-grouped, stratified 5-fold CV on LIDC (Testing/Benchmarks/lidc_benchmark.md); "
                        "the figures describe the training procedure; member 0 itself has no held-out test set. "
                        "Fold mean: the metric of each outer test fold, averaged (95% t-interval over folds); pooled: "
                        "one metric over every patient's calibrated out-of-fold prediction (95% patient bootstrap).",
            "folds": summary["folds"],
            "patient_auc_fold_mean_sd": summary["patient"]["auc"],
            "patient_auc_fold_mean_ci95": summary["patient_fold_mean_ci95"]["auc"],
            "patient_auc_pooled": summary["patient_pooled"]["auc"], "patient_auc_pooled_ci95": summary["patient_ci95"]["auc"],
            "patient_ece_pooled": summary["patient_pooled"]["ece"], "patient_ece_pooled_ci95": summary["patient_ci95"]["ece"],
            "nodule_auc_fold_mean_sd": summary["nodule"]["auc"],
            "nodule_auc_pooled": summary["nodule_pooled"]["auc"], "nodule_auc_pooled_ci95": summary["nodule_ci95"]["auc"],
            "patient_sensitivity_mean_sd": summary["patient"]["sensitivity"],
            "patient_specificity_mean_sd": summary["patient"]["specificity"],
            "patient_balanced_accuracy_mean_sd": summary["patient"]["balanced_accuracy"],
            "patient_ece_fold_mean_sd": summary["patient"]["ece"],
            "test_ssim_mean_sd": summary.get("ssim_test"),
            "test_psnr_db": summary.get("psnr_test"), "test_mse": summary.get("mse_test"),
            "test_mae": summary.get("mae_test"),
            "lpips": "not measured: needs pretrained backbone weights that cannot be downloaded here",
        }
    else:
        card["evaluation"] = {"note": "benchmark folds not finished when the bundle was written"}
    return card


def _comparisons(benchmark_dir: Path) -> dict:
    """The VAE-MLP's paired patient-AUC differences to the simple rows, from the run's summary.json."""
    path = benchmark_dir / "summary.json"
    if not path.is_file():
        return {}
    found = json.loads(path.read_text(encoding="utf-8")).get("comparisons") or {}
    return {f"vae_mlp_minus_{other}": {
        "pooled_difference": round(c["pooled_difference"], 3), "pooled_ci95": c["ci95"],
        "fold_mean_difference": round(c["fold_mean_difference"], 3), "fold_mean_ci95": c["fold_mean_ci95"]}
        for other, c in found.items()}


def train_final_bundle(data_dir, out_dir: Path, work_dir: Path, benchmark_dir: Path | None,
                       wait_seconds: float = 0.0, name: str = FINAL_NAME, version: str = "1.0.0",
                       progress: bool = True, log=print, quick: bool = False,
                       encoder_from: str | Path | None = None) -> Path:
    """Train member 0 on all data (resumable), collect the benchmark's VAE fold models (waiting up to
    ``wait_seconds`` for them), and write the bundle to ``out_dir`` (a new or empty folder, refused otherwise
    before any work; written in a private folder beside it and renamed at the end).

    Args:
        data_dir: the LIDC folder.
        out_dir: the bundle folder.
        work_dir: member 0's checkpoints.
        benchmark_dir: the ``benchmark lidc`` run (fold members, their calibrated out-of-fold predictions, figures).
        wait_seconds: how long to wait for the benchmark's VAE folds.
        name: the bundle's name.
        version: its version.
        progress: progress bars.
        log: a print-like function.
        quick: the tiny settings.
        encoder_from: a bundle whose member-0 VAE is reused (only the classifier stage is refitted), or None.

    Returns:
        ``out_dir``. The threshold is chosen on the fold members' pooled calibrated out-of-fold predictions.
    """
    check_bundle_folder(Path(out_dir))  # before hours of work: never over a user's files
    work_dir = Path(work_dir)
    dataset = load_lidc(data_dir)
    config = benchmark_configs(quick)["vae"]
    model_dir = work_dir / "primary" / "model"
    if (model_dir / "fitted.json").is_file():
        primary = FittedModel.load(model_dir)
        primary.selection.setdefault("training_patients_sha256", training_set_sha256(dataset.patients))
        log(f"reusing {model_dir}")
    else:
        t0 = time.time()
        encoder = None
        if encoder_from is not None:
            from .encoder_reuse import bundle_encoders

            encoder = bundle_encoders(encoder_from)[0]
        primary = fit(dataset, dataset.patients, config, RunContext(progress, log=log, work_dir=work_dir / "primary"),
                      encoder)
        primary.save(model_dir, config)
        log(f"member 0 trained on all patients in {(time.time() - t0) / 60:.1f} min")
    folds, results = [], []
    deadline = time.time() + wait_seconds
    if benchmark_dir is not None:
        while True:
            ready = [Path(benchmark_dir) / "vae" / f"fold_{k}" for k in range(5)]
            done = [d for d in ready if (d / "result.json").is_file()]
            if len(done) == 5 or time.time() >= deadline:
                break
            log(f"waiting for benchmark VAE folds ({len(done)}/5 ready)")
            time.sleep(60)
        for d in ready:
            if (d / "result.json").is_file():
                folds.append(FittedModel.load(d / "model"))
                results.append(json.loads((d / "result.json").read_text(encoding="utf-8")))
                # fold models fitted before fit() recorded it: the hash of the training patients of the result
                folds[-1].selection.setdefault("training_patients_sha256",
                                               training_set_sha256(results[-1]["train_patients"]))
    summary = summarise(results) if results else None
    comparisons = _comparisons(Path(benchmark_dir)) if benchmark_dir is not None else {}
    threshold = None
    if results:  # each patient predicted (calibrated) by the fold member that never saw it
        threshold = pooled_threshold(np.concatenate([r["predictions"]["patient_label"] for r in results]),
                                     np.concatenate([r["predictions"]["patient_prob"] for r in results]))
    card = _card(dataset, summary, len(folds), primary)
    if comparisons and summary is not None:
        card["evaluation"]["compared_with_simple_baselines"] = comparisons
        card["evaluation"]["what_this_means"] = (
            "On this data, size explains most of the prediction: the largest lesion area alone ranks patients at "
            "least as well as the VAE-MLP (the paired intervals above), so the image features add no shown benefit.")
    if encoder_from is not None:
        card["training"]["encoders"] = (f"the VAE encoders of {Path(encoder_from).name} (member 0 and the fold members, "
                                        "trained by the same recipe on the same folds, each fold member proven by the "
                                        "hash of its training patients or its feature ranges) were reused; the classifier, its gate, calibration and the "
                                        "threshold were refitted")
    history = [f"{v}: {text}" for v, text in CHANGELOG.items() if _version_key(v) <= _version_key(version)]
    if version not in CHANGELOG:
        history.append(f"{version}: rebuilt by the LIDC recipe")
    card["changelog"] = history
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a private build folder beside the target, renamed at the end (a folder of ours: never a user's name)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        build_bundle(staging / "bundle", name, version, primary, folds, dataset, "lidc-png",
                     round(dataset.fov_mm(), 3), card,
                     training={"pipeline": config.to_dict(), "member_0_patients": len(dataset.patients),
                               "fold_members": len(folds)},
                     clinical_absent_reason="LIDC-IDRI provides no clinical data", threshold=threshold)
        check_bundle_folder(out_dir)  # still new or empty after the training
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): the bundle takes its place
        (staging / "bundle").rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"bundle written: {out_dir} ({sum(p.stat().st_size for p in Path(out_dir).rglob('*') if p.is_file()) / 1e6:.1f} MB)")
    return Path(out_dir)
