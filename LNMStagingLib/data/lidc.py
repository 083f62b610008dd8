"""Adapter for the LIDC-IDRI nodule slices of ``../shared/data/lidc-nodules`` (and any folder in that layout).

* Patches: the 64x64 uint8 lesion-only slices are scaled to [0, 1] (preset ``lidc-png``) and area-averaged
  to 32x32; the mask is the averaged mask > 0.5 and the patch is lesion-only (image * mask).
* Pixel spacing is not stored: per nodule, mm/pixel = ``diameter_mm`` / (largest in-plane long axis in
  pixels over that nodule's slices). Without ``nodules.csv`` (or a diameter) the spacing comes from a
  given field of view (the bundle's ``fov_mm`` / image width).
* Features per slice: ``LNMStagingLib.imaging.measure.measure_cross_section`` of the 64x64 mask at that spacing.
* Multiple-instance view: a patient's bag is its slices, largest area first, at most ``max_patches``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..models.mil import DEFAULT_FEATURES
from .dataset import PatchDataset

LIDC_ENV = "LNMSTAGING_LIDC_DIR"
REQUIRED_ARRAYS = ("images", "masks", "slice_label", "nodule_id", "patient_id")


def default_lidc_dir() -> Path:
    """``$LNMSTAGING_LIDC_DIR`` or ``<repository>/../shared/data/lidc-nodules``."""
    env = os.environ.get(LIDC_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc-nodules"


def area_downsample(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float -> (N, size, size) by area averaging (H, W multiples of size)."""
    n, h, w = images.shape
    if h == size and w == size:
        return images.astype(np.float32)
    if h % size or w % size:
        import torch
        import torch.nn.functional as F

        return F.interpolate(torch.as_tensor(images, dtype=torch.float32)[:, None], size=(size, size),
                             mode="area")[:, 0].numpy()
    fh, fw = h // size, w // size
    return images.reshape(n, size, fh, size, fw).mean(axis=(2, 4)).astype(np.float32)


def read_nodule_arrays(data_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Read and check ``nodules.npz`` (+ optional ``nodules.csv`` diameters)."""
    data_dir = Path(data_dir)
    npz = data_dir / "nodules.npz"
    if not npz.is_file():
        raise InputError(npz, "not found (expected nodules.npz in the layout of ../shared/data/lidc-nodules)")
    try:
        with np.load(npz, allow_pickle=False) as handle:
            arrays = {key: handle[key] for key in handle.files}
    except (OSError, ValueError) as error:
        raise InputError(npz, f"unreadable ({error})") from None
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise InputError(npz, f"arrays missing: {', '.join(missing)}")
    images = arrays["images"]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(npz, f"images must be (N, S, S), got {images.shape}")
    n = images.shape[0]
    for key in ("masks", "slice_label", "nodule_id", "patient_id"):
        if arrays[key].shape[0] != n:
            raise InputError(npz, f"{key} has {arrays[key].shape[0]} entries, images {n}")
    if arrays["masks"].shape != images.shape:
        raise InputError(npz, "masks and images differ in shape")
    if not np.all(arrays["masks"].reshape(n, -1).any(1)):
        raise InputError(npz, "some slices have an empty mask")
    diameters: dict[str, float] = {}
    csv_path = data_dir / "nodules.csv"
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "nodule_key" not in reader.fieldnames or "diameter_mm" not in reader.fieldnames:
                raise InputError(csv_path, "needs the columns nodule_key and diameter_mm")
            for row in reader:
                try:
                    value = float(row["diameter_mm"])
                except (TypeError, ValueError):
                    continue
                if np.isfinite(value) and value > 0:
                    diameters[row["nodule_key"]] = value
    return arrays, diameters


def build_dataset(arrays: dict[str, np.ndarray], diameters: dict[str, float], patch_size: int = 32,
                  fov_mm: float | None = None, feature_names: tuple[str, ...] = DEFAULT_FEATURES,
                  progress: bool = False) -> PatchDataset:
    """Patches, spacing and features from LIDC-layout arrays (see the module docstring)."""
    from ..imaging.measure import measure_cross_section

    images = arrays["images"]
    masks = arrays["masks"].astype(bool)
    n, size = images.shape[0], images.shape[1]
    nodule = arrays["nodule_id"].astype(str)
    patient = arrays["patient_id"].astype(str)
    labels = np.asarray(arrays["slice_label"], dtype=np.int64)

    unit = [measure_cross_section(masks[i], (1.0, 1.0)) for i in range(n)]  # pixel units
    long_px = np.asarray([c.long_axis_mm for c in unit])
    fallback = (fov_mm / size) if fov_mm else None
    mm_per_px = np.zeros(n, dtype=np.float64)
    known = []
    for key in np.unique(nodule):
        idx = np.flatnonzero(nodule == key)
        d = diameters.get(key)
        if d is not None:
            mm_per_px[idx] = d / max(long_px[idx].max(), 1.0)
            known.append(mm_per_px[idx[0]])
        else:
            mm_per_px[idx] = np.nan
    if np.isnan(mm_per_px).any():
        if fallback is None:
            if not known:
                raise InputError(None, "no nodule diameters (nodules.csv) and no field of view to derive spacing")
            fallback = float(np.median(known))
        mm_per_px[np.isnan(mm_per_px)] = fallback

    columns = []
    for c, s in zip(unit, mm_per_px, strict=True):
        row = {"short_axis_mm": c.short_axis_mm * s, "long_axis_mm": c.long_axis_mm * s,
               "axis_ratio": c.axis_ratio, "convexity": c.convexity, "compactness": c.compactness,
               "area_mm2": c.area_mm2 * s * s, "perimeter_mm": c.perimeter_mm * s}
        columns.append([row[name] for name in feature_names])
    features = np.asarray(columns, dtype=np.float32)
    area = np.asarray([c.area_mm2 for c in unit]) * mm_per_px**2

    scaled = area_downsample(images.astype(np.float32) / 255.0, patch_size)
    small_masks = area_downsample(masks.astype(np.float32), patch_size) > 0.5
    # keep at least the brightest pixel of tiny lesions that vanish at the lower resolution
    empty = ~small_masks.reshape(n, -1).any(1)
    for i in np.flatnonzero(empty):
        j = np.unravel_index(np.argmax(scaled[i]), scaled[i].shape)
        small_masks[i][j] = True
    patches = (scaled * small_masks)[:, None].astype(np.float32)
    return PatchDataset(patches, small_masks, features, tuple(feature_names), labels, nodule, patient,
                         area.astype(np.float32), mm_per_px, size)


def load_lidc(data_dir: str | Path | None = None, patch_size: int = 32, fov_mm: float | None = None) -> PatchDataset:
    """Load a folder in the LIDC layout as a :class:`PatchDataset`.

    Args:
        data_dir: the folder (nodules.npz, optionally nodules.csv); None: :func:`default_lidc_dir`.
        patch_size: patch pixels after area-averaging.
        fov_mm: the field of view to assume where no diameter gives the spacing.

    Returns:
        The data set.
    """
    arrays, diameters = read_nodule_arrays(data_dir or default_lidc_dir())
    return build_dataset(arrays, diameters, patch_size=patch_size, fov_mm=fov_mm)
