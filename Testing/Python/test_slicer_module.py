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
def test_slicer_scenario(scenario, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if scenario.__name__ in scenarios.MODEL_SCENARIOS and scenarios.predictionLibraryAvailable():
        from LNMStagingLib.bundle import list_bundles

        if not list_bundles():  # no bundled model: the tiny test bundle (conftest) stands in
            monkeypatch.setenv("LNMSTAGING_MODEL_PATH", str(request.getfixturevalue("tiny_bundle_dir")))
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
    assert imported <= {"__future__", "collections", "dataclasses", "pathlib", "time", "typing", "numpy", "slicer", "vtk", "LNMStagingLib"}, imported
    forbidden = {"app", "modules", "mrmlScene", "ScriptedLoadableModule"}
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer"}
    assert not used & forbidden, used & forbidden
    # Only the slicer.util helpers that need no application (many look up slicer.mrmlScene or slicer.app).
    utilities = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Attribute) and node.value.attr == "util"}
    assert utilities <= {"arrayFromVolume", "updateVolumeFromArray", "arrayFromVTKMatrix", "vtkMatrixFromArray"}, utilities


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


def _loadModuleWithStubbedApplication(monkeypatch: pytest.MonkeyPatch):
    """LNMStaging.py imported with the application-only modules (qt, ScriptedLoadableModule, ...) stubbed."""
    import importlib.util
    import types

    class Base:
        def __init__(self, *args, **kwargs) -> None:
            pass

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (Base,), {}))
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    spec = importlib.util.spec_from_file_location("LNMStagingModuleUnderTest", MODULE_DIR / "LNMStaging.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slicer_module_loads_with_stubbed_application(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import LNMStaging.py with the application-only modules stubbed: catches errors at import and class
    definition (names, the parameter node's fields), and checks the dependency list it installs."""
    module = _loadModuleWithStubbedApplication(monkeypatch)
    fields = module.LNMStagingParameterNode.__annotations__
    ui = (MODULE_DIR / "Resources" / "UI" / "LNMStaging.ui").read_text()
    for field in fields:  # every parameter is bound to a widget through SlicerParameterName
        assert f"<string>{field}</string>" in ui, field
    assert module.requirementsFile() == ROOT / "Resources" / "requirements.txt"
    required = [line.split("#")[0].strip() for line in module.requirementsFile().read_text().splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in required if line}
    # Slicer ships numpy and SimpleITK; torch comes from the PyTorch extension (CPU build by default).
    assert names and not names & {"torch", "numpy", "simpleitk"}, names
    assert set(module.missingRequirements()) <= {line for line in required if line}


def test_slicer_logic_hides_itself_from_the_module_list() -> None:
    """Slicer instantiates LNMStagingLogic(moduleObject) while scanning the module folder: it must not
    fail and must mark that module hidden."""
    from types import SimpleNamespace

    from LNMStagingLogic import LNMStagingLogic

    moduleObject = SimpleNamespace(hidden=False)
    LNMStagingLogic(moduleObject)
    assert moduleObject.hidden is True
    LNMStagingLogic()  # the ordinary use


def test_slicer_sample_data_registers(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The phantom registers in Sample Data: Slicer's SampleDataSource zips fileNames, nodeNames and the file
    types of the uris, so they must be (empty) lists; a failure is a warning, not buried at info level."""
    import logging
    import types

    module = _loadModuleWithStubbedApplication(monkeypatch)
    registered = []

    def register(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None, customDownloader=None,
                 thumbnailFileName=None, loadFileType="VolumeFile", loadFiles=None, loadFileProperties=None, checksums=None):
        # what SampleData.SampleDataSource.__init__ does with them (Slicer 5.x)
        if isinstance(uris, list | tuple):
            nodeNames = [None] * len(uris) if nodeNames is None else nodeNames
            loadFileType = [loadFileType] * len(uris) if isinstance(loadFileType, str) else loadFileType
        list(zip(fileNames, nodeNames, loadFileType, strict=False))
        if not len(uris) == len(fileNames) == len(nodeNames):
            raise ValueError("All fields of sample data source must have the same length")
        registered.append((category, sampleName, customDownloader))

    sampleData = types.ModuleType("SampleData")
    sampleData.SampleDataLogic = types.SimpleNamespace(registerCustomSampleDataSource=register)
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)
    with caplog.at_level(logging.INFO):
        module.registerSampleData()
    assert [(category, name) for category, name, _ in registered] == [("LNMStaging", "LNMStagingPhantom")]
    assert callable(registered[0][2]) and not caplog.records

    def refuse(**kwargs):
        raise TypeError("unexpected keyword argument 'customDownloader'")

    sampleData.SampleDataLogic = types.SimpleNamespace(registerCustomSampleDataSource=refuse)
    with caplog.at_level(logging.INFO):
        module.registerSampleData()
    assert [record.levelno for record in caplog.records] == [logging.WARNING], caplog.records
    assert "customDownloader" in caplog.records[0].getMessage()
