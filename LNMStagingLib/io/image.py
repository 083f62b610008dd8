"""Reading images (NRRD, NIfTI, MHA, a DICOM series folder) with one-line errors for bad input."""

from __future__ import annotations

import contextlib
import locale
import re
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
    files = reader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    check_slice_positions(files, folder)
    reader.SetFileNames(files)
    return reader.Execute()


def _slice_geometry(file: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImagePositionPatient, slice normal) of one DICOM file; None when the header lacks them."""
    header = sitk.ImageFileReader()
    header.SetFileName(file)
    header.ReadImageInformation()
    if not (header.HasMetaDataKey("0020|0032") and header.HasMetaDataKey("0020|0037")):
        return None
    try:
        position = np.array([float(v) for v in header.GetMetaData("0020|0032").split("\\")])
        orientation = np.array([float(v) for v in header.GetMetaData("0020|0037").split("\\")])
    except ValueError:
        return None
    if position.shape != (3,) or orientation.shape != (6,):
        return None
    return position, np.cross(orientation[:3], orientation[3:])


def check_slice_positions(files: list[str] | tuple[str, ...], folder: Path) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along their normal: read as one grid, a
    missing slice would silently squeeze the volume (nodes vanish, axes shrink).

    Args:
        files: the series' files in GDCM's order.
        folder: the series folder, for the message.
    """
    if len(files) < 3:
        return
    geometries = [_slice_geometry(file) for file in files]
    if any(g is None for g in geometries):
        return  # without positions GDCM cannot order the slices either; nothing to compare
    normal = geometries[0][1]
    depths = np.sort([float(position @ normal) for position, _ in geometries])
    steps = np.diff(depths)
    spacing = float(np.median(steps))
    if spacing <= 0 or np.any(steps <= 1e-4):
        raise InputError(folder, "DICOM series has two slices at the same position; give one series of distinct "
                                 "slices")
    worst = int(np.argmax(np.abs(steps - spacing)))
    if abs(steps[worst] - spacing) > max(0.01 * spacing, 1e-3):
        raise InputError(folder, f"DICOM slices are not evenly spaced: {steps[worst]:.3g} mm between slices "
                                 f"{worst + 1} and {worst + 2} where the others are {spacing:.3g} mm apart (a missing "
                                 "slice?); the series cannot be read as one regular grid")


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
        detail = itk_reason(str(error))
        raise InputError(path, f"cannot be read as an image{': ' + detail if detail else ''}") from None


_ITK_PREFIX = re.compile(r"^(ITK ERROR: )?\w+\(0x[0-9a-f]+\): ")
_TEEM_PREFIX = re.compile(r"^\[\w+\] \w+: ")


def itk_reason(message: str) -> str:
    """One line from ITK's many-line exception text: its error line without the object address, completed by
    the innermost reason (NRRD's teem library puts the actual cause, e.g. a short read, on the last line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = next((line for line in lines if "ERROR" in line or "Could not" in line), "")
    first = _ITK_PREFIX.sub("", first)
    causes = [_TEEM_PREFIX.sub("", line) for line in lines if line.startswith("[")]
    innermost = next((c for c in reversed(causes) if c and not c.endswith(":") and c != "trouble"), "")
    if innermost and (not first or first.endswith(":")):
        return f"{first} {innermost}".strip()
    return first.rstrip(":")


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
    """Read a 3D scalar image; refuse NaN/infinite voxels and constant (e.g. all-zero) images.

    Args:
        path: an image file or a DICOM series folder.

    Returns:
        The image.
    """
    image = read_any(path)
    require_3d_scalar(image, path)
    array = sitk.GetArrayViewFromImage(image)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(path, f"has {bad} NaN or infinite voxel(s)")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InputError(path, f"is a constant image (every voxel is {low:g}): there is nothing to measure or predict")
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
