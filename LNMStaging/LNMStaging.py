"""LNMStaging: interpretable lymph node metastasis staging inside 3D Slicer.

A thin GUI: the parameter node, the dependency check and the timer that follows the prediction. The
prediction itself runs in a child process (``LNMStagingSlicerLib.logic``), so the interface never waits
on it and Cancel ends it at once. Research use only: not a medical device.

Supported: 3D Slicer 5.10 and 5.12 (Python 3.12). This file keeps to Python 3.9 syntax so that an older
Slicer can load it far enough to say, in one sentence, that it is not supported.
"""

from __future__ import annotations

import html
import logging
import os
import sys
import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
# The module's helpers live in LNMStagingSlicerLib/ beside this file. In a source checkout the library
# (LNMStagingLib) sits one folder up; in an installed extension it is beside the module, already on sys.path.
for _path in (MODULE_DIR, MODULE_DIR.parent):
    if (_path == MODULE_DIR or (_path / "LNMStagingLib").is_dir()) and str(_path) not in sys.path:
        sys.path.append(str(_path))

from LNMStagingSlicerLib.dependencies import missingRequirements, unsupportedSlicerMessage  # noqa: E402

PYTHON_SETTING = "LNMStaging/PythonInterpreter"  # an LNMStaging environment's interpreter; empty = Slicer's
POLL_INTERVAL_MS = 100


def unsupportedMessage() -> str:
    """One sentence when this Slicer is older than the supported lines, else ""."""
    return unsupportedSlicerMessage(int(slicer.app.majorVersion), int(slicer.app.minorVersion))


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
result, each segment coloured green (low) to red (high), a heatmap of what drives each node's score (inside the node), and per node a
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


def loadPhantomCase() -> tuple:
    """Write the phantom to a temporary folder and load its volume and segmentation."""
    from LNMStagingLib.synthetic.phantom import write_phantom

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


