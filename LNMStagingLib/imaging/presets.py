"""Preprocessing presets: data (JSON), applied with numpy intensity steps (imaging/intensity.py; TorchIO's
definitions) and SimpleITK resampling.

A preset travels inside every model bundle, so a bundle is always applied with the preprocessing it was
trained with. Presets read from a bundle are untrusted input: ``Preset.from_dict`` validates every field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

INTENSITY_STEPS = ("histogram_standardization", "z_normalization", "rescale", "clamp")


@dataclass
class Preset:
    """How an image is prepared before measuring and cutting patches.

    ``target_spacing_mm``: (i, j, k) spacing after canonical LPS orientation, or None to keep the grid.
    ``intensity``: ordered steps, each ``{"type": one of INTENSITY_STEPS, ...parameters}``.
    ``mask_background``: patches keep only the node's voxels (LIDC-style lesion-only slices).
    """

    name: str
    description: str
    modality: str
    target_spacing_mm: tuple[float, float, float] | None = None
    intensity: list[dict[str, Any]] = field(default_factory=list)
    mask_background: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_spacing_mm"] = list(self.target_spacing_mm) if self.target_spacing_mm else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "preset") -> Preset:
        if not isinstance(data, dict):
            raise InputError(source, "preset must be a JSON object")
        unknown = set(data) - {"name", "description", "modality", "target_spacing_mm", "intensity", "mask_background"}
        if unknown:
            raise InputError(source, f"preset has unknown field(s): {', '.join(sorted(unknown))}")
        name, modality = data.get("name"), data.get("modality", "")
        if not isinstance(name, str) or not name or not isinstance(modality, str):
            raise InputError(source, "preset needs a string 'name' and 'modality'")
        spacing = data.get("target_spacing_mm")
        if spacing is not None:
            if not (isinstance(spacing, list | tuple) and len(spacing) == 3 and all(isinstance(s, int | float) and s > 0 for s in spacing)):
                raise InputError(source, "preset 'target_spacing_mm' must be three positive numbers or null")
            spacing = tuple(float(s) for s in spacing)
        steps = data.get("intensity", [])
        if not isinstance(steps, list):
            raise InputError(source, "preset 'intensity' must be a list")
        for step in steps:
            if not isinstance(step, dict) or step.get("type") not in INTENSITY_STEPS:
                raise InputError(source, f"preset has an unknown intensity step: {step!r}")
        return cls(
            name=name,
            description=str(data.get("description", "")),
            modality=modality,
            target_spacing_mm=spacing,
            intensity=[dict(step) for step in steps],
            mask_background=bool(data.get("mask_background", False)),
        )

    @classmethod
    def from_json(cls, text: str, source: str | Path = "preset") -> Preset:
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as error:
            raise InputError(source, f"is not valid JSON ({error.msg}, line {error.lineno})") from None

    def apply_intensity(self, array: np.ndarray) -> np.ndarray:
        """Apply the intensity steps to a (k, j, i) array (numpy, one float32 copy); returns float32.

        Args:
            array: the voxels (left unchanged).

        Returns:
            A new float32 array (``array`` itself when there is no step and it is float32).
        """
        if not self.intensity:
            return array.astype(np.float32, copy=False)
        from .intensity import apply_steps

        return apply_steps(np.array(array, dtype=np.float32), self.intensity)  # a copy: the caller's array stays


def train_landmarks(image_arrays: list[np.ndarray]) -> list[float]:
    """Histogram-standardisation landmarks (Nyul & Udupa, as TorchIO computes them) from training images."""
    import tempfile

    import SimpleITK as sitk
    import torchio as tio

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, array in enumerate(image_arrays):
            path = Path(folder) / f"image_{index}.nii.gz"
            sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
            paths.append(path)
        landmarks = tio.HistogramStandardization.train(paths)
    return [float(v) for v in landmarks]


BUILTIN_PRESETS: dict[str, Preset] = {
    "mri-t2": Preset(
        name="mri-t2",
        description=(
            "T2-weighted MRI as in Keel et al. (MIUA 2025): canonical orientation, 0.573 x 0.573 x 3.3 mm, "
            "histogram standardisation (landmarks learned from the training cohort), Z-normalisation, [0, 1]."
        ),
        modality="MR",
        target_spacing_mm=(0.573, 0.573, 3.3),
        intensity=[
            {"type": "histogram_standardization", "landmarks": None},
            {"type": "z_normalization"},
            {"type": "rescale", "out_min_max": [0.0, 1.0], "percentiles": [0.5, 99.5]},
        ],
    ),
    "ct": Preset(
        name="ct",
        description="CT: Hounsfield window [-1000, 400] HU mapped to [0, 1], values outside clipped.",
        modality="CT",
        intensity=[{"type": "rescale", "out_min_max": [0.0, 1.0], "in_min_max": [-1000.0, 400.0]},
                   {"type": "clamp", "out_min": 0.0, "out_max": 1.0}],
    ),
    "lidc-png": Preset(
        name="lidc-png",
        description="LIDC-IDRI lesion-only 8-bit slices: 0-255 mapped to [0, 1], everything outside the node zeroed.",
        modality="CT",
        intensity=[{"type": "rescale", "out_min_max": [0.0, 1.0], "in_min_max": [0.0, 255.0]},
                   {"type": "clamp", "out_min": 0.0, "out_max": 1.0}],
        mask_background=True,
    ),
}


def get_preset(name_or_path: str | Path) -> Preset:
    """A built-in preset by name, or a preset JSON file."""
    key = str(name_or_path)
    if key in BUILTIN_PRESETS:
        return Preset.from_dict(BUILTIN_PRESETS[key].to_dict())
    path = Path(key)
    if path.suffix == ".json":
        if not path.is_file():
            raise InputError(path, "preset file not found")
        return Preset.from_json(path.read_text(encoding="utf-8"), path)
    raise InputError(None, f"unknown preset {key!r}; choose one of {', '.join(BUILTIN_PRESETS)} or give a .json file")
