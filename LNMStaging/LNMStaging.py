"""LNMStaging: interpretable lymph node metastasis staging inside 3D Slicer.

The module is a thin GUI over ``LNMStagingLogic`` (MRML <-> library, runs headless on ``slicer-core`` too)
and ``LNMStagingLib`` (all the science). Research use only: not a medical device.
"""

from __future__ import annotations

import html
import logging
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
# In a source checkout LNMStagingLib sits next to the module folder; in the built extension it is installed
# beside the module (qt-scripted-modules), already on sys.path.
if (MODULE_DIR.parent / "LNMStagingLib").is_dir() and str(MODULE_DIR.parent) not in sys.path:
    sys.path.append(str(MODULE_DIR.parent))

# LNMStagingLogic (and the library under it) is imported on first use, not here: it needs packages
# (scipy...) that are installed only after the user agrees, and the module must load without them.

NOT_GIVEN = "not given"
TORCH_BACKEND_SETTING = "LNMStaging/TorchComputationBackend"  # "cpu" by default; e.g. "cu124" for a GPU


#
# LNMStaging
#


class LNMStaging(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LNM Staging"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["Segmentations", "Sequences"]
        self.parent.contributors = ["LNMStaging developers"]
        self.parent.helpText = """
<p>Predicts the probability of <b>lymph node metastasis</b> from a T2-weighted MRI and a segmentation of the
lymph nodes, and explains it.</p>
<ol>
<li>Load the MRI and select it as <i>T2 volume</i>.</li>
<li>Segment every lymph node (one segment per node) with <i>Segment the nodes in the Segment Editor</i>, or
select an existing segmentation. Nodes painted into one segment can be separated with <i>Split islands</i>.</li>
<li>Optionally give age, sex and T stage, and choose a model bundle (its card is shown).</li>
<li>Press <i>Predict</i>. The results: a table per node (probability with its spread over the ensemble,
short and long axis, axis ratio, convexity, compactness, the size and shape criteria met), the patient's
result, each segment coloured green (low) to red (high), a Grad-CAM heatmap over the image, and per node a
sequence showing the latent growth traversal (use the Sequences toolbar to play it).</li>
</ol>
<p>Research use only: not a medical device. See the
<a href="https://github.com/lnmstaging/LNMStaging/blob/main/docs/slicer.md">module documentation</a>.</p>
"""
        self.parent.acknowledgementText = """
The method follows B. Keel et al., "Interpretable prediction of lymph node metastasis in rectal cancer MRI
using variational autoencoders", MIUA 2025 (arXiv:2507.11638), building on B. Keel et al., "Variational
autoencoders for feature exploration and malignancy prediction of lung lesions" (BMVC 2023, arXiv:2311.15719).
Built on 3D Slicer, PyTorch and SimpleITK.
"""
        # Sample data needs the application to be fully started.
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data: the library's synthetic phantom, generated locally (nothing to download)
#


def loadPhantomCase() -> tuple[Any, Any]:
    """Write the phantom to a temporary folder and load its volume and segmentation."""
    from LNMStagingLib.phantom import write_phantom

    folder = Path(tempfile.mkdtemp(prefix="LNMStagingPhantom-"))
    files = write_phantom(folder)
    volumeNode = slicer.util.loadVolume(str(files.image), {"name": "LNMStaging phantom"})
    segmentationNode = slicer.util.loadSegmentation(str(files.segmentation), {"name": "LNMStaging phantom nodes"})
    return volumeNode, segmentationNode


def registerSampleData() -> None:
    try:
        import SampleData
    except ImportError:
        return
    icon = MODULE_DIR / "Resources" / "Icons" / "LNMStaging.png"
    try:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="LNMStaging",
            sampleName="LNMStagingPhantom",
            thumbnailFileName=str(icon),
            # Nothing to download: empty lists (SampleDataSource zips fileNames with nodeNames, so None fails).
            uris=[],
            fileNames=[],
            nodeNames=[],
            customDownloader=lambda source: loadPhantomCase(),
        )
    except (TypeError, ValueError) as error:  # e.g. an older SampleData without custom downloaders
        logging.warning(f"LNMStaging: the phantom is not in Sample Data ({error}); the module's 'Load the demo phantom' button still loads it")


#
# Parameter node
#


@parameterNodeWrapper
class LNMStagingParameterNode:
    """The module's state, saved with the scene. Widgets bind to it through 'SlicerParameterName' in the .ui."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    splitIslands: bool = False
    age: int = 0  # 0 = not given (the spin box shows its special value text)
    sex: str = NOT_GIVEN
    tStage: str = NOT_GIVEN
    useBundledModel: bool = True
    modelPath: Path = Path()


class LNMStagingParameterLogic(ScriptedLoadableModuleLogic):
    """Only the parameter node; the work is in LNMStagingLogic, which must not depend on the application."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "LNMStaging"

    def getParameterNode(self) -> LNMStagingParameterNode:
        return LNMStagingParameterNode(super().getParameterNode())


#
# Dependencies (installed on first use, after the user agrees)
#


def requirementsFile() -> Path | None:
    for candidate in (MODULE_DIR / "Resources" / "requirements.txt", MODULE_DIR.parent / "Resources" / "requirements.txt"):
        if candidate.is_file():
            return candidate
    return None


def missingRequirements() -> list[str]:
    """Lines of requirements.txt that are not satisfied in Slicer's Python."""
    import importlib.metadata

    path = requirementsFile()
    if path is None:
        return []
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    missing = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if Requirement is None:
            name, specifier = line.split(">")[0].split("=")[0].split("<")[0].strip(), None
        else:
            requirement = Requirement(line)
            name, specifier = requirement.name, requirement.specifier
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if specifier is not None and version not in specifier:
            missing.append(line)
    return missing


def torchInstalled() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def ensureDependencies() -> bool:
    """Install PyTorch (through the PyTorch extension, CPU build unless configured) and requirements.txt,
    after asking. Returns False when the user declines or something is missing."""
    if not torchInstalled():
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(
                "LNMStaging needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart "
                "Slicer, then press Predict again."
            )
            return False
        backend = str(qt.QSettings().value(TORCH_BACKEND_SETTING, "cpu"))
        if not slicer.util.confirmOkCancelDisplay(
            f"LNMStaging needs PyTorch, which is not installed yet. Install it now ({backend} build, a few hundred "
            "MB; it takes some minutes)?",
            windowTitle="LNMStaging: install PyTorch",
        ):
            return False
        with slicer.util.WaitCursor():
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, forceComputationBackend=backend)
        if torch is None:
            slicer.util.errorDisplay("PyTorch could not be installed; see the Python console for details.")
            return False
    missing = missingRequirements()
    if missing:
        if not slicer.util.confirmOkCancelDisplay(
            "LNMStaging needs these Python packages, which are not installed yet:\n\n" + "\n".join(missing)
            + "\n\nInstall them now?",
            windowTitle="LNMStaging: install dependencies",
        ):
            return False
        with slicer.util.WaitCursor():
            try:
                import slicer.pydeps as pydeps  # Slicer >= 5.11

                pydeps.pip_ensure(pydeps.load_requirements(str(requirementsFile())), requester="LNMStaging")
            except ImportError:
                slicer.util.pip_install(missing)
    return True


#
# LNMStagingWidget
#


class LNMStagingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._logic = None
        self._parameterNode: LNMStagingParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._worker: threading.Thread | None = None
        self._cancelRequested = threading.Event()
        self._progress: tuple[float, str] = (0.0, "")
        self._workerOutcome: tuple[str, Any] | None = None
        self._prepared = None  # LNMStagingLogic.PreparedInputs of the running prediction
        self._pollTimer: qt.QTimer | None = None
        self._dependenciesChecked = False
        self._shownModelCard: tuple[str | None] | None = None  # the model whose card is shown

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LNMStaging.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.parameterLogic = LNMStagingParameterLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.predictButton.connect("clicked(bool)", self.onPredictButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditorButton)
        self.ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantomButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.parameterLogic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume
        if not self._parameterNode.inputSegmentation:
            firstSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if firstSegmentation:
                self._parameterNode.inputSegmentation = firstSegmentation

    def setParameterNode(self, inputParameterNode: LNMStagingParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        # Observing the parameter node (not the widgets) sees every change, whatever made it, after it is stored.
        self._checkCanApply()
        if self._shownModelCard != (self._modelPath(),):
            self.updateModelCard()

    @property
    def logic(self):
        """LNMStagingLogic, imported on first use (see the note at the imports)."""
        if self._logic is None:
            from LNMStagingLogic import LNMStagingLogic

            self._logic = LNMStagingLogic()
        return self._logic

    # ---------------------------------------------------------------- state

    def _running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """The single place deciding whether Predict is possible, and telling why not."""
        parameters = self._parameterNode
        running = self._running()
        reason = ""
        if running:
            reason = "A prediction is running."
        elif not parameters or not parameters.inputVolume:
            reason = "Select the T2 volume."
        elif not parameters.inputSegmentation:
            reason = "Select (or create with the Segment Editor) the lymph node segmentation."
        elif parameters.inputSegmentation.GetSegmentation().GetNumberOfSegments() == 0:
            reason = "The segmentation has no segments yet: segment the nodes first."
        elif not parameters.useBundledModel and str(parameters.modelPath) in ("", "."):
            reason = "Choose a model bundle folder, or tick 'Use the bundled default model'."
        self.ui.predictButton.enabled = not reason
        self.ui.predictButton.toolTip = reason or "Predict the probability of metastasis for every node and the patient, and show the explanations."
        self.ui.cancelButton.enabled = running
        self.ui.modelPathLineEdit.enabled = bool(parameters) and not parameters.useBundledModel

    def _modelPath(self) -> str | None:
        parameters = self._parameterNode
        if parameters is None or parameters.useBundledModel or str(parameters.modelPath) in ("", "."):
            return None
        return str(parameters.modelPath)

    def updateModelCard(self, *args) -> None:
        try:
            text = self.logic.modelCardText(self._modelPath())
        except ImportError:
            text = "The model card is shown once the dependencies are installed (press Predict to install them)."
        except Exception as error:  # the card is informative only; never block the panel on it
            text = f"The model card cannot be read: {error}"
        if hasattr(self.ui.modelCardBrowser, "setMarkdown"):  # Qt >= 5.14
            self.ui.modelCardBrowser.setMarkdown(text)
        else:
            self.ui.modelCardBrowser.setPlainText(text)
        self._shownModelCard = (self._modelPath(),)

    def _clinical(self) -> dict[str, Any] | None:
        parameters = self._parameterNode
        clinical = {
            "age": parameters.age if parameters.age > 0 else None,
            "sex": None if parameters.sex == NOT_GIVEN else parameters.sex,
            "t_stage": None if parameters.tStage == NOT_GIVEN else parameters.tStage,
        }
        return clinical if any(value is not None for value in clinical.values()) else None

    def _setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c0392b; font-weight: bold" if error else ""

    def _showError(self, error: BaseException, details: str = "") -> None:
        """Errors meant for the user (LNMStagingError) as one sentence in the panel; others with details."""
        from LNMStagingLib.errors import CancelledError, LNMStagingError

        if isinstance(error, CancelledError):
            self._setStatus("Prediction cancelled.")
            return
        if isinstance(error, LNMStagingError):
            self._setStatus(str(error), error=True)
            slicer.util.errorDisplay(str(error), windowTitle="LNMStaging")
            return
        self._setStatus(f"Prediction failed: {error}", error=True)
        slicer.util.errorDisplay(f"Prediction failed: {error}", windowTitle="LNMStaging", detailedText=details)

    # ---------------------------------------------------------------- actions

    def onSegmentEditorButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot open the Segment Editor.", waitCursor=True):
            volumeNode = self._parameterNode.inputVolume
            segmentationNode = self._parameterNode.inputSegmentation
            if segmentationNode is None:
                if volumeNode is None:
                    raise ValueError("Select the T2 volume first: the new segmentation takes its geometry.")
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volumeNode.GetName()} nodes")
                segmentationNode.CreateDefaultDisplayNodes()
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
                self._parameterNode.inputSegmentation = segmentationNode
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(segmentationNode)
            if volumeNode is not None:
                if hasattr(editor, "setSourceVolumeNode"):
                    editor.setSourceVolumeNode(volumeNode)
                else:  # Slicer < 5.2
                    editor.setMasterVolumeNode(volumeNode)

    def onLoadPhantomButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot load the phantom.", waitCursor=True):
            volumeNode, segmentationNode = loadPhantomCase()
            self._parameterNode.inputVolume = volumeNode
            self._parameterNode.inputSegmentation = segmentationNode

    def onPredictButton(self) -> None:
        if self._running():
            return
        if not self._dependenciesChecked:
            with slicer.util.tryWithErrorDisplay("Installing the dependencies failed.", waitCursor=True):
                self._dependenciesChecked = ensureDependencies()
            if not self._dependenciesChecked:
                self._setStatus("The dependencies are not installed; prediction needs them.", error=True)
                return
        parameters = self._parameterNode
        try:
            # Reading the scene must happen on the main thread.
            self._prepared = self.logic.prepareInputs(parameters.inputVolume, parameters.inputSegmentation, parameters.splitIslands)
        except Exception as error:
            self._showError(error, traceback.format_exc())
            return
        self._cancelRequested.clear()
        self._progress = (0.0, "Starting")
        self._workerOutcome = None
        prepared, clinical, modelPath = self._prepared, self._clinical(), self._modelPath()
        runPrediction = self.logic.runPrediction

        def progress(fraction: float, message: str) -> None:
            self._progress = (fraction, message)  # one assignment: safe to read from the main thread

        def work() -> None:
            try:
                self._workerOutcome = ("result", runPrediction(prepared, clinical, modelPath, progress, self._cancelRequested.is_set))
            except BaseException as error:  # reported on the main thread
                self._workerOutcome = ("error", (error, traceback.format_exc()))

        # A thread keeps the interface live while PyTorch works (it releases the GIL in its kernels); the
        # library takes no MRML object, so nothing in the scene is touched off the main thread.
        self._worker = threading.Thread(target=work, name="LNMStagingPrediction", daemon=True)
        self._worker.start()
        self._setStatus(prepared.skippedMessage)
        self.ui.progressBar.value = 0
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._poll)
        self._pollTimer.start()
        self._checkCanApply()

    def onCancelButton(self) -> None:
        if self._running():
            self._cancelRequested.set()
            self._setStatus("Cancelling...")

    def _poll(self) -> None:
        fraction, message = self._progress
        self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.ui.progressBar.format = f"{message} %p%" if message else "%p%"
        if self._running():
            time.sleep(0.005)  # lets the worker take the GIL even where the event loop holds it
            return
        self._pollTimer.stop()
        self._worker = None
        outcome, self._workerOutcome = self._workerOutcome, None
        try:
            if outcome is None:
                raise RuntimeError("the prediction stopped without a result")
            kind, value = outcome
            if kind == "result" and self._cancelRequested.is_set():
                # Finished just as the user cancelled (or closed the scene): keep the scene as it is.
                self._setStatus("Prediction cancelled.")
                return
            if kind == "error":
                self._showError(*value)
                return
            with slicer.util.tryWithErrorDisplay("Showing the results failed.", waitCursor=True):
                self._showResults(self.logic.writeOutputs(self._prepared, value))
        finally:
            self.ui.progressBar.format = "%p%"
            self._checkCanApply()

    def _showResults(self, outputs) -> None:
        """``outputs``: LNMStagingLogic.PredictionOutputs."""
        result = outputs.result
        patient = result.patient
        uncertain = f" <i>Uncertain: {html.escape('; '.join(patient.uncertainty_reasons))}.</i>" if patient.uncertain else ""
        # Never a probability without the model's training data, intended use and "research use only".
        self.ui.patientResultLabel.text = (
            f"<b>Patient: {html.escape(patient.decision)}</b>: probability of lymph node metastasis "
            f"{patient.probability:.2f} &plusmn; {patient.std:.2f} (threshold {patient.threshold:.2f}), "
            f"{len(result.nodes)} node(s).{uncertain}<br><small>{html.escape(result.model.context_line())}</small>"
        )
        self.ui.resultsTableView.setMRMLTableNode(outputs.tableNode)
        self.ui.progressBar.value = 100
        skipped = f" Skipped: {', '.join(outputs.skipped)}." if outputs.skipped else ""
        self._setStatus("Done. Play the growth traversals with the Sequences toolbar." + skipped)
        if outputs.browserNodes and hasattr(slicer.modules, "sequences"):
            firstBrowser = next(iter(outputs.browserNodes.values()))
            slicer.modules.sequences.setToolBarActiveBrowserNode(firstBrowser)
            slicer.modules.sequences.showSequenceBrowser(firstBrowser)


