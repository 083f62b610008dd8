"""Slicer's own Python layer from the reference kit, with real Qt widgets, for the module's GUI tests.

- ``qt``: the real Qt classes of PySide6 (QtCore, QtGui, QtWidgets), offscreen.
- Slicer's and CTK's widget classes, which PySide6 lacks, are small stand-ins built on real Qt widgets,
  carrying the properties, signals and slots the real classes have and the module or Slicer's GUI connectors
  use (qMRMLNodeComboBox: nodeTypes, currentNode/setCurrentNode, currentNodeChanged; ctkPathLineEdit:
  currentPath, currentPathChanged; ctkCollapsibleButton: text, collapsed; ...).
- ``slicer.parameterNodeWrapper``: the kit's unchanged files for one Slicer tag, imported into the
  ``slicer`` package of slicer-core. PythonQt gives Qt properties as attributes (``combo.currentIndex = 1``);
  PySide6 does the same per module with its ``true_property`` feature, which is switched on in the
  namespace of each module that needs it before its unchanged code runs.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT.parent / "shared" / "slicer-reference"
WRAPPER_PACKAGE = "slicer.parameterNodeWrapper"


def kitTags() -> list[str]:
    """The Slicer tags the kit holds (folders with Base/Python/slicer)."""
    if not KIT.is_dir():
        return []
    return sorted(path.name for path in KIT.iterdir() if (path / "Base" / "Python" / "slicer" / "parameterNodeWrapper").is_dir())


def application():
    """The one QApplication of the process (offscreen)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    _ignoreNonQtModules()
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def _ignoreNonQtModules() -> None:
    """PySide6's feature switch inspects the source of every module it has not seen, through attribute
    look-ups that torch's ``torch.classes`` answers with a RuntimeError: mark the modules already imported
    (none of which uses the feature) as not using it."""
    import __feature__

    for name in list(sys.modules):
        __feature__.pyside_feature_dict.setdefault(name, -1)


def _standIns() -> dict[str, type]:
    """Slicer / CTK widget classes on real Qt widgets."""
    from PySide6 import QtCore, QtWidgets

    class qMRMLWidget(QtWidgets.QWidget):
        mrmlSceneChanged = QtCore.Signal(object)

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._scene = None

        def setMRMLScene(self, scene) -> None:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

        def mrmlScene(self):
            return self._scene

    class qMRMLNodeComboBox(qMRMLWidget):
        """Lists the scene's nodes of ``nodeTypes``; ``currentNodeChanged`` fires on every change, as Qt does."""

        currentNodeChanged = QtCore.Signal(object)
        currentNodeIDChanged = QtCore.Signal(str)

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._nodeTypes: list[str] = []
            self._node = None
            for name in ("noneEnabled", "addEnabled", "removeEnabled", "renameEnabled", "showChildNodeTypes",
                         "selectNodeUponCreation", "showHidden"):
                setattr(self, "_" + name, False)

        def _getNodeTypes(self) -> list[str]:
            return list(self._nodeTypes)

        def _setNodeTypes(self, value) -> None:
            self._nodeTypes = [str(v) for v in value]

        nodeTypes = QtCore.Property(list, _getNodeTypes, _setNodeTypes)

        def currentNode(self):
            return self._node

        def currentNodeID(self) -> str:
            return self._node.GetID() if self._node is not None else ""

        def setCurrentNode(self, node) -> None:
            if node is not None and not any(node.IsA(t) for t in self._nodeTypes):
                node = None  # the real combo box lists only nodes of its nodeTypes
            if node is not self._node:
                self._node = node
                self.currentNodeChanged.emit(node)
                self.currentNodeIDChanged.emit(self.currentNodeID())

    class qMRMLTableView(QtWidgets.QTableView):
        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._table = None

        def setMRMLScene(self, scene) -> None:
            pass

        def setMRMLTableNode(self, node) -> None:
            self._table = node

    class ctkPathLineEdit(QtWidgets.QWidget):
        currentPathChanged = QtCore.Signal(str)

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._path = ""
            self._settingKey = ""

        def _getCurrentPath(self) -> str:
            return self._path

        def _setCurrentPath(self, path: str) -> None:
            if str(path) != self._path:
                self._path = str(path)
                self.currentPathChanged.emit(self._path)

        currentPath = QtCore.Property(str, _getCurrentPath, _setCurrentPath)
        settingKey = QtCore.Property(str, lambda self: self._settingKey, lambda self, v: setattr(self, "_settingKey", v))

    class ctkCollapsibleButton(QtWidgets.QWidget):
        contentsCollapsed = QtCore.Signal(bool)

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._text, self._collapsed = "", False

        def _setCollapsed(self, value: bool) -> None:
            if bool(value) != self._collapsed:
                self._collapsed = bool(value)
                self.contentsCollapsed.emit(self._collapsed)

        text = QtCore.Property(str, lambda self: self._text, lambda self, v: setattr(self, "_text", v))
        collapsed = QtCore.Property(bool, lambda self: self._collapsed, _setCollapsed)

    return {cls.__name__: cls for cls in (qMRMLWidget, qMRMLNodeComboBox, qMRMLTableView, ctkPathLineEdit, ctkCollapsibleButton)}


