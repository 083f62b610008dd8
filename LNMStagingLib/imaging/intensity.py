"""The presets' intensity steps in numpy, in place on one float32 array.

The steps are the TorchIO transforms the presets were defined with (``HistogramStandardization``,
``ZNormalization``, ``RescaleIntensity``, ``Clamp``), computed with the same formulas and the same float32
arithmetic where TorchIO uses float32, so results agree with TorchIO to float rounding (checked in
Testing/Python/test_intensity.py). TorchIO keeps several float32 copies of the whole volume alive per step;
here there is one, which matters at hundreds of millions of voxels.

A step is *pointwise* when a voxel's new value depends on that voxel alone (a fixed-range rescale, a
clamp); a preset made only of such steps can run on the voxels the patches read instead of the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

# Nyul & Udupa landmarks as TorchIO computes them: cut-off percentiles, quartiles and deciles.
_HISTOGRAM_CUTOFF = (1.0, 99.0)
# of the 13 percentiles (1, 10, 20, 25, 30, ..., 75, 80, 90, 99) the quartiles 25 and 75 are not mapping points
_HISTOGRAM_LANDMARKS_USED = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
_CHUNK = 1 << 22  # voxels per block where a step needs temporary per-voxel arrays


def _percentiles() -> np.ndarray:
    return np.array(sorted({*_HISTOGRAM_CUTOFF, 25.0, 50.0, 75.0, *range(10, 100, 10)}), dtype=float)


def is_pointwise(steps: Sequence[dict[str, Any]]) -> bool:
    """True when every step maps each voxel on its own (no statistic of the image is used).

    Args:
        steps: a preset's intensity steps.

    Returns:
        Whether the steps may be applied to any subset of the voxels with the same result there.
    """
    for step in steps:
        kind = step.get("type")
        if kind == "clamp":
            continue
        if kind == "rescale" and step.get("in_min_max") and tuple(step.get("percentiles", (0.0, 100.0))) == (0.0, 100.0):
            continue  # a fixed input range; percentiles 0/100 clip to the image's own range, which changes nothing
        return False
    return True


def _histogram_standardization(array: np.ndarray, step: dict[str, Any]) -> None:
    landmarks = step.get("landmarks")
    if landmarks is None:
        raise InputError("preset", "histogram standardisation has no landmarks: learn them from training images "
                                  "with `lnmstaging preset --manifest CSV --out preset.json` and pass that file "
                                  "as the preset")
    mapping = np.asarray(landmarks, dtype=float)[_HISTOGRAM_LANDMARKS_USED]
    found = np.percentile(array, _percentiles())[_HISTOGRAM_LANDMARKS_USED]
    steps_found = np.diff(found)
    steps_found[steps_found < 1e-5] = np.inf  # two equal landmarks in this image: that piece becomes flat
    slope = np.diff(mapping) / steps_found
    intercept = mapping[:-1] - slope * found[:-1]
    flat = array.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        block = flat[start:start + _CHUNK]
        piece = np.searchsorted(found[1:-1], block, side="right")  # the linear piece each voxel falls in
        block[...] = slope[piece] * block + intercept[piece]  # float64 arithmetic, stored as float32


def _z_normalization(array: np.ndarray) -> None:
    mean = array.mean(dtype=np.float64)
    std = array.std(dtype=np.float64, ddof=1)  # the unbiased SD, as torch.std
    if std == 0:
        raise InputError("image", "has a single intensity: Z-normalisation is undefined")
    array -= np.float32(mean)
    array /= np.float32(std)


def _rescale(array: np.ndarray, step: dict[str, Any]) -> None:
    low_pct, high_pct = (float(v) for v in step.get("percentiles", (0.0, 100.0)))
    if (low_pct, high_pct) != (0.0, 100.0):
        np.clip(array, *np.percentile(array, (low_pct, high_pct)), out=array)
    if step.get("in_min_max"):
        in_min, in_max = (float(v) for v in step["in_min_max"])
    else:
        in_min, in_max = array.min(), array.max()
    if in_max - in_min == 0:
        return  # a constant image stays as it is (TorchIO warns and leaves it)
    out_min, out_max = (float(v) for v in step.get("out_min_max", (0.0, 1.0)))
    array -= in_min
    array /= in_max - in_min
    array *= out_max - out_min
    array += out_min


def apply_steps(array: np.ndarray, steps: Sequence[dict[str, Any]]) -> np.ndarray:
    """Apply intensity steps in order.

    Args:
        array: any shape and dtype; a float32 array is changed in place (the caller's copy), others are
            converted to a new float32 array first.
        steps: a preset's intensity steps (``{"type": ..., parameters}``).

    Returns:
        The float32 result (``array`` itself when it was float32).
    """
    values = array if array.dtype == np.float32 else array.astype(np.float32)
    for step in steps:
        kind = step["type"]
        if kind == "histogram_standardization":
            _histogram_standardization(values, step)
        elif kind == "z_normalization":
            _z_normalization(values)
        elif kind == "rescale":
            _rescale(values, step)
        elif kind == "clamp":
            if step.get("out_min") is not None or step.get("out_max") is not None:
                np.clip(values, step.get("out_min"), step.get("out_max"), out=values)
        else:
            raise InputError("preset", f"unknown intensity step {kind!r}")
    return values
