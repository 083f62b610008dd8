"""The LNMStaging Slicer module, headless: its scenarios on real MRML scenes (Kitware's ``slicer-core``), its
parameter node and .ui bound with Slicer's own ``parameterNodeWrapper`` from the reference kit (each tag) on
real Qt widgets (PySide6), and the module file's own constraints.

The scenarios live in LNMStaging/Testing/Python/LNMStagingScenarios.py, shared with the module's self-test
inside 3D Slicer (scripts/slicer_selftest.sh). Not run here: a real Slicer application.
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
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LNMStaging.ui"
for path in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

pytest.importorskip("slicer", reason="slicer-core (Kitware's Slicer core libraries) is not installed")

import LNMStagingScenarios as scenarios  # noqa: E402
import slicer_kit  # noqa: E402

MODEL_SCENARIOS = {"scenarioPredictInChildProcess", "scenarioCancelAndFailure"}


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_slicer_scenario(scenario, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if scenario.__name__ in MODEL_SCENARIOS:
        from LNMStagingLib.bundle import list_bundles

        if not list_bundles():  # no bundled model: the tiny test bundle (conftest) stands in, for the child too
            monkeypatch.setenv("LNMSTAGING_MODEL_PATH", str(request.getfixturevalue("tiny_bundle_dir")))
    context = scenarios.makeHeadlessScene(python=sys.executable)
    try:
        scenario(context, tmp_path)
    except scenarios.Skip as reason:
        pytest.skip(str(reason))


# ---------------------------------------------------------------------------------------------- the panel


@pytest.fixture(params=slicer_kit.kitTags() or ["no-kit"])
def kitWrapper(request: pytest.FixtureRequest):
    """Slicer's parameterNodeWrapper of one kit tag, with the module's parameters and scenario modules
    imported fresh on it (PythonQt-like attribute properties)."""
    if request.param == "no-kit":
        pytest.skip(f"the Slicer reference kit is not at {slicer_kit.KIT}")
    pytest.importorskip("PySide6", reason="PySide6 (real Qt widgets) is not installed")
    projectModules = {
        "LNMStagingSlicerLib.parameters": MODULE_DIR / "LNMStagingSlicerLib" / "parameters.py",
        "LNMStagingScenariosQt": MODULE_DIR / "Testing" / "Python" / "LNMStagingScenarios.py",
    }
    finder = slicer_kit.useKitWrapper(request.param, projectModules)
    try:
        yield request.param
    finally:
        slicer_kit.releaseKitWrapper(finder)


def test_slicer_ui_loads_with_qt_loader() -> None:
    """The .ui loads with Qt's own loader, and every ``self.ui.<name>`` the module uses exists in it."""
    pytest.importorskip("PySide6", reason="PySide6 (real Qt widgets) is not installed")
    widget, ui = slicer_kit.loadUi(UI_FILE, slicer_kit.installQt())
    used = set(re.findall(r"\bui\.(\w+)", (MODULE_DIR / "LNMStaging.py").read_text()))
    used |= set(re.findall(r"\bui\.(\w+)", (MODULE_DIR / "LNMStagingSlicerLib" / "parameters.py").read_text()))
    missing = sorted(name for name in used if not hasattr(ui, name))
    assert not missing, f"the module uses widgets the .ui does not have: {missing}"
    from PySide6 import QtWidgets

    assert isinstance(ui.sexComboBox, QtWidgets.QComboBox) and isinstance(ui.ageSpinBox, QtWidgets.QSpinBox)
    assert type(ui.volumeSelector).__name__ == "qMRMLNodeComboBox"
    widget.deleteLater()


