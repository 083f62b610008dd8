"""Shared fixtures: the phantom case, the LIDC data location, and the tiny real model bundle.

The tiny bundle is trained (seconds to half a minute) once per source version and kept in pytest's cache
folder, keyed by a hash of the code that defines it; a cached copy that no longer loads is rebuilt.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory):
    from LNMStagingLib.synthetic.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"))


@pytest.fixture(scope="session")
def lidc_dir() -> Path:
    from LNMStagingLib.data.lidc import default_lidc_dir

    path = default_lidc_dir()
    if not (path / "nodules.npz").is_file():
        pytest.skip(f"LIDC data not found at {path} (set LNMSTAGING_LIDC_DIR); the real-data tests need it")
    return path

_SOURCES = ("LNMStagingLib/bundle", "LNMStagingLib/models", "LNMStagingLib/training", "LNMStagingLib/data",
            "LNMStagingLib/synthetic", "LNMStagingLib/fromdict.py", "LNMStagingLib/imaging/presets.py",
            "LNMStagingLib/imaging/patches.py", "LNMStagingLib/imaging/measure.py")
_BUILT: dict[str, Path] = {}


def _source_hash() -> str:
    digest = hashlib.sha256()
    for entry in _SOURCES:
        path = REPOSITORY / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPOSITORY).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def tiny_bundle_path(cache_root: Path) -> Path:
    from LNMStagingLib.bundle import load_bundle
    from LNMStagingLib.errors import LNMStagingError
    from LNMStagingLib.training.tiny import build_tiny_bundle

    key = _source_hash()
    if key in _BUILT:
        return _BUILT[key]
    target = cache_root / f"tiny-{key}"
    if target.is_dir():
        try:
            load_bundle(target)
            _BUILT[key] = target
            return target
        except LNMStagingError:
            shutil.rmtree(target)
    for stale in cache_root.glob("tiny-*"):  # built from older sources
        shutil.rmtree(stale, ignore_errors=True)
    # a private build folder, renamed at the end: two test sessions building at once do not collide
    partial = Path(tempfile.mkdtemp(prefix=f".tiny-{key}.", dir=cache_root))
    build_tiny_bundle(partial / "bundle", seed=0)
    try:
        (partial / "bundle").rename(target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _BUILT[key] = target
    return target


@pytest.fixture(scope="session")
def tiny_bundle_dir(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`
    root = Path(cache.mkdir("lnmstaging-tiny-bundle")) if cache else tmp_path_factory.mktemp("tiny-bundle")
    return tiny_bundle_path(root)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_dir):
    from LNMStagingLib.bundle import load_bundle

    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="session")
def phantom_case(phantom_files):
    from LNMStagingLib.imaging.case import load_case

    return load_case(phantom_files.image, phantom_files.segmentation)


@pytest.fixture(scope="session")
def phantom_prediction(phantom_case, tiny_bundle):
    from LNMStagingLib.prediction import predict_case

    return predict_case(phantom_case, bundle=tiny_bundle)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def write_dicom_series():
    """A function writing a 3D image as a DICOM series folder of the given modality (real GDCM files)."""
    import SimpleITK as sitk

    from LNMStagingLib.io.image import preserved_locale

    def write(image, folder: Path, modality: str = "MR") -> Path:
        folder.mkdir(parents=True)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        spacing, direction = image.GetSpacing(), image.GetDirection()
        series = "1.2.826.0.1.3680043.2.1125.1.4242"
        with preserved_locale():  # GDCM's writer switches the process to the C locale
            for k in range(image.GetDepth()):
                plane = sitk.Cast(image[:, :, k], sitk.sitkInt16)
                origin = image.TransformIndexToPhysicalPoint((0, 0, k))
                for tag, value in (("0008|0060", modality), ("0020|000e", series), ("0020|0013", str(k + 1)),
                                   ("0020|0032", "\\".join(f"{v:.4f}" for v in origin)),
                                   ("0020|0037", "\\".join(f"{direction[a]:g}" for a in (0, 3, 6, 1, 4, 7))),
                                   ("0028|0030", f"{spacing[1]}\\{spacing[0]}"), ("0018|0050", str(spacing[2])),
                                   ("0008|0018", f"{series}.{k + 1}")):
                    plane.SetMetaData(tag, value)
                writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
                writer.Execute(plane)
        return folder

    return write
