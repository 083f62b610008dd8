"""Latent space exploration: k-means clusters of node latents with size and border statistics
(Keel et al. 2025, section 3.4 and Table 4).

* Unit: one latent per nodule, from its largest cross-section. Clustering every slice would let the slices
  of one nodule (near-identical codes and sizes) form clusters of their own and make the within-cluster
  variability look smaller than it is.
* Choosing k as the paper does: k is "optimised to minimise the variability in lymph node size within the
  clusters", with clusters of fewer than 3 nodes excluded. That variability keeps falling as k grows, so the
  criterion alone would pick the largest k tried; we take the elbow of the curve instead (the k farthest below
  the straight line joining the first and last points of the mean within-cluster short-axis SD against k, the
  "Kneedle" rule): beyond it, more clusters buy little. The silhouette of each k is recorded for reference.
* Border irregularity (BI): the mean of min-max normalised (1 - convexity) and compactness, normalised again
  to [0, 1] over the nodules, so its global range is 1 as in the paper's Table 4.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_directory

MIN_CLUSTER_SIZE = 3
CLUSTERS_FILE = "clusters.json"
STAT_FEATURES = ("short_axis_mm", "long_axis_mm", "axis_ratio", "border_irregularity")
STAT_LABELS = {"short_axis_mm": "Short-axis", "long_axis_mm": "Long-axis", "axis_ratio": "Ratio",
               "border_irregularity": "BI"}


@dataclass
class NoduleLatents:
    latents: np.ndarray  # (N, D)
    values: dict[str, np.ndarray]  # STAT_FEATURES -> (N,)
    labels: np.ndarray  # (N,) 1 malignant, 0 benign, -1 unknown
    nodule_id: np.ndarray
    patient_id: np.ndarray
    label_kind: str = "node"  # "node": the node's own label; "patient": its patient's N stage (cohorts)


LABEL_NAMES = {"node": ("benign", "malignant"), "patient": ("node of an N0 patient", "node of an N+ patient")}


def _minmax(values: np.ndarray) -> np.ndarray:
    span = float(values.max() - values.min()) if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def border_irregularity(convexity: np.ndarray, compactness: np.ndarray) -> np.ndarray:
    return _minmax((_minmax(1.0 - convexity) + _minmax(compactness)) / 2.0)


def nodule_latents(bundle, dataset) -> NoduleLatents:
    """Encode each nodule's largest cross-section with the bundle's primary member."""
    names = list(dataset.feature_names)
    first = {}
    for index in np.argsort(-dataset.area_mm2, kind="stable"):
        first.setdefault(str(dataset.nodule_id[index]), int(index))
    chosen = np.array(sorted(first.values()))
    latents = bundle.ensemble.encode(bundle.prepare_patches(dataset.patches[chosen])).mu.cpu().numpy().astype(np.float64)
    feature = {name: dataset.features[chosen, names.index(name)].astype(np.float64) for name in names}
    missing = [n for n in ("short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness") if n not in feature]
    if missing:
        raise InputError(None, f"the data set lacks the feature(s) {', '.join(missing)}")
    values = {
        "short_axis_mm": feature["short_axis_mm"], "long_axis_mm": feature["long_axis_mm"],
        "axis_ratio": feature["axis_ratio"],
        "border_irregularity": border_irregularity(feature["convexity"], feature["compactness"]),
    }
    if dataset.patient_label is not None:  # a cohort: node labels unknown, colour by the patient's N stage
        labels = np.asarray([dataset.patient_label.get(str(p), -1) for p in dataset.patient_id[chosen]], dtype=int)
        kind = "patient"
    else:
        labels, kind = dataset.slice_label[chosen].astype(int), "node"
    return NoduleLatents(latents, values, labels, dataset.nodule_id[chosen], dataset.patient_id[chosen], kind)


def mean_within_sd(assignment: np.ndarray, values: np.ndarray, min_size: int = MIN_CLUSTER_SIZE) -> tuple[float, int]:
    """Mean over clusters with >= ``min_size`` members of the within-cluster SD; and how many such clusters."""
    sds = [values[assignment == c].std() for c in np.unique(assignment) if np.count_nonzero(assignment == c) >= min_size]
    return (float(np.mean(sds)) if sds else float("nan")), len(sds)


def elbow(ks: np.ndarray, curve: np.ndarray) -> int:
    """Kneedle elbow of a decreasing curve: the k farthest below the chord from the first to the last point."""
    x = (ks - ks[0]) / max(ks[-1] - ks[0], 1)
    span = curve[0] - curve[-1]
    y = (curve - curve[-1]) / span if span > 0 else np.zeros_like(curve)
    chord = 1.0 - x  # normalised curve runs from (0, 1) to (1, 0)
    return int(ks[int(np.argmax(chord - y))])


def choose_k(latents: np.ndarray, size: np.ndarray, k_values: list[int], seed: int = 0) -> tuple[int, list[dict]]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rows = []
    for k in k_values:
        assignment = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(latents)
        sd, used = mean_within_sd(assignment, size)
        silhouette = float(silhouette_score(latents, assignment, sample_size=min(2000, len(latents)), random_state=seed))
        rows.append({"k": k, "mean_within_sd_short_axis_mm": sd, "clusters_used": used, "silhouette": silhouette})
    valid = [r for r in rows if np.isfinite(r["mean_within_sd_short_axis_mm"])]
    if len(valid) < 3:
        return (valid[0]["k"] if valid else k_values[0]), rows
    ks = np.array([r["k"] for r in valid], dtype=float)
    curve = np.array([r["mean_within_sd_short_axis_mm"] for r in valid])
    # the curve is noisy from one k to the next (k-means restarts); a running median keeps the elbow stable
    smooth = np.array([np.median(curve[max(0, i - 2):i + 3]) for i in range(len(curve))])
    return elbow(ks, smooth), rows


def cluster_table(assignment: np.ndarray, values: dict[str, np.ndarray], min_size: int = MIN_CLUSTER_SIZE) -> dict:
    """The paper's Table 4: global SD and range of each feature against the mean/min/max within-cluster SD
    and range over the clusters with >= ``min_size`` nodules."""
    kept = [c for c in np.unique(assignment) if np.count_nonzero(assignment == c) >= min_size]
    table = {}
    for name in STAT_FEATURES:
        v = values[name]
        sds = np.array([v[assignment == c].std() for c in kept])
        ranges = np.array([np.ptp(v[assignment == c]) for c in kept])
        table[name] = {
            "global_sd": float(v.std()), "mean_sd_ic": float(sds.mean()) if kept else None,
            "min_sd_ic": float(sds.min()) if kept else None, "max_sd_ic": float(sds.max()) if kept else None,
            "global_range": float(np.ptp(v)), "mean_range_ic": float(ranges.mean()) if kept else None,
            "min_range_ic": float(ranges.min()) if kept else None, "max_range_ic": float(ranges.max()) if kept else None,
        }
    return {"clusters_used": len(kept), "min_cluster_size": min_size, "features": table}


def table_markdown(table: dict) -> str:
    rows = [("Global $\\sigma$", "global_sd"), ("Mean $\\sigma_{IC}$", "mean_sd_ic"), ("Min $\\sigma_{IC}$", "min_sd_ic"),
            ("Max $\\sigma_{IC}$", "max_sd_ic"), ("Global Range", "global_range"), ("Mean $Range_{IC}$", "mean_range_ic"),
            ("Min $Range_{IC}$", "min_range_ic"), ("Max $Range_{IC}$", "max_range_ic")]
    lines = ["| Statistic | " + " | ".join(STAT_LABELS[f] for f in STAT_FEATURES) + " |",
             "|---|" + "---|" * len(STAT_FEATURES)]
    for label, key in rows:
        cells = []
        for feature in STAT_FEATURES:
            value = table["features"][feature][key]
            cells.append("-" if value is None else f"{value:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(folder: Path, data: NoduleLatents, coords: np.ndarray, assignment: np.ndarray, rows: list[dict], k: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=110)
    scatter = axes[0].scatter(coords[:, 0], coords[:, 1], c=data.values["short_axis_mm"], cmap="viridis", s=10)
    fig.colorbar(scatter, ax=axes[0], label="short axis (mm)")
    axes[0].set_title("coloured by size")
    negative, positive = LABEL_NAMES[data.label_kind]
    for value, colour, name in ((0, "tab:blue", negative), (1, "tab:red", positive), (-1, "tab:gray", "unknown")):
        chosen = data.labels == value
        if chosen.any():
            axes[1].scatter(coords[chosen, 0], coords[chosen, 1], c=colour, s=10, label=f"{name} ({chosen.sum()})", alpha=0.7)
    axes[1].legend(loc="best", fontsize=8)
    axes[1].set_title("coloured by label")
    axes[2].scatter(coords[:, 0], coords[:, 1], c=assignment, cmap="tab20", s=10)
    axes[2].set_title(f"k-means clusters (k = {k})")
    for ax in axes:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.suptitle("Node latents (PCA of the VAE latent means), one point per nodule")
    fig.tight_layout()
    fig.savefig(folder / "latent_map.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["mean_within_sd_short_axis_mm"] for r in rows], "o-", ms=3, label="mean within-cluster SD, short axis")
    ax.axvline(k, color="tab:red", ls="--", label=f"chosen k = {k}")
    ax.set_xlabel("k")
    ax.set_ylabel("mm")
    twin = ax.twinx()
    twin.plot(ks, [r["silhouette"] for r in rows], color="tab:gray", lw=1, label="silhouette")
    twin.set_ylabel("silhouette")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "k_selection.png")
    plt.close(fig)


def run_cluster_analysis(model: str | Path | None, data_dir: str | Path | None, out_dir: str | Path,
                         k: int | None = None, k_max: int = 60, seed: int = 0, manifest: str | Path | None = None,
                         progress: bool = False, allow_out_of_domain: bool = False) -> dict[str, Any]:
    """Cluster the nodules of a LIDC-layout folder (``data_dir``) or of a cohort manifest (``manifest``: every
    case prepared with the bundle's preset and patch sampling, as ``predict`` does) in a bundle's latent space;
    write everything atomically. Refused when more than 5% of the patients lie outside the bundle's input domain
    (unless ``allow_out_of_domain``); the summary records the check."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from ..bundle import load_bundle

    bundle = load_bundle(model)
    if manifest is not None:
        from ..data.cohort import load_cohort
        from .pipeline import bundle_settings

        preset, sampling = bundle_settings(bundle)
        dataset = load_cohort(manifest, preset=preset, patch_size=sampling.size, fov_mm=sampling.fov_mm,
                              progress=progress, require_labels=False)
        data_dir = manifest
    else:
        from ..data.lidc import load_lidc

        dataset = load_lidc(data_dir, patch_size=bundle.config.patch_size, fov_mm=bundle.config.fov_mm)
    from ..bundle.domain import dataset_domain, require_dataset_in_domain

    domain = dataset_domain(bundle.domain, dataset.patches, dataset.masks, dataset.patient_id, dataset.mm_per_px)
    require_dataset_in_domain(domain, str(data_dir), bundle.name, allow_out_of_domain)
    data = nodule_latents(bundle, dataset)
    n = len(data.labels)
    if n < 2 * MIN_CLUSTER_SIZE:
        raise InputError(data_dir, f"has {n} nodules; clustering needs at least {2 * MIN_CLUSTER_SIZE}")
    if k is not None:
        if not 2 <= k <= n:
            raise InputError(None, f"--k must be between 2 and the number of nodules ({n})")
        chosen, rows, how = k, [], "given with --k"
    else:
        k_values = list(range(2, max(3, min(k_max, n // MIN_CLUSTER_SIZE)) + 1))
        chosen, rows = choose_k(data.latents, data.values["short_axis_mm"], k_values, seed)
        how = "elbow of the mean within-cluster short-axis SD (clusters >= 3 nodules), Kneedle rule"
    assignment = KMeans(n_clusters=chosen, n_init=4, random_state=seed).fit_predict(data.latents)
    table = cluster_table(assignment, data.values)
    coords = PCA(n_components=2, random_state=seed).fit_transform(data.latents)
    fraction_key = "malignant_fraction" if data.label_kind == "node" else "n_plus_patient_fraction"
    clusters = []
    for c in range(chosen):
        members = assignment == c
        known = data.labels[members] >= 0
        clusters.append({
            "cluster": c, "n": int(members.sum()), "used": bool(members.sum() >= MIN_CLUSTER_SIZE),
            fraction_key: float((data.labels[members][known] == 1).mean()) if known.any() else None,
            **{f"{name}_{stat}": float(fn(data.values[name][members]))
               for name in STAT_FEATURES for stat, fn in (("mean", np.mean), ("sd", np.std), ("range", np.ptp))},
        })
    summary = {
        "model": {"name": bundle.name, "version": bundle.version, "manifest_sha256": bundle.manifest_sha256,
                  "path": str(bundle.path)},
        "input_domain": domain,
        "data": str(data_dir), "n_nodules": n, "unit": "nodule (its largest cross-section)",
        "label": "the node's own label (malignant)" if data.label_kind == "node" else
                 "the patient's N stage (N1/N2), node labels being unknown in a cohort",
        "latent": "VAE latent mean of the primary ensemble member", "k": int(chosen), "k_choice": how,
        "seed": seed, "k_curve": rows, "table4": table, "clusters": clusters,
        "border_irregularity": "mean of min-max normalised (1 - convexity) and compactness, renormalised to [0, 1]",
        "research_use_only": True,
    }
    with atomic_directory(out_dir, marker=CLUSTERS_FILE) as folder:
        (folder / CLUSTERS_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (folder / "table4.md").write_text(
            f"# Latent clusters of {bundle.name} {bundle.version} on {n} nodules (k = {chosen})\n\n"
            f"k: {how}. Statistics over the {table['clusters_used']} clusters with >= {MIN_CLUSTER_SIZE} nodules; "
            "sizes in mm, ratio and BI in [0, 1].\n\n" + table_markdown(table) + "\n", encoding="utf-8")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["nodule_id", "patient_id", "cluster", "label", *STAT_FEATURES, "pc1", "pc2"])
        for i in range(n):
            writer.writerow([data.nodule_id[i], data.patient_id[i], int(assignment[i]), int(data.labels[i]),
                             *(f"{data.values[f][i]:.4f}" for f in STAT_FEATURES), f"{coords[i, 0]:.4f}", f"{coords[i, 1]:.4f}"])
        (folder / "assignments.csv").write_text(buffer.getvalue(), encoding="utf-8")
        _plots(folder, data, coords, assignment, rows, chosen)
    return summary