def test_slicer_parameter_node_binds_to_the_ui(kitWrapper: str) -> None:
    """With Slicer's real parameterNodeWrapper: the module's parameter node class binds to the widgets of its
    .ui (connectGui raises nothing: every combo box has a Choice, the spin box a range), values go both ways,
    Predict becomes enabled once a volume and a segmentation with a segment are chosen, and the values
    survive a saved and reloaded scene."""
    import importlib

    parameters = importlib.import_module("LNMStagingSlicerLib.parameters")
    scenariosQt = importlib.import_module("LNMStagingScenariosQt")
    assert Path(sys.modules["slicer.parameterNodeWrapper"].__file__).is_relative_to(slicer_kit.KIT / kitWrapper)
    widget, ui = slicer_kit.loadUi(UI_FILE, slicer_kit.installQt())
    context = scenarios.makeHeadlessScene()
    scene = context.scene
    moduleNode = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "LNMStaging")
    parameterNode = parameters.LNMStagingParameterNode(moduleNode)
    tag = parameterNode.connectGui(ui)
    assert parameters.updateApplyButtons(ui, parameterNode) and not ui.predictButton.property("enabled")
    scenariosQt.checkWidgetBinding(ui, parameterNode, scene)
    assert parameters.updateApplyButtons(ui, parameterNode) == "" and ui.predictButton.property("enabled")
    assert not ui.cancelButton.property("enabled")
    assert parameters.updateApplyButtons(ui, parameterNode, running=True) and not ui.predictButton.property("enabled")
    assert ui.cancelButton.property("enabled")
    assert "Slicer 5.8" in parameters.updateApplyButtons(ui, parameterNode, unsupported="needs Slicer 5.10; this is Slicer 5.8")

    parameterNode.age, parameterNode.sex = 58, "male"
    assert parameters.clinicalInputs(parameterNode) == parameters.ClinicalInputs(58, "M", "T3")
    scene.SetSaveToXMLString(1)
    scene.Commit()
    loaded = scenarios.makeHeadlessScene().scene
    loaded.SetLoadFromXMLString(1)
    loaded.SetSceneXMLString(scene.GetSceneXMLString())
    loaded.Import()
    again = parameters.LNMStagingParameterNode(loaded.GetFirstNodeByName("LNMStaging"))
    assert (again.age, again.sex, again.inputVolume.GetName()) == (58, "male", "binding volume")
    parameterNode.disconnectGui(tag)
    widget.deleteLater()