def _moduleOf(name: str, namespace: dict[str, Any], fallbackBase: type) -> types.ModuleType:
    """A module holding ``namespace``; any other capitalised class name resolves to a distinct QWidget
    subclass (the GUI connectors only compare widget types against them)."""
    module = types.ModuleType(name)
    module.__dict__.update(namespace)
    made: dict[str, type] = {}

    def __getattr__(attribute: str):
        if attribute.startswith("__") or not attribute[:1].isalpha():
            raise AttributeError(attribute)
        return made.setdefault(attribute, type(attribute, (fallbackBase,), {}))

    module.__getattr__ = __getattr__
    return module


def installQt() -> dict[str, type]:
    """Make ``qt`` and ``ctk`` importable (real PySide6 classes + stand-ins) and put the Slicer stand-ins on
    slicer-core's ``slicer``. Returns the stand-in classes by name (for the .ui loader)."""
    application()
    import slicer
    from PySide6 import QtCore, QtGui, QtWidgets

    standIns = _standIns()
    qtNames: dict[str, Any] = {}
    for source in (QtCore, QtGui, QtWidgets):
        qtNames.update({name: getattr(source, name) for name in dir(source) if name.startswith("Q") or name == "Qt"})
    sys.modules["qt"] = _moduleOf("qt", qtNames, QtWidgets.QWidget)
    sys.modules["ctk"] = _moduleOf("ctk", {name: cls for name, cls in standIns.items() if name.startswith("ctk")}, QtWidgets.QWidget)
    for name, cls in standIns.items():
        if name.startswith("q"):
            setattr(slicer, name, cls)
    for name in ("qMRMLRangeWidget", "qMRMLSliderWidget", "qMRMLSpinBox", "qSlicerWidget"):
        if not hasattr(slicer, name):
            setattr(slicer, name, type(name, (QtWidgets.QWidget,), {}))
    return standIns