class LNMStagingParameterLogic(ScriptedLoadableModuleLogic):
    """Only the parameter node; the work is in LNMStagingSlicerLib.logic, which needs no application."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "LNMStaging"

    def getParameterNode(self):
        from LNMStagingSlicerLib.parameters import LNMStagingParameterNode

        return LNMStagingParameterNode(super().getParameterNode())


#
# Dependencies: only for Slicer's own Python (an LNMStaging environment chosen in Advanced needs none)
#


def torchInstalled() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def ensureDependencies() -> bool:
    """PyTorch through the PyTorch extension (CPU build: inference runs on the CPU), then requirements.txt,
    each after the user agrees; no wait cursor while a question is open. False when declined or failed."""
    if not torchInstalled():
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(
                "LNMStaging needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager and restart "
                "Slicer, or choose the Python of an LNMStaging environment under Advanced.", windowTitle="LNMStaging")
            return False
        if not slicer.util.confirmOkCancelDisplay(
            "LNMStaging needs PyTorch, which is not installed yet. Install it now (CPU build, a few hundred MB; "
            "it takes some minutes)?", windowTitle="LNMStaging: install PyTorch"):
            return False
        with slicer.util.WaitCursor():
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, forceComputationBackend="cpu")
        if torch is None:
            slicer.util.errorDisplay("PyTorch could not be installed; see the Python console for details.",
                                     windowTitle="LNMStaging")
            return False
    missing = missingRequirements()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
        "LNMStaging needs these Python packages, which are not installed yet:\n\n" + "\n".join(missing)
        + "\n\nInstall them now?", windowTitle="LNMStaging: install dependencies"):
        return False
    with slicer.util.WaitCursor():
        try:
            import slicer.packaging as packaging  # Slicer >= 5.12
        except ImportError:
            packaging = None
        if packaging is not None:
            packaging.pip_install(missing, requester="LNMStaging")
        else:
            slicer.util.pip_install(missing)
    return not missingRequirements()


#
# LNMStagingWidget
#


class LNMStagingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._run = None  # LNMStagingSlicerLib.logic.PredictionRun of the running prediction
        self._pollTimer = None
        self._dependenciesChecked = False
        self._shownModelCard = ()  # no card shown yet (None is the bundled default's model path)
        self._unsupported = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LNMStaging.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._unsupported = unsupportedMessage()
        if self._unsupported:  # an older Slicer: say so, bind nothing that needs the newer one
            self._setStatus(self._unsupported, error=True)
            self.ui.predictButton.enabled = False
            self.ui.predictButton.toolTip = self._unsupported
            return

        from LNMStagingSlicerLib.logic import LNMStagingLogic

        self.logic = LNMStagingLogic()
        self.parameterLogic = LNMStagingParameterLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._poll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.predictButton.connect("clicked(bool)", self.onPredictButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditorButton)
        self.ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantomButton)
        # Not bound through the parameter node (its path connector shows an empty path as "."): by hand.
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.pythonPathLineEdit.currentPath = str(qt.QSettings().value(PYTHON_SETTING, ""))
        self.ui.pythonPathLineEdit.connect("currentPathChanged(QString)", self.onPythonPathChanged)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        if not self._unsupported:
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

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        # Observing the parameter node (not the widgets) sees every change, whatever made it, after it is stored.
        self._observeSegmentation(self._parameterNode.inputSegmentation if self._parameterNode else None)
        self._checkCanApply()
        if self._shownModelCard != self._modelPath():
            self.updateModelCard()

    def _observeSegmentation(self, segmentationNode) -> None:
        """Follow the chosen segmentation, so that adding its first segment enables Predict at once. The node
        re-sends its segmentation's SegmentAdded / SegmentRemoved events (not a ModifiedEvent)."""
        if segmentationNode is self._observedSegmentation:
            return
        events = (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved)
        if self._observedSegmentation is not None:
            for event in events:
                self.removeObserver(self._observedSegmentation, event, self._checkCanApply)
        self._observedSegmentation = segmentationNode
        if segmentationNode is not None:
            for event in events:
                self.addObserver(segmentationNode, event, self._checkCanApply)

    # ---------------------------------------------------------------- state

    def _running(self) -> bool:
        return self._run is not None

    def _checkCanApply(self, caller=None, event=None) -> None:
        """The single place deciding whether Predict is possible, and telling why not."""
        from LNMStagingSlicerLib.parameters import updateApplyButtons

        updateApplyButtons(self.ui, self._parameterNode, self._running(), self._unsupported)

    def _modelPath(self):
        from LNMStagingSlicerLib.parameters import modelPath

        return modelPath(self._parameterNode)

    def _python(self) -> str:
        return str(qt.QSettings().value(PYTHON_SETTING, "") or "").strip()

    def updateModelCard(self, *args) -> None:
        text = self.logic.modelCardText(self._modelPath())
        if hasattr(self.ui.modelCardBrowser, "setMarkdown"):  # Qt >= 5.14
            self.ui.modelCardBrowser.setMarkdown(text)
        else:
            self.ui.modelCardBrowser.setPlainText(text)
        self._shownModelCard = self._modelPath()

    def _setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #c0392b; font-weight: bold" if error else ""

    def _showError(self, error: BaseException) -> None:
        """A module error as one sentence in the panel (and a message box); anything else with its details."""
        from LNMStagingSlicerLib.errors import ModuleError, PredictionCancelled

        if isinstance(error, PredictionCancelled):
            self._setStatus("Prediction cancelled.")
            return
        message = str(error) if isinstance(error, ModuleError) else f"Prediction failed: {error}"
        self._setStatus(message, error=True)
        slicer.util.errorDisplay(message, windowTitle="LNMStaging")

    # ---------------------------------------------------------------- actions

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode is not None and self._parameterNode.modelPath != path:
            self._parameterNode.modelPath = path

    def onPythonPathChanged(self, path: str) -> None:
        qt.QSettings().setValue(PYTHON_SETTING, path.strip())

    def onSegmentEditorButton(self) -> None:
        volumeNode = self._parameterNode.inputVolume
        segmentationNode = self._parameterNode.inputSegmentation
        if segmentationNode is None:
            if volumeNode is None:
                self._setStatus("Select the T2 volume first: the new segmentation takes its geometry.", error=True)
                return
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volumeNode.GetName()} nodes")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            self._parameterNode.inputSegmentation = segmentationNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(segmentationNode)
        if volumeNode is not None:
            editor.setSourceVolumeNode(volumeNode)

    def onLoadPhantomButton(self) -> None:
        try:
            with slicer.util.WaitCursor():
                volumeNode, segmentationNode = loadPhantomCase()
        except Exception as error:  # noqa: BLE001 (one sentence in the panel, details in the log)
            logging.exception("LNMStaging: loading the phantom failed")
            self._setStatus(f"The phantom cannot be loaded: {error}", error=True)
            return
        self._parameterNode.inputVolume = volumeNode
        self._parameterNode.inputSegmentation = segmentationNode

    def onPredictButton(self) -> None:
        from LNMStagingSlicerLib.errors import ModuleError
        from LNMStagingSlicerLib.logic import PredictionRequest
        from LNMStagingSlicerLib.parameters import clinicalInputs

        if self._running():
            return
        python = self._python()
        if not python and not self._dependenciesChecked:
            # Questions first, without a wait cursor; ensureDependencies shows it only while installing.
            self._dependenciesChecked = ensureDependencies()
            if not self._dependenciesChecked:
                self._setStatus("The dependencies are not installed; prediction needs them (or choose an "
                                "LNMStaging Python under Advanced).", error=True)
                return
        parameters = self._parameterNode
        request = PredictionRequest(
            clinical=clinicalInputs(parameters), modelPath=self._modelPath(), splitIslands=parameters.splitIslands,
            allowOutOfDomain=parameters.allowOutOfDomain,
            python=python or None, baseEnvironment=slicer.util.startupEnvironment() if python else None,
        )
        try:
            with slicer.util.WaitCursor():  # writing the inputs: well under a second for an MRI
                self._run = self.logic.startPrediction(parameters.inputVolume, parameters.inputSegmentation, request)
        except ModuleError as error:
            self._showError(error)
            return
        self._setStatus(self._run.skippedMessage)
        self.ui.progressBar.value = 0
        self._pollTimer.start()
        self._checkCanApply()

    def onCancelButton(self) -> None:
        if self._running():
            self._pollTimer.stop()
            run, self._run = self._run, None
            run.cancel()
            self.ui.progressBar.value = 0
            self.ui.progressBar.format = "%p%"
            self._setStatus("Prediction cancelled; nothing was added to the scene.")
            self._checkCanApply()

    def _poll(self) -> None:
        from LNMStagingSlicerLib.errors import ModuleError

        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        fraction, message = run.poll()
        self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.ui.progressBar.format = f"{message} %p%" if message else "%p%"
        if run.running:
            return
        self._pollTimer.stop()
        self._run = None
        try:
            with slicer.util.WaitCursor():
                outputs = run.finish()
            self._showResults(outputs)
        except ModuleError as error:
            self._showError(error)
        finally:
            self.ui.progressBar.format = "%p%"
            self._checkCanApply()

    def _showResults(self, outputs) -> None:
        """``outputs``: LNMStagingSlicerLib.scene_outputs.PredictionOutputs."""
        from LNMStagingSlicerLib.scene_outputs import inputCaveats, modelContext, uncertaintyText

        patient = outputs.report["patient"]
        uncertain = f" <i>Uncertain: {html.escape(uncertaintyText(patient))}.</i>" if patient.get("uncertain") else ""
        # A mismatch between the case and the model is said beside the number, not below it.
        caveats = "".join(f"<br><b style='color:#c0392b'>Caution: {html.escape(text)}.</b>" for text in inputCaveats(outputs.report))
        # Never a probability without the model's training data, intended use and "research use only".
        self.ui.patientResultLabel.text = (
            f"<b>Patient: {html.escape(str(patient['decision']))}</b>: probability of lymph node metastasis "
            f"{float(patient['probability']):.2f} &plusmn; {float(patient['std']):.2f} (threshold "
            f"{float(patient['threshold']):.2f}), {len(outputs.report['nodes'])} node(s).{uncertain}{caveats}"
            f"<br><small>{html.escape(modelContext(outputs.report))}</small>"
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
    """Runs the scenarios of the headless pytest suite (Testing/Python/LNMStagingScenarios.py) on Slicer's own
    scene, plus the panel's widget binding, so both places check the same behaviour."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.test_Scenarios()
        self.test_WidgetBinding()

    def test_Scenarios(self) -> None:
        """Every scenario of the pytest suite, on slicer.mrmlScene (the prediction ones skip, with their reason
        logged, when no interpreter with the prediction library's packages is available)."""
        scenarioDir = MODULE_DIR / "Testing" / "Python"
        if str(scenarioDir) not in sys.path:
            sys.path.insert(0, str(scenarioDir))
        import LNMStagingScenarios as scenarios

        # The child's interpreter: $LNMSTAGING_PYTHON (scripts/slicer_selftest.sh), else the module's setting,
        # else Slicer's launcher.
        python = os.environ.get("LNMSTAGING_PYTHON") or str(qt.QSettings().value(PYTHON_SETTING, "")) or None
        context = scenarios.SceneContext(slicer.mrmlScene, {}, python=python)
        for scenario in scenarios.SCENARIOS:
            self.setUp()
            with tempfile.TemporaryDirectory(prefix="LNMStagingTest-") as folder:
                try:
                    scenario(context, Path(folder))
                except scenarios.Skip as reason:
                    logging.warning(f"{scenario.__name__}: skipped ({reason})")
                    continue
            self.delayDisplay(f"{scenario.__name__} passed", 10)

    def test_WidgetBinding(self) -> None:
        """The panel binds to its parameter node: choosing inputs in the widgets reaches the parameter node and
        back, and Predict becomes enabled once a volume and a segmentation with a segment are chosen."""
        self.setUp()
        widget = slicer.util.getModuleWidget("LNMStaging")  # builds it; works without the main window
        widget.initializeParameterNode()  # the scene was cleared, and the module is not entered here
        self.assertFalse(widget.ui.predictButton.enabled)
        self.assertTrue(widget.ui.predictButton.toolTip)
        scenarioDir = MODULE_DIR / "Testing" / "Python"
        if str(scenarioDir) not in sys.path:
            sys.path.insert(0, str(scenarioDir))
        import LNMStagingScenarios as scenarios

        scenarios.checkWidgetBinding(widget.ui, widget._parameterNode, slicer.mrmlScene)
        # The widget followed by itself: its parameter-node and segmentation observers ran _checkCanApply.
        self.assertTrue(widget.ui.predictButton.enabled, widget.ui.predictButton.toolTip)
        self.delayDisplay("LNMStaging widget binding test passed", 10)