def test_slicer_plain_str_on_a_combo_box_is_refused(kitWrapper: str) -> None:
    """What broke the module before: a str field without Choice bound to a QComboBox makes Slicer's
    connectGui raise, so no widget is bound at all. The check is Slicer's own."""
    import slicer

    @slicer.parameterNodeWrapper.parameterNodeWrapper
    class Broken:
        sex: str = "not given"

    from types import SimpleNamespace

    _, ui = slicer_kit.loadUi(UI_FILE, slicer_kit.installQt())
    node = Broken(scenarios.makeHeadlessScene().scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    with pytest.raises(RuntimeError, match="Choice"):
        node.connectGui(SimpleNamespace(sexComboBox=ui.sexComboBox))  # the module's .ui combo box


# ---------------------------------------------------------------------------------------------- the module file


def test_slicer_module_file_parses_on_older_python() -> None:
    """LNMStaging.py and its dependency check keep to Python 3.9 syntax, so an unsupported Slicer (5.6, 5.8:
    Python 3.9) loads them far enough to say it is unsupported."""
    for path in (MODULE_DIR / "LNMStaging.py", MODULE_DIR / "LNMStagingSlicerLib" / "dependencies.py"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_slicer_supported_versions_and_requirements() -> None:
    from LNMStagingSlicerLib import dependencies

    assert dependencies.unsupportedSlicerMessage(5, 10) == dependencies.unsupportedSlicerMessage(5, 12) == ""
    message = dependencies.unsupportedSlicerMessage(5, 8)
    assert "5.10" in message and "5.8" in message and message.count(".") <= 6 and "\n" not in message
    assert dependencies.requirementsFile() == ROOT / "Resources" / "requirements.txt"
    lines = dependencies.requirementLines(dependencies.requirementsFile())
    names = {re.split(r"[<>=!~ ;\[]", line)[0].lower() for line in lines}
    # Slicer ships numpy and SimpleITK; torch comes from the PyTorch extension (CPU build).
    assert names and not names & {"torch", "numpy", "simpleitk"}, names
    assert set(dependencies.missingRequirements()) <= set(lines)
    missing = dependencies.missingRequirements(_requirements(ROOT, "scipy>=1.0\nno-such-package-lnm>=1\n# c\n"))
    assert missing == ["no-such-package-lnm>=1"], missing


def _requirements(folder: Path, text: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "requirements.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_slicer_module_side_imports_no_application_api() -> None:
    """The logic package must run on slicer-core: no qt, ctk, slicer.app / modules / mrmlScene."""
    for path in sorted((MODULE_DIR / "LNMStagingSlicerLib").glob("*.py")):
        if path.name == "parameters.py":  # the parameter node: Slicer's wrapper, no application either
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"qt", "ctk", "PythonQt"}, (path.name, imported)
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer"}
        assert not used & {"app", "modules", "mrmlScene", "ScriptedLoadableModule"}, (path.name, used)


def test_slicer_module_runs_no_thread() -> None:
    """Prediction runs in a child process: no Python thread is started in Slicer's interpreter."""
    for path in [MODULE_DIR / "LNMStaging.py", *sorted((MODULE_DIR / "LNMStagingSlicerLib").glob("*.py"))]:
        source = path.read_text(encoding="utf-8")
        assert "threading" not in source and "Thread(" not in source, path.name


def test_slicer_ui_inputs_have_tooltips() -> None:
    """Every input of the module panel explains itself."""
    tree = ElementTree.parse(UI_FILE)
    inputClasses = {"qMRMLNodeComboBox", "QSpinBox", "QComboBox", "QCheckBox", "QPushButton", "ctkPathLineEdit", "QRadioButton"}
    inputs = [widget for widget in tree.iter("widget") if widget.get("class") in inputClasses]
    assert len(inputs) >= 11
    for widget in inputs:
        tooltips = [prop for prop in widget.findall("property") if prop.get("name") == "toolTip"]
        assert tooltips and (tooltips[0].findtext("string") or "").strip(), f"{widget.get('name')} has no tooltip"
    bound = {prop.findtext("string") for prop in tree.iter("property") if prop.get("name") == "SlicerParameterName"}
    from LNMStagingSlicerLib import parameters

    fields = set(parameters.LNMStagingParameterNode.__annotations__) if hasattr(parameters, "LNMStagingParameterNode") else set()
    assert bound and bound <= fields | {"inputVolume", "inputSegmentation"}, bound
    assert "modelPath" not in bound, "Slicer's path connector shows an empty path as '.': bound by hand"


@pytest.fixture(autouse=True)
def _kitForParameterImports(request: pytest.FixtureRequest):
    """``LNMStagingSlicerLib.parameters`` imports Slicer's parameterNodeWrapper, which slicer-core lacks: tests
    that import it outside ``kitWrapper`` get the newest kit tag."""
    if "kitWrapper" in request.fixturenames or request.node.name != "test_slicer_ui_inputs_have_tooltips":
        yield
        return
    tags = slicer_kit.kitTags()
    if not tags:
        pytest.skip(f"the Slicer reference kit is not at {slicer_kit.KIT}")
    pytest.importorskip("PySide6", reason="PySide6 (real Qt widgets) is not installed")
    finder = slicer_kit.useKitWrapper(tags[-1], {"LNMStagingSlicerLib.parameters": MODULE_DIR / "LNMStagingSlicerLib" / "parameters.py"})
    try:
        yield
    finally:
        slicer_kit.releaseKitWrapper(finder)


def test_slicer_module_file_loads_and_registers_its_sample_data(kitWrapper: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LNMStaging.py itself imports on the kit's Slicer Python layer (ScriptedLoadableModule, i18n, SampleData
    of the same tag, unchanged) and registers the phantom through the kit's real SampleData logic (which keeps
    the sources in the application's module registry: a namespace stands in for ``slicer.modules``); the
    version check says one sentence on an old Slicer and nothing on a supported one."""
    import importlib.util
    import types

    import slicer

    names = slicer_kit.useKitModules(kitWrapper)
    try:
        monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
        spec = importlib.util.spec_from_file_location("LNMStagingModuleUnderTest", MODULE_DIR / "LNMStaging.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert issubclass(module.LNMStagingWidget, sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleWidget)
        module.registerSampleData()
        sources = slicer.modules.sampleDataSources["LNMStaging"]
        assert [source.sampleName for source in sources] == ["LNMStagingPhantom"]
        assert callable(sources[0].customDownloader)
        for version, supported in (((5, 8), False), ((5, 10), True), ((5, 12), True)):
            monkeypatch.setattr(slicer, "app", types.SimpleNamespace(majorVersion=version[0], minorVersion=version[1]), raising=False)
            message = module.unsupportedMessage()
            assert (message == "") is supported, (version, message)
    finally:
        slicer_kit.forgetModules(names)
