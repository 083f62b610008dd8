"""The streaming NRRD writer: what SimpleITK reads back is the array and the geometry that were written."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.io.nrrd import write_nrrd
from LNMStagingLib.io.volume import Volume


def _oblique_direction() -> np.ndarray:
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return rotation @ np.diag([1.0, -1.0, 1.0])  # a rotation and one flipped axis


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_written_volume_reads_back_identically(tmp_path, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((7, 11, 13)) * 100).astype(dtype)
    volume = Volume(array, (0.7, 0.9, 3.3), (-12.5, 40.25, 7.0), _oblique_direction())
    write_nrrd(volume, tmp_path / "out.nrrd")
    image = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert sitk.GetArrayFromImage(image).dtype == array.dtype
    assert np.allclose(image.GetSpacing(), volume.spacing, atol=1e-12)
    assert np.allclose(image.GetOrigin(), volume.origin, atol=1e-12)
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), volume.direction, atol=1e-12)


def test_a_volume_larger_than_one_block_is_written_whole(tmp_path):
    array = np.zeros((80, 256, 256), np.float32)  # 21 MB: two compression blocks
    array[40, 100:120, 30:60] = np.linspace(0, 1, 30, dtype=np.float32)
    array[-1, -1, -1] = 0.5
    write_nrrd(Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), tmp_path / "big.nrrd")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "big.nrrd"))), array)


def test_an_unsupported_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no NRRD type"):
        write_nrrd(Volume(np.zeros((2, 2, 2), np.complex64), (1, 1, 1), (0, 0, 0)), tmp_path / "x.nrrd")
