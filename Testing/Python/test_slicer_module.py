"""The LNMStaging Slicer module's scenarios on a real MRML scene, headless, with Kitware's ``slicer-core``.

The scenarios themselves live in LNMStaging/Testing/Python/LNMStagingScenarios.py, shared with the module's
self-test inside 3D Slicer (scripts/slicer_selftest.sh).
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "LNMStaging"
for path in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

pytest.importorskip("slicer", reason="slicer-core (Kitware's Slicer core libraries) is not installed")

import LNMStagingScenarios as scenarios  # noqa: E402


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_slicer_scenario(scenario, tmp_path: Path) -> None:
    context = scenarios.makeHeadlessScene()
    try:
        scenario(context, tmp_path)
    except scenarios.Skip as reason:
        pytest.skip(str(reason))


def test_slicer_logic_imports_no_application_api() -> None:
    """LNMStagingLogic must run on slicer-core: no qt, ctk, slicer.app/modules/mrmlScene/ScriptedLoadableModule."""
    tree = ast.parse((MODULE_DIR / "LNMStagingLogic.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "collections", "dataclasses", "pathlib", "typing", "numpy", "slicer", "vtk", "LNMStagingLib"}, imported
    forbidden = {"app", "modules", "mrmlScene", "ScriptedLoadableModule", "util"}
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer"}
    assert not used & forbidden, used & forbidden


def test_slicer_ui_inputs_have_tooltips() -> None:
    """Every input of the module panel explains itself; the widget code finds each name it uses."""
    tree = ElementTree.parse(MODULE_DIR / "Resources" / "UI" / "LNMStaging.ui")
    inputClasses = {"qMRMLNodeComboBox", "QSpinBox", "QComboBox", "QCheckBox", "QPushButton", "ctkPathLineEdit", "QRadioButton"}
    widgets = {widget.get("name"): widget for widget in tree.iter("widget")}
    inputs = [widget for widget in widgets.values() if widget.get("class") in inputClasses]
    assert len(inputs) >= 10
    for widget in inputs:
        tooltips = [prop for prop in widget.findall("property") if prop.get("name") == "toolTip"]
        assert tooltips and (tooltips[0].findtext("string") or "").strip(), f"{widget.get('name')} has no tooltip"
    moduleSource = (MODULE_DIR / "LNMStaging.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", moduleSource))
    missing = used - set(widgets)
    assert not missing, f"LNMStaging.py uses widgets absent from the .ui file: {sorted(missing)}"


def test_slicer_module_file_compiles() -> None:
    """LNMStaging.py needs the Slicer application to run; here at least it must compile."""
    compile((MODULE_DIR / "LNMStaging.py").read_text(), "LNMStaging.py", "exec")
