"""Writing a prediction: report.json, gradcam.nrrd, traversal/ and report.html, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_directory
from ..case import Case
from ..volume import Volume
from .imaging import png_bytes, strip
from .report_html import render_html
from .results import PredictionResult

REPORT_FILE = "report.json"


def traversal_files(node_id: int, direction: str) -> tuple[str, str]:
    stem = f"node_{node_id:03d}_{direction}"
    return f"traversal/{stem}.png", f"traversal/{stem}.nrrd"


def _write_stack(frames: np.ndarray, pixel_mm: float, path: Path) -> None:
    image = sitk.GetImageFromArray(frames.astype(np.float32))  # (F, H, W): frames along k
    image.SetSpacing((pixel_mm, pixel_mm, 1.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_outputs(result: PredictionResult, case: Case, out_dir: str | Path) -> Path:
    """Write every output into ``out_dir`` (replaced as a whole; a failure leaves nothing half-written)."""
    out_dir = Path(out_dir)
    if result.heatmap.shape != case.image.array.shape:
        raise ValueError(f"heatmap {result.heatmap.shape} is not on the case image grid {case.image.array.shape}")
    report = result.to_report_dict()
    report["outputs"] = {"gradcam": "gradcam.nrrd", "html": "report.html", "traversal": {}}
    with atomic_directory(out_dir, marker=REPORT_FILE) as folder:
        heatmap = Volume(result.heatmap.astype(np.float32), case.image.spacing, case.image.origin, case.image.direction)
        sitk.WriteImage(heatmap.to_sitk(), str(folder / "gradcam.nrrd"), useCompression=True)
        (folder / "traversal").mkdir()
        for node_id, directions in result.traversals.items():
            pixel_mm = result.node_patches[node_id].pixel_mm
            for direction, frames in directions.items():
                png, nrrd = traversal_files(node_id, direction)
                (folder / png).write_bytes(png_bytes(strip(frames)))
                _write_stack(frames, pixel_mm, folder / nrrd)
                report["outputs"]["traversal"].setdefault(str(node_id), {})[direction] = {"png": png, "nrrd": nrrd}
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (folder / "report.html").write_text(render_html(result), encoding="utf-8")
    return out_dir
