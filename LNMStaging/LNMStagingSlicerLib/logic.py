"""``LNMStagingLogic``: a prediction from scene nodes, run in a child process, shown in the scene.

1. ``startPrediction`` (main thread, a fraction of a second): the volume and the segmentation are written to
   a temporary folder (``scene_inputs``) and ``python -m LNMStagingLib predict ... --progress-lines`` is
   started there as a child process (``process``).
2. ``PredictionRun.poll`` (from the module's timer): the child's latest progress line; the interface stays
   responsive because nothing runs in Slicer's interpreter but these short reads.
3. ``PredictionRun.finish``: the child's outputs are loaded into the scene (``scene_outputs``) and the
   temporary folder is removed; ``cancel`` ends the child's process group, adds nothing, removes the folder.

Headless: nothing here needs the Slicer application (runs on ``slicer-core``); the scene comes from the
input nodes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import process, scene_inputs, scene_outputs
from .errors import ModuleError, PredictionCancelled, PredictionFailed
from .scene_outputs import PredictionOutputs

OUTPUT_FOLDER = "prediction"
LAUNCHER_NAME = "PythonSlicer"


@dataclass
class ClinicalInputs:
    """Optional clinical values; None = not given (declared missing to the model, never zero)."""

    age: int | None = None
    sex: str | None = None  # "F" or "M"
    tStage: str | None = None  # "T1".."T4"

    def arguments(self) -> list[str]:
        """The ``lnmstaging predict`` options for the given values (the child checks them)."""
        args: list[str] = []
        for option, value in (("--age", self.age), ("--sex", self.sex), ("--t-stage", self.tStage)):
            if value is not None and str(value).strip():
                args += [option, str(value)]
        return args


@dataclass
class PredictionRequest:
    """Everything one prediction needs besides the scene nodes.

    Attributes:
        clinical: age, sex, T stage (each optional).
        modelPath: a model bundle folder or installed bundle name; None = the bundled default.
        splitIslands: each connected component of a segment is its own node.
        allowOutOfDomain: predict an image outside the model's training input domain (the child then puts the
            warning beside every probability) instead of refusing it.
        python: the interpreter for the child: None = Slicer's own launcher (``PythonSlicer``), else the
            interpreter of an LNMStaging environment (then nothing needs installing into Slicer's Python).
        baseEnvironment: the environment the child's is made from (default: this process's). Inside Slicer,
            pass ``slicer.util.startupEnvironment()`` with an own interpreter.
        workRoot: where the temporary folder is made (default: the system's temporary folder).
    """

    clinical: ClinicalInputs = field(default_factory=ClinicalInputs)
    modelPath: str | None = None
    splitIslands: bool = False
    allowOutOfDomain: bool = False
    python: str | None = None
    baseEnvironment: Mapping[str, str] | None = None
    workRoot: Path | None = None


def slicerPython() -> str:
    """Slicer's Python launcher (on the PATH Slicer sets), else this interpreter when it is a plain Python."""
    launcher = shutil.which(LAUNCHER_NAME)
    if launcher:
        return launcher
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    raise PredictionFailed(f"Slicer's Python launcher ({LAUNCHER_NAME}) was not found; choose the Python of an "
                           "LNMStaging environment in the module's Advanced section.")


def checkInterpreter(python: str) -> str:
    path = Path(python).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PredictionFailed(f"The chosen Python interpreter {path} is not an executable file.")
    return str(path)


def moduleWords(errorLine: str, names: dict[str, str] | None = None) -> str:
    """The child's one line in the module's words: the temporary input files named as the scene nodes they were
    written from, the command-line advice said as the module's setting.

    Args:
        errorLine: the child's error.
        names: temporary file path -> node name.
    """
    for path, name in (names or {}).items():
        errorLine = errorLine.replace(path, name)
    return errorLine.replace("pass --allow-out-of-domain", "tick 'Predict outside the model's input domain' under Advanced")


class PredictionRun:
    """One prediction in progress: its temporary folder, exported inputs and child process."""

    def __init__(self, volumeNode: Any, segmentationNode: Any, workDir: Path, exported: scene_inputs.ExportedInputs,
                 child: process.ChildProcess) -> None:
        self.volumeNode = volumeNode
        self.segmentationNode = segmentationNode
        self.workDir = workDir
        self.exported = exported
        self.child = child
        self._finished = False

    @property
    def running(self) -> bool:
        return self.child.running

    def poll(self) -> tuple[float, str]:
        """The latest (fraction, message) the child reported (reads only what it wrote since the last call)."""
        self.child.poll()
        return self.child.lastProgress

    def cancel(self) -> None:
        """End the child and everything it started; nothing is added to the scene; the folder is removed."""
        self.child.cancel()
        self.cleanup()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the child ends (scripts and tests)."""
        try:
            self.child.wait(timeout)
        except TimeoutError as error:
            self.cleanup()
            raise PredictionFailed(str(error)) from None

    def finish(self) -> PredictionOutputs:
        """Show the finished child's outputs in the scene, then remove the temporary folder.

        Raises:
            PredictionCancelled: the run was cancelled.
            PredictionFailed: the child failed; the message is its one-line error.
            OutputError: its outputs cannot be shown (the scene is left as it was).
        """
        try:
            self.child.poll()
            outcome = self.child.outcome()
            if outcome.cancelled:
                raise PredictionCancelled("Prediction cancelled.")
            if not outcome.succeeded:
                raise PredictionFailed(moduleWords(outcome.errorLine, {
                    str(self.exported.imagePath): self.volumeNode.GetName(),
                    str(self.exported.segmentationPath): self.segmentationNode.GetName()}))
            return scene_outputs.SceneOutputs(self.volumeNode, self.segmentationNode).load(
                self.workDir / OUTPUT_FOLDER, self.exported)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if not self._finished:
            self._finished = True
            shutil.rmtree(self.workDir, ignore_errors=True)

    @property
    def skippedMessage(self) -> str:
        return "Skipped: " + ", ".join(self.exported.skipped) + "." if self.exported.skipped else ""


class LNMStagingLogic:
    """Scene nodes in, scene nodes out; the science runs in a child process (see the module docstring)."""

    def childCommand(self, python: str, exported: scene_inputs.ExportedInputs, outputDir: Path,
                     request: PredictionRequest) -> list[str]:
        """The child's command line: ``lnmstaging predict`` on the exported files."""
        command = [python, "-m", "LNMStagingLib", "predict", str(exported.imagePath), str(exported.segmentationPath),
                   "--out", str(outputDir), "--progress-lines", *request.clinical.arguments()]
        if request.modelPath:
            command += ["--model", str(request.modelPath)]
        if request.splitIslands:
            command.append("--split-islands")
        if request.allowOutOfDomain:
            command.append("--allow-out-of-domain")
        if exported.modality:
            command += ["--modality", exported.modality]
        return command

    def startPrediction(self, volumeNode: Any, segmentationNode: Any, request: PredictionRequest | None = None) -> PredictionRun:
        """Write the inputs and start the child (returns at once).

        Raises:
            SceneInputError: unusable input nodes (nothing started, nothing left behind).
            PredictionFailed: the child cannot be started.
        """
        request = request or PredictionRequest()
        ownInterpreter = bool(request.python)
        python = checkInterpreter(request.python) if ownInterpreter else slicerPython()
        workDir = Path(tempfile.mkdtemp(prefix="LNMStaging-", dir=str(request.workRoot) if request.workRoot else None))
        try:
            exported = scene_inputs.exportInputs(volumeNode, segmentationNode, workDir)
            env = process.childEnvironment(os.environ if request.baseEnvironment is None else request.baseEnvironment,
                                           process.libraryRoot(), ownInterpreter)
            child = process.ChildProcess(self.childCommand(python, exported, workDir / OUTPUT_FOLDER, request), workDir, env)
            child.start()
        except OSError as error:
            shutil.rmtree(workDir, ignore_errors=True)
            raise PredictionFailed(f"The prediction process cannot be started ({error.strerror or error}).") from None
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        return PredictionRun(volumeNode, segmentationNode, workDir, exported, child)

    def predict(self, volumeNode: Any, segmentationNode: Any, request: PredictionRequest | None = None,
                timeout: float | None = None) -> PredictionOutputs:
        """Start, wait for and show one prediction (blocking: for scripts and tests, not the GUI)."""
        run = self.startPrediction(volumeNode, segmentationNode, request)
        run.wait(timeout)
        return run.finish()

    @staticmethod
    def modelCardText(modelPath: str | Path | None) -> str:
        """The model bundle's card for people (MODEL_CARD.md), or one sentence saying why there is none."""
        try:
            from LNMStagingLib.bundle import CARD_MD, resolve_bundle
            from LNMStagingLib.errors import LNMStagingError
        except ImportError as error:
            return f"The model card cannot be read here ({error})."
        try:
            bundle = resolve_bundle(str(modelPath) if modelPath else None)
        except LNMStagingError as error:
            return str(error)
        card = bundle / CARD_MD
        if not card.is_file():
            return f"{bundle}: this bundle has no {CARD_MD}."
        return card.read_text(encoding="utf-8", errors="replace")


__all__ = ["ClinicalInputs", "LNMStagingLogic", "ModuleError", "PredictionRequest", "PredictionRun"]
