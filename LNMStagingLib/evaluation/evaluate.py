"""`lnmstaging evaluate`: a bundle, unchanged, on a folder in the LIDC layout or on a labelled cohort manifest
(nothing is refitted)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle import ModelBundle
from ..data.lidc import read_nodule_arrays
from ..data.predict import predict_dataset
from ..errors import InputError
from .metrics import binary_metrics, bootstrap_intervals, reliability_curve


def _level_metrics(y, p, std, threshold: float, groups, n_boot: int) -> dict:
    """Metrics of one level at the bundle's threshold, with bootstrap intervals (``groups`` resampled whole)."""
    known = y >= 0
    metrics = binary_metrics(y[known], p[known], threshold)
    metrics["ci95"] = bootstrap_intervals(y[known], p[known], threshold, n_boot=n_boot, groups=groups[known])
    metrics["reliability"] = reliability_curve(y[known], p[known])
    metrics["mean_ensemble_sd"] = float(np.mean(std))
    return metrics


def calibration_summary(bundle: ModelBundle) -> dict:
    """The calibration ``evaluate`` applied, member by member, before the members are averaged: the mean of a
    member's classifier heads, each calibrated on its own held-out patients, or (members without heads) the
    calibration of its one classifier."""
    ensemble = bundle.ensemble
    members, identity, heads = [], True, False
    for k in range(ensemble.n_members):
        applied = [c for _, c in ensemble.classifiers(k)]
        identity &= all(c.is_identity for c in applied)
        if ensemble.head_calibrations[k]:
            heads = True
            members.append({"heads": [c.to_dict() for c in applied]})
        else:
            members.append(applied[0].to_dict())
    if identity:
        method = "none (bundle without calibration)"
    elif heads:
        method = ("each member's patient probability is the mean of its classifier heads (its inner-fold "
                  "classifiers), each Platt-calibrated on its own held-out inner fold; then the members are averaged")
    else:
        method = ("Platt scaling of each member's patient probability (fitted on its inner out-of-fold predictions), "
                  "applied before the members are averaged")
    return {"method": method, "members": members}


def uncertain_flags(pred: dict, threshold: float) -> np.ndarray:
    """Each patient's uncertainty flag, exactly as ``lnmstaging predict`` sets it (calibrated probabilities)."""
    from ..prediction.pipeline import uncertainty_reasons

    per_member = np.asarray(pred["patient_per_member"])
    return np.asarray([bool(uncertainty_reasons(float(p), per_member[:, b].tolist(), threshold))
                       for b, p in enumerate(pred["patient_prob"])], dtype=bool)


def _model_summary(bundle: ModelBundle) -> dict:
    return {"name": bundle.name, "version": bundle.version, "path": str(bundle.path),
            "manifest_sha256": bundle.manifest_sha256, "members": bundle.n_members,
            "threshold": bundle.threshold, "node_threshold": bundle.config.node_threshold}


def _write_plots(plots_dir: Path, curves: dict, name: str) -> None:
    from .plots import plot_reliability, plot_roc

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(curves, plots_dir / "roc.png", f"ROC: {name}")
    plot_reliability(curves, plots_dir / "reliability.png", f"Reliability: {name}")


def evaluate_bundle(bundle: ModelBundle, data_dir: str | Path, n_boot: int = 1000, plots_dir: Path | None = None,
                    allow_out_of_domain: bool = False) -> dict:
    """A bundle, unchanged, on a folder in the LIDC layout (node and patient metrics).

    Args:
        bundle: the loaded bundle.
        data_dir: the folder (nodules.npz, optionally nodules.csv).
        n_boot: bootstrap resamples of the 95% intervals.
        plots_dir: where ROC and reliability plots go (None: no plots).
        allow_out_of_domain: go on when more than 5% of the patients lie outside the bundle's input domain.

    Returns:
        metrics.json content: ``{"nodule": {...}, "patient": {...}, "model": {...}, "data": {...},
        "input_domain": {...}}``.
    """
    from ..bundle.domain import dataset_domain, require_dataset_in_domain
    from ..data.lidc import build_dataset

    t0 = time.time()
    arrays, diameters = read_nodule_arrays(data_dir)
    dataset = build_dataset(arrays, diameters, patch_size=bundle.config.patch_size, fov_mm=bundle.config.fov_mm,
                            feature_names=tuple(bundle.config.feature_names))
    domain = dataset_domain(bundle.domain, dataset.patches, dataset.masks, dataset.patient_id, dataset.mm_per_px)
    require_dataset_in_domain(domain, str(data_dir), bundle.name, allow_out_of_domain)
    pred = predict_dataset(bundle.ensemble, dataset)
    result: dict = {
        "nodule": _level_metrics(pred["nodule_label"], pred["nodule_prob"], pred["nodule_std"],
                                 bundle.config.node_threshold, pred["nodule_patient"], n_boot),
        "patient": _level_metrics(pred["patient_label"], pred["patient_prob"], pred["patient_std"],
                                  bundle.threshold, pred["patient_id"], n_boot),
    }
    uncertain = uncertain_flags(pred, bundle.threshold)
    result["patient"]["uncertain_fraction"] = float(uncertain.mean()) if len(uncertain) else 0.0
    result["patient"]["uncertain_patients"] = int(uncertain.sum())
    result["patient"]["calibration"] = calibration_summary(bundle)
    if plots_dir is not None:
        _write_plots(plots_dir, {lvl: (pred[f"{lvl}_label"], pred[f"{lvl}_prob"]) for lvl in ("nodule", "patient")},
                     bundle.name)
    result["model"] = _model_summary(bundle)
    result["data"] = {"path": str(data_dir), "slices": len(dataset), "nodules": int(len(pred["nodule_id"])),
                      "patients": int(len(pred["patient_id"])),
                      # > 0: these figures are (partly) in-sample, not a test result
                      "patients_seen_in_training": bundle.patients_seen_in_training(pred["patient_id"]),
                      "spacing": "nodules.csv diameters" if diameters else f"bundle fov_mm {bundle.config.fov_mm}"}
    result["input_domain"] = domain
    result["seconds"] = time.time() - t0
    return result


@dataclass
class CohortPrediction:
    """One patient of a cohort, predicted exactly as ``lnmstaging predict`` would."""

    patient_id: str
    label: int
    probability: float
    std: float
    positive: bool
    uncertain: bool
    n_nodes: int
    node_probabilities: list[float]


def evaluate_bundle_on_cohort(bundle: ModelBundle, manifest: str | Path, n_boot: int = 1000,
                              plots_dir: Path | None = None, progress: bool = True,
                              allow_out_of_domain: bool = False) -> tuple[dict, list[CohortPrediction]]:
    """A bundle, unchanged, on a labelled cohort manifest: every patient with an N stage goes through
    ``predict_case`` (the bundle's preset, patches and ensemble, as ``lnmstaging predict``). Labels are
    patient-level only, so ``"nodule"`` is None.

    Args:
        bundle: the loaded bundle.
        manifest: the cohort manifest CSV (patients without an N stage are left out).
        n_boot: bootstrap resamples of the 95% intervals.
        plots_dir: where ROC and reliability plots go (None: no plots).
        progress: show a progress bar.
        allow_out_of_domain: go on when more than 5% of the patients lie outside the bundle's input domain.

    Returns:
        (metrics.json content, per-patient predictions).
    """
    from tqdm.auto import tqdm

    from ..bundle.domain import UNKNOWN_DOMAIN, domain_summary, require_dataset_in_domain
    from ..imaging.case import load_case
    from ..io.cohort import read_manifest
    from ..prediction.pipeline import predict_case

    t0 = time.time()
    entries = read_manifest(manifest)
    labelled = [e for e in entries if e.label is not None]
    labels = {e.label for e in labelled}
    if labels != {0, 1}:
        raise InputError(manifest, "evaluation needs N0 and N1/N2 patients (the n_stage column)")
    rows: list[CohortPrediction] = []
    flagged: list[str] = []
    for entry in tqdm(labelled, desc="patients", unit="patient", disable=not progress):
        case = load_case(entry.image, entry.segmentation)
        # each patient as `predict --allow-out-of-domain` would; the cohort as a whole is judged below
        result = predict_case(case, entry.clinical, bundle=bundle, allow_out_of_domain=True)
        flagged += [f"{entry.patient_id}: {w}" for w in result.input_warnings if w.startswith("OUT OF")][:1]
        rows.append(CohortPrediction(
            entry.patient_id, int(entry.label), result.patient.probability, result.patient.std,
            result.patient.positive, result.patient.uncertain, len(result.nodes),
            [node.probability for node in result.nodes]))
    domain = domain_summary(len(rows), flagged) if bundle.domain is not None else {"checked": False,
                                                                                  "note": UNKNOWN_DOMAIN}
    require_dataset_in_domain(domain, str(manifest), bundle.name, allow_out_of_domain)
    y = np.asarray([r.label for r in rows])
    p = np.asarray([r.probability for r in rows])
    ids = np.asarray([r.patient_id for r in rows])
    metrics = _level_metrics(y, p, np.asarray([r.std for r in rows]), bundle.threshold, ids, n_boot)
    metrics["uncertain_patients"] = int(sum(r.uncertain for r in rows))
    metrics["uncertain_fraction"] = metrics["uncertain_patients"] / len(rows) if rows else 0.0
    metrics["calibration"] = calibration_summary(bundle)
    if plots_dir is not None:
        _write_plots(plots_dir, {"patient": (y, p)}, bundle.name)
    result = {
        "nodule": None,
        "patient": metrics,
        "model": _model_summary(bundle),
        "data": {"manifest": str(manifest), "patients": len(rows), "nodes": int(sum(r.n_nodes for r in rows)),
                 "patients_without_n_stage": len(entries) - len(labelled),
                 "patients_seen_in_training": bundle.patients_seen_in_training(ids),
                 "note": "patient labels from the N stage (N0 negative, N1/N2 positive); node labels are not "
                         "in a cohort manifest, so there are no node-level metrics"},
        "input_domain": domain,
        "seconds": time.time() - t0,
    }
    return result, rows
