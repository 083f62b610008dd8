"""A small synthetic cohort of 2D node cross-sections (no real data), for tests and the tiny bundle.

Benign nodes are small, round and smooth with a homogeneous texture; malignant nodes are larger,
irregular (lobulated border) and heterogeneous. Arrays have the layout of ``../shared/data/lidc-nodules``
(``images`` uint8 lesion-only, ``masks``, ``slice_label``, ``nodule_id``, ``patient_id``, ``slice_index``),
plus a ``diameter_mm`` table, so the same adapter code runs on both.
"""

from __future__ import annotations

import numpy as np


def _blob(size: int, radius: float, irregularity: float, rng: np.random.Generator, texture: float,
          elongation: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = (size - 1) / 2 + rng.normal(0, 1.0, 2)
    angle = np.arctan2(yy - cy, xx - cx)
    theta = rng.uniform(0, np.pi)
    r = np.hypot((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta),
                 ((yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta)) * elongation)
    boundary = radius * (1 + irregularity * (0.6 * np.sin(5 * angle + rng.uniform(0, 6.3))
                                             + 0.4 * np.sin(8 * angle + rng.uniform(0, 6.3))))
    mask = r <= boundary
    base = 0.55 + 0.25 * (1 - r / max(radius, 1e-3)).clip(0, 1)
    noise = rng.normal(0, texture, (size, size))
    image = np.clip(base + noise, 0.05, 1.0) * mask
    return (image * 255).astype(np.uint8), mask


def make_synthetic_nodules(n_patients: int = 40, size: int = 64, seed: int = 0, positive_fraction: float = 0.4):
    """Synthetic cohort: returns (arrays dict like nodules.npz, {nodule_id: diameter_mm})."""
    rng = np.random.default_rng(seed)
    images, masks, labels, nodules, patients, slices = [], [], [], [], [], []
    diameters: dict[str, float] = {}
    mm_per_px = 0.7
    for p in range(n_patients):
        patient = f"synth{p:03d}"
        positive = rng.random() < positive_fraction
        n_nodes = int(rng.integers(1, 4))
        malignant_node = int(rng.integers(0, n_nodes)) if positive else -1
        for n in range(n_nodes):
            malignant = n == malignant_node or (positive and rng.random() < 0.2)
            nodule = f"{patient}/{n}"
            radius = rng.uniform(9, 15) if malignant else rng.uniform(4, 9)
            radius *= size / 64
            irregularity = rng.uniform(0.12, 0.25) if malignant else rng.uniform(0.0, 0.05)
            texture = 0.12 if malignant else 0.03
            elongation = rng.uniform(1.0, 1.4)
            n_slices = int(rng.integers(1, 4))
            largest = 0.0
            for s in range(n_slices):
                scale = 1.0 - 0.15 * abs(s - (n_slices - 1) / 2)
                image, mask = _blob(size, radius * scale, irregularity, rng, texture, elongation)
                if not mask.any():
                    continue
                images.append(image)
                masks.append(mask)
                labels.append(int(malignant))
                nodules.append(nodule)
                patients.append(patient)
                slices.append(s)
                largest = max(largest, 2 * radius * scale * mm_per_px)
            diameters[nodule] = largest
    arrays = {
        "images": np.stack(images),
        "masks": np.stack(masks),
        "slice_label": np.asarray(labels, dtype=np.int64),
        "nodule_id": np.asarray(nodules),
        "patient_id": np.asarray(patients),
        "slice_index": np.asarray(slices, dtype=np.int64),
    }
    return arrays, diameters


def write_synthetic_dataset(out_dir, n_patients: int = 40, seed: int = 0):
    """Write ``nodules.npz`` + ``nodules.csv`` in the LIDC layout (for tests of ``evaluate``)."""
    import csv
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays, diameters = make_synthetic_nodules(n_patients, seed=seed)
    np.savez_compressed(out / "nodules.npz", **arrays)
    labels = {n: int(label) for n, label in zip(arrays["nodule_id"], arrays["slice_label"], strict=True)}
    with open(out / "nodules.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["nodule_key", "exam_id", "nodule_id", "diameter_mm", "malignancy", "class"])
        for key, diameter in diameters.items():
            exam, node = key.split("/", 1)
            writer.writerow([key, exam, node, f"{diameter:.4f}", 5 if labels[key] else 1,
                             "MALIGNANT" if labels[key] else "BENIGN"])
    return out