#
# LNMStagingTest
#


class LNMStagingTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of the headless pytest suite (LNMStaging/Testing/Python/LNMStagingScenarios.py)
    on Slicer's own scene, so both places check the same behaviour."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.test_Scenarios()
        self.test_WidgetLoads()

    def test_Scenarios(self) -> None:
        """Every scenario of the pytest suite, on slicer.mrmlScene (a prediction one skips, with its reason
        logged, when the prediction library is not installed)."""
        scenarioDir = MODULE_DIR / "Testing" / "Python"
        if str(scenarioDir) not in sys.path:
            sys.path.insert(0, str(scenarioDir))
        import LNMStagingScenarios as scenarios

        context = scenarios.SceneContext(slicer.mrmlScene, {})
        for scenario in scenarios.SCENARIOS:
            self.setUp()
            with tempfile.TemporaryDirectory(prefix="LNMStagingTest-") as folder:
                try:
                    scenario(context, Path(folder))
                except scenarios.Skip as reason:
                    logging.warning(f"{scenario.__name__}: skipped ({reason})")
                    continue
            self.delayDisplay(f"{scenario.__name__} passed", 10)

    def test_WidgetLoads(self) -> None:
        """The panel builds from its .ui file and Predict stays disabled without inputs."""
        self.setUp()
        widget = slicer.util.getModuleWidget("LNMStaging")  # builds it; works without the main window
        self.assertFalse(widget.ui.predictButton.enabled)
        self.assertTrue(widget.ui.predictButton.toolTip)
        self.delayDisplay("LNMStaging widget test passed", 10)
