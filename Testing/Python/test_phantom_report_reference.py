"""Behaviour reference: the phantom case through ``lnmstaging predict`` on the bundled default model gives the
recorded report.json (data/phantom_report_reference.json), apart from timings; floats agree to 1e-6.

Written by ``lnmstaging phantom`` + ``lnmstaging predict`` with the options of scripts/demo.sh; input paths
relative to the run folder, the bundle path relative to Resources/Models. First recorded on main before the
library was reorganised (the reorganisation left every number unchanged); re-recorded deliberately when the
default bundle was rebuilt calibrated (lidc-vae-mlp 1.1.0: new probabilities, in-node heatmap, new keys), and
when the bundle gained domain.json (same weights and probabilities; manifest_sha256 and the added keys
model.path, input.skipped_segments, patient.input_warnings, patient.clinical.out_of_range only), and when the
measurements took the radiological short axis and unsmoothed border features (issue 10; same bundle: new
short_axis_mm / axis_ratio / compactness / convexity, criteria calls, and the probabilities they feed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from LNMStagingLib.bundle import builtin_models_dir
from LNMStagingLib.cli.main import main

REFERENCE = Path(__file__).parent / "data" / "phantom_report_reference.json"
TOLERANCE = 1e-6


def _differences(expected, actual, where: str = "report") -> list[str]:
    """Every place where ``actual`` differs from ``expected`` (floats within TOLERANCE count as equal)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}: keys {sorted(set(expected) ^ set(actual))} differ"] if set(expected) != set(actual) else []
        for key in sorted(set(expected) & set(actual)):
            out += _differences(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items, expected {len(expected)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in _differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
            return [] if expected == actual else [f"{where}: {actual!r}, expected {expected!r}"]
        if math.isclose(float(expected), float(actual), rel_tol=0.0, abs_tol=TOLERANCE):
            return []
        return [f"{where}: {actual!r}, expected {expected!r}"]
    return [] if expected == actual else [f"{where}: {actual!r}, expected {expected!r}"]


def test_differences_notice_a_changed_float_and_a_missing_key():
    assert _differences({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 + 5e-7]}) == []
    assert _differences({"a": [1.0, 2.0]}, {"a": [1.0, 2.1]}) == ["report.a[1]: 2.1, expected 2.0"]
    assert _differences({"a": 1, "b": 2}, {"a": 1}) == ["report: keys ['b'] differ"]


def test_phantom_report_equals_the_recorded_reference(tmp_path):
    if not (builtin_models_dir() / "lidc-vae-mlp" / "manifest.json").is_file():
        pytest.skip("the bundled model Resources/Models/lidc-vae-mlp is not in this checkout")
    phantom, out = tmp_path / "phantom", tmp_path / "prediction"
    assert main(["phantom", str(phantom)]) == 0
    assert main(["predict", str(phantom / "image.nrrd"), str(phantom / "segmentation.seg.nrrd"), "--age", "64",
                 "--sex", "M", "--t-stage", "T3", "--model", "lidc-vae-mlp", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report.pop("timings_s")) >= {"total_s", "inference_s"}
    for key in ("image", "segmentation"):
        report["input"][key] = Path(report["input"][key]).relative_to(tmp_path).as_posix()
    report["model"]["path"] = Path(report["model"]["path"]).relative_to(builtin_models_dir()).as_posix()
    expected = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert _differences(expected, report) == []
