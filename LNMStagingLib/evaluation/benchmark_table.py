"""The benchmark's Markdown table and summary.json: fold-mean and pooled figures, each with its own interval,
and the paired AUC differences of the VAE-MLP to the simple baselines."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import PatchDataset

METHOD_LABELS = {
    "size": "Size-only (size/border features, same MIL head)",
    "cnn": "CNN (MONAI DenseNet, from scratch) + MIL head",
    "vae": "VAE-MLP (Gaussian)",
    "dirvae": "DirVAE-MLP (Dirichlet, EM fine-tuning)",
    "vae_max": "VAE-MLP, max node probability only (ablation)",
    "vae_mlp_only": "VAE-MLP, patient MLP only (ablation)",
    "vae_no_clinical": "VAE-MLP without clinical data (ablation)",
    "area": "Largest lesion area (pixels)",
    "logreg": "Logistic regression on five simple features",
}
LIDC_TITLE = "LIDC-IDRI benchmark"
LIDC_LABELS = "Labels are radiologist malignancy ratings (not pathology)."


def _fmt(pair) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_table(out_dir: Path, summaries: dict[str, dict], command: str, started: str, n_folds: int,
                dataset: PatchDataset, title: str = LIDC_TITLE, label_note: str = LIDC_LABELS,
                comparisons: dict[str, dict] | None = None, patients: np.ndarray | None = None) -> Path:
    """``benchmark.md`` and ``summary.json`` in ``out_dir``.

    Args:
        out_dir: the run folder.
        summaries: each row's :func:`~LNMStagingLib.evaluation.benchmark.summarise`.
        command: the command line recorded.
        started: when the run started.
        n_folds: outer folds.
        dataset: the data (counts).
        title: the table's title.
        label_note: what the labels are.
        comparisons: the VAE-MLP's paired AUC differences to other rows
            (:func:`~LNMStagingLib.evaluation.comparison.paired_auc_difference`), by row.
        patients: the patients actually used (a subset with --max-patients; None: all), which the Data line
            counts.

    Returns:
        The path of ``benchmark.md``.
    """
    labels = dataset.patient_labels()
    total = len(labels)
    if patients is not None:
        labels = {p: labels[p] for p in patients}
    used = dataset.subset_patients(list(labels))
    subset = f" (a random subset of the {total} patients)" if len(labels) < total else ""
    lines = [
        f"# {title} (nested, patient-grouped, stratified {n_folds}-fold cross-validation)",
        "",
        f"- Command: `{command}`",
        f"- Started: {started}; table written: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}; torch {torch.__version__}; torch threads per fold run: "
        f"{', '.join(str(t) for t in sorted({t for s in summaries.values() for t in s.get('torch_threads', [])}))}",
        f"- Data: {len(used)} slices, {len(np.unique(dataset.nodule_id[used]))} nodules, {len(labels)} patients "
        f"({sum(labels.values())} positive){subset}. {label_note}",
        "- Every row uses the same outer folds. Inner folds (training patients only) choose the encoder's epoch "
        "(hold-out), the MIL hyperparameters, the MIL epochs and the threshold; the outer test fold is used once.",
        "- Two kinds of figure, each with its own 95% interval: **fold mean** (the metric in each outer test fold, "
        "averaged; ± SD over folds; t-interval over the folds) and **pooled** (one metric over every patient's "
        "out-of-fold prediction; patient-level bootstrap). Sensitivity etc.: fold mean ± SD, at each fold's own "
        "threshold. Learned rows' patient probability: the mean of the fold's inner-fold classifiers, each "
        "Platt-calibrated on its own held-out inner fold (cross-fitted; runs before 2026-12-02: the final "
        "classifier with Platt fitted on the pooled inner out-of-fold predictions).",
        "- Wall time: sum over folds of fitting + testing on the machine above. "
        "Ablation rows reuse the VAE row's fold encoders: their wall time is the MIL head only.",
        "- Settings: `LNMStagingLib/training/recipes.py::benchmark_configs` (fixed a priori, not tuned on test folds).",
        "",
        "| Method | Folds | Nodule AUC, fold mean ± SD | Nodule AUC, pooled [95% CI] | Patient AUC, fold mean ± SD "
        "[95% t-interval] | Patient AUC, pooled [95% CI] | Patient sens. | Patient spec. | Patient acc. | Patient F1 "
        "| Patient BA | Patient ECE, fold mean ± SD | Patient ECE, pooled [95% CI] | Test SSIM | Wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summaries.items():
        p, n = s["patient"], s["nodule"]
        ssim = _fmt(s["ssim_test"]) if "ssim_test" in s else "n/a"
        folds = f"{s['folds']}/{n_folds}"
        nodule = (f"{_fmt(n['auc'])} | {s['nodule_pooled']['auc']:.3f} {_ci(s['nodule_ci95']['auc'])}" if n
                  else "n/a (no node labels) | n/a")
        fold_ci = s.get("patient_fold_mean_ci95", {})
        lines.append(
            f"| {METHOD_LABELS.get(method, method)} | {folds} | {nodule} | "
            f"{_fmt(p['auc'])} {_ci(fold_ci['auc']) if 'auc' in fold_ci else ''} | "
            f"{s['patient_pooled']['auc']:.3f} {_ci(s['patient_ci95']['auc'])} | {_fmt(p['sensitivity'])} | "
            f"{_fmt(p['specificity'])} | {_fmt(p['accuracy'])} | {_fmt(p['f1'])} | {_fmt(p['balanced_accuracy'])} | "
            f"{_fmt(p['ece'])} | {s['patient_pooled']['ece']:.3f} {_ci(s['patient_ci95']['ece'])} | {ssim} | "
            f"{s['wall_seconds'] / 60:.1f} min |"
        )
    if comparisons:
        lines += ["", "VAE-MLP minus each simple row, patient AUC on the same patients (paired: the same resampled "
                  "patients score both rows; an interval that contains 0 means no difference was shown):", "",
                  "| Compared with | Pooled difference [95% paired bootstrap] | Resamples with VAE-MLP ahead | "
                  "Fold-mean difference [95% t-interval] |", "|---|---|---|---|"]
        for other, c in comparisons.items():
            lines.append(f"| {METHOD_LABELS.get(other, other)} | {c['pooled_difference']:+.3f} {_ci(c['ci95'])} | "
                         f"{100 * c['share_of_resamples_a_better']:.0f}% | {c['fold_mean_difference']:+.3f} "
                         f"{_ci(c['fold_mean_ci95'])} |")
    notes = [f"- {METHOD_LABELS.get(m, m)}, {n}" for m, s in summaries.items() for n in s.get("notes", [])]
    if notes:
        lines += ["", "Wall-time notes:", "", *notes]
    recon = [(m, s) for m, s in summaries.items() if "ssim_test" in s]
    if recon:
        lines += ["", "Reconstruction of held-out (outer test) patches, mean over folds:", "",
                  "| Method | SSIM | PSNR (dB) | MSE | MAE |", "|---|---|---|---|---|"]
        for m, s in recon:
            lines.append(f"| {METHOD_LABELS.get(m, m)} | {_fmt(s['ssim_test'])} | {s['psnr_test']:.2f} | "
                         f"{s['mse_test']:.5f} | {s['mae_test']:.4f} |")
        lines += ["", "LPIPS is not reported: it needs pretrained backbone weights that cannot be downloaded here."]
    path = out_dir / "benchmark.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload = {**summaries, "comparisons": comparisons} if comparisons else summaries
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=1, default=json_default), encoding="utf-8")
    return path
