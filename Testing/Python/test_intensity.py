"""The numpy intensity steps against TorchIO's transforms (the presets' definition), and the pointwise rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio

from LNMStagingLib.errors import InputError
from LNMStagingLib.imaging.intensity import apply_steps, is_pointwise
from LNMStagingLib.imaging.presets import BUILTIN_PRESETS

LANDMARKS = [0.0, 8.0, 15.0, 22.0, 30.0, 38.0, 46.0, 54.0, 62.0, 70.0, 78.0, 88.0, 100.0]
MRI_STEPS = [{"type": "histogram_standardization", "landmarks": LANDMARKS}, {"type": "z_normalization"},
             {"type": "rescale", "out_min_max": [0.0, 1.0], "percentiles": [0.5, 99.5]}]


def _torchio(array: np.ndarray, steps: list[dict]) -> np.ndarray:
    """The steps through TorchIO, as the presets applied them before."""
    transforms = []
    for step in steps:
        kind = step["type"]
        if kind == "histogram_standardization":
            transforms.append(tio.HistogramStandardization({"default_image_name": np.asarray(step["landmarks"], float)}))
        elif kind == "z_normalization":
            transforms.append(tio.ZNormalization())
        elif kind == "rescale":
            transforms.append(tio.RescaleIntensity(
                out_min_max=tuple(step.get("out_min_max", (0.0, 1.0))),
                in_min_max=tuple(step["in_min_max"]) if step.get("in_min_max") else None,
                percentiles=tuple(step.get("percentiles", (0.0, 100.0)))))
        else:
            transforms.append(tio.Clamp(out_min=step.get("out_min"), out_max=step.get("out_max")))
    image = tio.ScalarImage(tensor=torch.from_numpy(array.astype(np.float32))[None])
    return tio.Compose(transforms)(image).data[0].numpy()


def _mri_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(120, 45, (6, 40, 50))).round().astype(np.int16)


@pytest.mark.parametrize("steps", [
    MRI_STEPS,
    BUILTIN_PRESETS["ct"].intensity,
    BUILTIN_PRESETS["lidc-png"].intensity,
    [{"type": "rescale", "out_min_max": [-1.0, 1.0]}],  # the image's own range
    [{"type": "clamp", "out_max": 150.0}],
], ids=["mri-t2", "ct", "lidc-png", "rescale-own-range", "clamp-max"])
def test_numpy_steps_match_torchio(steps):
    array = _mri_like()
    if steps is BUILTIN_PRESETS["ct"].intensity:
        array = (array * 8 - 1100).astype(np.int16)  # Hounsfield-like, beyond both ends of the window
    expected = _torchio(array, steps)
    ours = apply_steps(array, steps)
    assert ours.dtype == np.float32 and ours.shape == array.shape
    scale = max(float(np.abs(expected).max()), 1.0)
    assert float(np.abs(ours - expected).max()) <= 2e-7 * scale


def test_a_float32_array_is_changed_in_place_and_others_are_copied():
    ints = _mri_like()
    before = ints.copy()
    apply_steps(ints, BUILTIN_PRESETS["lidc-png"].intensity)
    assert np.array_equal(ints, before)
    floats = ints.astype(np.float32)
    assert apply_steps(floats, BUILTIN_PRESETS["lidc-png"].intensity) is floats


def test_pointwise_only_for_fixed_range_steps():
    assert is_pointwise(BUILTIN_PRESETS["lidc-png"].intensity)
    assert is_pointwise(BUILTIN_PRESETS["ct"].intensity)
    assert not is_pointwise(MRI_STEPS)
    assert not is_pointwise([{"type": "rescale", "in_min_max": [0, 1], "percentiles": [1, 99]}])
    # a pointwise preset gives the same values on any part of the image as on the whole
    array = _mri_like().astype(np.float32)
    whole = apply_steps(array.copy(), BUILTIN_PRESETS["ct"].intensity)
    assert np.array_equal(apply_steps(array[2, 5:20, 7:30].copy(), BUILTIN_PRESETS["ct"].intensity), whole[2, 5:20, 7:30])


def test_histogram_standardisation_without_landmarks_is_refused():
    with pytest.raises(InputError, match="landmarks"):
        apply_steps(_mri_like(), [{"type": "histogram_standardization", "landmarks": None}])
