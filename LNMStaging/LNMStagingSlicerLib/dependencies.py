"""What the LNMStaging module needs from the Slicer it runs in: a supported version, its Python packages.

Pure Python (no qt, no ``slicer`` import): the install test imports it from an installed extension.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

# The Slicer release lines the module is built and tested for (both ship Python 3.12.10).
SUPPORTED_SLICER = ((5, 10), (5, 12))
REQUIREMENTS_NAME = "requirements.txt"
MODULE_DIR = Path(__file__).resolve().parents[1]


def unsupportedSlicerMessage(major: int, minor: int) -> str:
    """One sentence when this Slicer version is not one the module supports, else ""."""
    if (major, minor) >= SUPPORTED_SLICER[0]:
        return ""
    low, high = SUPPORTED_SLICER[0], SUPPORTED_SLICER[-1]
    return (f"LNMStaging needs 3D Slicer {low[0]}.{low[1]} or newer (tested on {low[0]}.{low[1]} and "
            f"{high[0]}.{high[1]}); this is Slicer {major}.{minor}. Please install a current Slicer.")


def requirementsFile(moduleDir: Path | None = None) -> Path | None:
    """``Resources/requirements.txt`` as the module finds it.

    Args:
        moduleDir: the folder of ``LNMStaging.py``; default: the one beside this package.

    Returns:
        ``<moduleDir>/Resources/requirements.txt`` in an installed extension (the module's resources and the
        shared ones are installed into one ``Resources`` folder), else ``<moduleDir>/../Resources/...`` in a
        source checkout; None when neither exists.
    """
    moduleDir = MODULE_DIR if moduleDir is None else Path(moduleDir)
    for candidate in (moduleDir / "Resources" / REQUIREMENTS_NAME, moduleDir.parent / "Resources" / REQUIREMENTS_NAME):
        if candidate.is_file():
            return candidate
    return None


def requirementLines(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments, blank lines and pip options left out)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def missingRequirements(path: Path | None = None) -> list[str]:
    """Lines of the requirements file that the running Python does not satisfy.

    Args:
        path: a requirements file; default: ``requirementsFile()``.

    Returns:
        The unsatisfied lines, in file order (empty when there is no file).
    """
    path = requirementsFile() if path is None else path
    if path is None:
        return []
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging is in every Slicer; without it only presence is checked
        Requirement = None
    missing = []
    for line in requirementLines(path):
        if Requirement is None:
            name, specifier = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0], None
        else:
            requirement = Requirement(line)
            name, specifier = requirement.name, requirement.specifier
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if specifier is not None and not specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing
