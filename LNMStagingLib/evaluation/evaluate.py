"""`lnmstaging evaluate`: a bundle, unchanged, on a folder in the LIDC layout (nothing is refitted)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..bundle import ModelBundle
from ..data.bags import bag_slots, gather_slots
from ..data.lidc import NoduleDataset, read_nodule_arrays
from .metrics import binary_metrics, bootstrap_intervals, reliability_curve


@torch.no_grad()
def bundle_predictions(bundle: ModelBundle, dataset: NoduleDataset, batch_size: int = 1024) -> dict:
    """Ensemble predictions: per-slice (K, N), per-nodule mean, per-patient final probability (mean and SD
    over members). Latents are computed once per member; bags are batched."""
    from ..models.mil import clinical_vector

    x = torch.as_tensor(dataset.patches, dtype=torch.float32)
    patients = np.unique(dataset.patient_id)
    max_patches = int(bundle.config.mil.get("max_patches", 15))
    slots, nodes = bag_slots(dataset.patient_id, dataset.nodule_id, dataset.area_mm2, patients, max_patches)
    valid = torch.as_tensor(slots >= 0)
    node_index = torch.as_tensor(nodes)
    slice_probs, patient_final = [], []
    for k, member in enumerate(bundle.members):
        feats = bundle.normalise_features(dataset.features, k).cpu()
        latent = torch.cat([member.vae.encode(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)]) \
            if len(x) else torch.zeros((0, member.vae.config.latent_dim))
        slice_probs.append(torch.sigmoid(member.mil.patch_logits(latent, feats)).numpy())
        lat_b = torch.as_tensor(gather_slots(latent.numpy(), slots)) if member.mil.config.use_latent else None
        feat_b = torch.as_tensor(gather_slots(feats.numpy(), slots))
        clinical = None
        if member.mil.config.n_clinical_inputs:
            table = dataset.clinical or {}
            clinical = torch.as_tensor(np.stack([clinical_vector(member.mil.config.clinical, table.get(p))
                                                 for p in patients]))
        out = member.mil(lat_b, feat_b, valid, node_index, clinical)
        patient_final.append(out["final"].numpy())
    slice_probs = np.stack(slice_probs)
    patient_final = np.stack(patient_final)
    mean_slice = slice_probs.mean(0)
    nodule_ids = np.unique(dataset.nodule_id)
    nodule_prob = np.asarray([mean_slice[dataset.nodule_id == n].mean() for n in nodule_ids])
    nodule_std = np.asarray([slice_probs[:, dataset.nodule_id == n].mean(1).std() for n in nodule_ids])
    labels = dataset.nodule_labels()
    plabels = dataset.patient_labels()
    return {
        "slice_prob": slice_probs,
        "nodule_id": nodule_ids,
        "nodule_prob": nodule_prob,
        "nodule_std": nodule_std,
        "nodule_label": np.asarray([labels[n] for n in nodule_ids]),
        "nodule_patient": np.asarray([dataset.patient_id[dataset.nodule_id == n][0] for n in nodule_ids]),
        "patient_id": patients,
        "patient_prob": patient_final.mean(0),
        "patient_std": patient_final.std(0),
        "patient_label": np.asarray([plabels[p] for p in patients]),
    }


def evaluate_bundle(bundle: ModelBundle, data_dir: str | Path, n_boot: int = 1000, plots_dir: Path | None = None) -> dict:
    """metrics.json content: ``{"nodule": {...}, "patient": {...}, "model": {...}, "data": {...}}``."""
    from ..data.lidc import build_dataset

    t0 = time.time()
    arrays, diameters = read_nodule_arrays(data_dir)
    dataset = build_dataset(arrays, diameters, patch_size=bundle.config.patch_size, fov_mm=bundle.config.fov_mm,
                            feature_names=tuple(bundle.config.feature_names))
    pred = bundle_predictions(bundle, dataset)
    result: dict = {}
    for level, threshold in (("nodule", bundle.config.node_threshold), ("patient", bundle.config.threshold)):
        y, p = pred[f"{level}_label"], pred[f"{level}_prob"]
        known = y >= 0
        metrics = binary_metrics(y[known], p[known], threshold)
        groups = pred["nodule_patient"][known] if level == "nodule" else pred["patient_id"][known]
        metrics["ci95"] = bootstrap_intervals(y[known], p[known], threshold, n_boot=n_boot, groups=groups)
        metrics["reliability"] = reliability_curve(y[known], p[known])
        metrics["mean_ensemble_sd"] = float(np.mean(pred[f"{level}_std"]))
        result[level] = metrics
    if plots_dir is not None:
        from .plots import plot_reliability, plot_roc

        plots_dir = Path(plots_dir)
        plots_dir.mkdir(parents=True, exist_ok=True)
        curves = {lvl: (pred[f"{lvl}_label"], pred[f"{lvl}_prob"]) for lvl in ("nodule", "patient")}
        plot_roc(curves, plots_dir / "roc.png", f"ROC: {bundle.name}")
        plot_reliability(curves, plots_dir / "reliability.png", f"Reliability: {bundle.name}")
    result["model"] = {"name": bundle.name, "version": bundle.version, "path": str(bundle.path),
                       "manifest_sha256": bundle.manifest_sha256, "members": bundle.n_members,
                       "threshold": bundle.threshold, "node_threshold": bundle.config.node_threshold}
    result["data"] = {"path": str(data_dir), "slices": len(dataset), "nodules": int(len(pred["nodule_id"])),
                      "patients": int(len(pred["patient_id"])),
                      # > 0: these figures are (partly) in-sample, not a test result
                      "patients_seen_in_training": bundle.patients_seen_in_training(pred["patient_id"]),
                      "spacing": "nodules.csv diameters" if diameters else f"bundle fov_mm {bundle.config.fov_mm}"}
    result["seconds"] = time.time() - t0
    return result
