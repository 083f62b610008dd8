"""The module's parameter node (saved with the scene) and the one rule deciding whether Predict can run.

Widgets bind to the fields through the ``SlicerParameterName`` property in the .ui (Slicer's
``parameterNodeWrapper``); combo boxes need a ``Choice`` and spin boxes a ``WithinRange``, which set the
widget's items and range. The model folder is not bound: Slicer's path connector writes an empty path as
".", so the module connects that line edit itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from .logic import ClinicalInputs

NOT_GIVEN = "not given"
SEX_CHOICES = {NOT_GIVEN: None, "female": "F", "male": "M"}
T_STAGE_CHOICES = {NOT_GIVEN: None, "T1": "T1", "T2": "T2", "T3": "T3", "T4": "T4"}
AGE_RANGE = (0, 120)  # 0 = not given (the spin box shows its special value text)


@parameterNodeWrapper
class LNMStagingParameterNode:
    """The module's state. ``age`` 0, ``sex`` and ``tStage`` "not given" are declared missing to the model."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    splitIslands: bool = False
    age: Annotated[int, WithinRange(*AGE_RANGE)] = 0
    sex: Annotated[str, Choice(list(SEX_CHOICES))] = NOT_GIVEN
    tStage: Annotated[str, Choice(list(T_STAGE_CHOICES))] = NOT_GIVEN
    useBundledModel: bool = True
    modelPath: str = ""
    allowOutOfDomain: bool = False


def clinicalInputs(parameters: Any) -> ClinicalInputs:
    """The clinical values of the parameter node, None where not given."""
    return ClinicalInputs(
        age=int(parameters.age) if parameters.age > 0 else None,
        sex=SEX_CHOICES.get(parameters.sex),
        tStage=T_STAGE_CHOICES.get(parameters.tStage),
    )


def modelPath(parameters: Any) -> str | None:
    """The chosen model bundle folder, or None for the bundled default."""
    if parameters is None or parameters.useBundledModel or not parameters.modelPath.strip():
        return None
    return parameters.modelPath.strip()


def cannotApplyReason(parameters: Any, running: bool = False, unsupported: str = "") -> str:
    """Why Predict cannot run now, in one sentence; "" when it can.

    Args:
        parameters: the parameter node (None before the module has one).
        running: a prediction is running.
        unsupported: the sentence saying this Slicer is not supported ("" when it is).
    """
    if unsupported:
        return unsupported
    if running:
        return "A prediction is running."
    if parameters is None or not parameters.inputVolume:
        return "Select the T2 volume."
    if not parameters.inputSegmentation:
        return "Select (or create with the Segment Editor) the lymph node segmentation."
    segmentation = parameters.inputSegmentation.GetSegmentation()
    if segmentation is None or segmentation.GetNumberOfSegments() == 0:
        return "The segmentation has no segments yet: segment the nodes first."
    if not parameters.useBundledModel and not parameters.modelPath.strip():
        return "Choose a model bundle folder, or tick 'Use the bundled default model'."
    return ""


APPLY_TOOLTIP = "Predict the probability of metastasis for every node and the patient, and show the explanations."


def updateApplyButtons(ui: Any, parameters: Any, running: bool = False, unsupported: str = "") -> str:
    """Set Predict, Cancel and the model folder's enabled states from ``cannotApplyReason``; the reason is
    Predict's tooltip, so a disabled button says why. Returns the reason ("" when Predict can run)."""
    reason = cannotApplyReason(parameters, running, unsupported)
    ui.predictButton.enabled = not reason
    ui.predictButton.toolTip = reason or APPLY_TOOLTIP
    ui.cancelButton.enabled = running
    ui.modelPathLineEdit.enabled = parameters is not None and not parameters.useBundledModel
    return reason