class _TruePropertyLoader(importlib.abc.Loader):
    """Runs a module's unchanged source with PySide6's ``true_property`` switched on in its namespace."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec("from __feature__ import true_property", module.__dict__)  # noqa: S102 (the switch alone)
        code = compile(self.path.read_text(encoding="utf-8"), str(self.path), "exec")
        exec(code, module.__dict__)  # noqa: S102 (the kit's or the module's own file, unchanged)


class _KitFinder(importlib.abc.MetaPathFinder):
    """``slicer.parameterNodeWrapper`` (and chosen modules of the project) with ``true_property``."""

    def __init__(self, wrapperDir: Path, projectModules: dict[str, Path]) -> None:
        self.wrapperDir = wrapperDir
        self.projectModules = projectModules

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.projectModules:
            source = self.projectModules[fullname]
            return importlib.util.spec_from_file_location(fullname, source, loader=_TruePropertyLoader(source))
        if fullname == WRAPPER_PACKAGE or fullname.startswith(WRAPPER_PACKAGE + "."):
            relative = fullname[len(WRAPPER_PACKAGE):].lstrip(".")
            if not relative:
                source = self.wrapperDir / "__init__.py"
                return importlib.util.spec_from_file_location(fullname, source, loader=_TruePropertyLoader(source),
                                                              submodule_search_locations=[str(self.wrapperDir)])
            source = self.wrapperDir / f"{relative}.py"
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source, loader=_TruePropertyLoader(source))
        return None


def useKitWrapper(tag: str, projectModules: dict[str, Path]) -> _KitFinder:
    """Import ``slicer.parameterNodeWrapper`` from the kit's files of ``tag`` from now on (fresh), and the
    given project modules (name -> file) with ``true_property``. Undo with ``releaseKitWrapper``."""
    installQt()
    import slicer

    finder = _KitFinder(KIT / tag / "Base" / "Python" / "slicer" / "parameterNodeWrapper", projectModules)
    _forget(projectModules)
    sys.meta_path.insert(0, finder)
    slicer.parameterNodeWrapper = importlib.import_module(WRAPPER_PACKAGE)
    return finder


def releaseKitWrapper(finder: _KitFinder) -> None:
    import slicer

    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    _forget(finder.projectModules)
    if hasattr(slicer, "parameterNodeWrapper"):
        del slicer.parameterNodeWrapper


def _forget(projectModules: dict[str, Path]) -> None:
    for name in list(sys.modules):
        if name == WRAPPER_PACKAGE or name.startswith(WRAPPER_PACKAGE + ".") or name in projectModules:
            del sys.modules[name]


def loadUi(path: Path, standIns: dict[str, type]) -> tuple[Any, SimpleNamespace]:
    """The .ui through Qt's own loader; returns the top widget and its named children (as
    ``slicer.util.childWidgetVariables`` gives them)."""
    from PySide6 import QtCore, QtUiTools

    loader = QtUiTools.QUiLoader()
    for cls in standIns.values():
        loader.registerCustomWidget(cls)
    file = QtCore.QFile(str(path))
    if not file.open(QtCore.QFile.OpenModeFlag.ReadOnly):
        raise OSError(f"cannot open {path}")
    try:
        widget = loader.load(file)
    finally:
        file.close()
    if widget is None:
        raise RuntimeError(f"Qt's loader could not load {path}: {loader.errorString()}")
    children = {child.objectName(): child for child in widget.findChildren(QtCore.QObject) if child.objectName()}
    return widget, SimpleNamespace(**children)


KIT_MODULES = {  # module name -> the kit's file, relative to <tag>/
    "slicer.i18n": "Base/Python/slicer/i18n.py",
    "slicer.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
    "SampleData": "Modules/Scripted/SampleData/SampleData.py",
}


def useKitModules(tag: str) -> list[str]:
    """Import the kit's ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` and ``SampleData`` of ``tag``
    (unchanged files) on top of slicer-core, so that a module file importing them loads. Returns the names to
    forget afterwards (``forgetModules``)."""
    installQt()
    import slicer

    for name, relative in KIT_MODULES.items():
        spec = importlib.util.spec_from_file_location(name, KIT / tag / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if name.startswith("slicer."):
            setattr(slicer, name.split(".", 1)[1], module)
    return list(KIT_MODULES)


def forgetModules(names: list[str]) -> None:
    import slicer

    for name in names:
        sys.modules.pop(name, None)
        if name.startswith("slicer.") and hasattr(slicer, name.split(".", 1)[1]):
            delattr(slicer, name.split(".", 1)[1])
