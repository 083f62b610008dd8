"""Reading images (NRRD, NIfTI, MHA, a DICOM series folder) with one-line errors for bad input."""

from __future__ import annotations

import contextlib
import locale
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

MODALITY_TAG = "0008|0060"


@contextlib.contextmanager
def preserved_locale() -> Iterator[None]:
    """GDCM (SimpleITK's DICOM reader) switches the process to the C locale and leaves it there, after which
    every open() without an explicit encoding becomes ASCII; put the caller's locale back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(folder, "folder holds no DICOM series")
    if len(series_ids) > 1:
        raise InputError(folder, f"folder holds {len(series_ids)} DICOM series; give a folder with exactly one")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


def read_any(path: str | Path) -> sitk.Image:
    """Read an image file or DICOM folder without checking its dimension (the caller decides)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        with preserved_locale():
            if path.is_dir():
                return _read_dicom_series(path)
            return sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        # ITK's messages span many lines; the first meaningful one is enough for the user.
        detail = next((line.strip() for line in str(error).splitlines() if "ERROR" in line or "Could not" in line), "")
        raise InputError(path, f"cannot be read as an image{': ' + detail if detail else ''}") from None


def require_3d_scalar(image: sitk.Image, source: str | Path) -> None:
    dimension = image.GetDimension()
    if dimension != 3:
        raise InputError(source, f"is a {dimension}D image; a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(source, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar volume is needed")
    if min(image.GetSize()) < 1:
        raise InputError(source, "is empty")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputError(source, "has a non-orthogonal (sheared) grid, which is not supported")


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3D scalar image and refuse NaN/infinite voxels."""
    image = read_any(path)
    require_3d_scalar(image, path)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(path, f"has {bad} NaN or infinite voxel(s)")
    return image


def read_modality(path: str | Path) -> str | None:
    """The DICOM modality ("MR", "CT", ...) of an image file or DICOM series folder from its header; None
    when unknown (NRRD, NIfTI, ... carry no modality)."""
    path = Path(path)
    try:
        with preserved_locale():
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                series = reader.GetGDCMSeriesIDs(str(path))
                if not series:
                    return None
                path = Path(reader.GetGDCMSeriesFileNames(str(path), series[0])[0])
            header = sitk.ImageFileReader()
            header.SetFileName(str(path))
            header.ReadImageInformation()
            if header.HasMetaDataKey(MODALITY_TAG):
                return header.GetMetaData(MODALITY_TAG).strip().upper() or None
    except RuntimeError:
        return None
    return None
