"""Discovery of installed bundles.

``Resources/Models/`` next to the package, plus the folders in the environment variable
``LNMSTAGING_MODEL_PATH`` (``os.pathsep``-separated; each entry is a bundle or a folder of bundles).
The default bundle is unambiguous: the shipped bundle named in ``Resources/Models/DEFAULT`` (found in
``Resources/Models`` itself, never a same-named bundle elsewhere), unless ``LNMSTAGING_DEFAULT_MODEL`` names
another (a bundle path, or the name of exactly one installed bundle). Two installed bundles with the same name
(one shadowing the other) and a default name that matches no bundle are errors, never a silent choice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from .format import MANIFEST

ENV_MODEL_PATH = "LNMSTAGING_MODEL_PATH"
ENV_DEFAULT_MODEL = "LNMSTAGING_DEFAULT_MODEL"


def builtin_models_dir() -> Path:
    """``Resources/Models`` of this source tree / installation."""
    import LNMStagingLib

    return Path(LNMStagingLib.__file__).resolve().parents[1] / "Resources" / "Models"


@dataclass(frozen=True)
class BundleInfo:
    """One installed bundle as ``lnmstaging models`` lists it."""

    name: str
    path: Path
    default: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path), "default": self.default}


def _search_roots() -> list[Path]:
    roots = [Path(p).expanduser() for p in os.environ.get(ENV_MODEL_PATH, "").split(os.pathsep) if p.strip()]
    roots.append(builtin_models_dir())
    return roots


def _bundle_name(path: Path) -> str:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        name = data.get("name")
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError, AttributeError):
        pass
    return path.name


def list_bundles() -> list[BundleInfo]:
    """Installed bundles (folders holding ``manifest.json``), exactly one marked ``default`` when any.

    Cheap: reads only the manifests' names; integrity is checked by :func:`load_bundle`. Raises
    :class:`BundleError` when two bundles share a name or the configured default names no bundle.
    """
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for root in _search_roots():
        if not root.is_dir():
            continue
        candidates = [root] if (root / MANIFEST).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in seen or not (candidate / MANIFEST).is_file():
                continue
            seen.add(resolved)
            found.append((_bundle_name(candidate), resolved))
    names: dict[str, Path] = {}
    for name, path in found:
        if name in names:
            raise BundleError(path, f"model bundle name {name!r} is also used by {names[name]}: one would shadow the "
                                    f"other; rename one or remove it from {ENV_MODEL_PATH}")
        names[name] = path
    default_path = _choose_default(found)
    return [BundleInfo(name, path, path == default_path) for name, path in found]


def _shipped_default() -> Path | None:
    """The bundle named in ``Resources/Models/DEFAULT``, inside ``Resources/Models`` (None: none shipped)."""
    marker = builtin_models_dir() / "DEFAULT"
    if not marker.is_file():
        return None
    wanted = marker.read_text(encoding="utf-8").strip()
    candidate = builtin_models_dir() / wanted
    if not wanted or not (candidate / MANIFEST).is_file():
        raise BundleError(marker, f"names {wanted!r}, which is not a bundle folder in {builtin_models_dir()}")
    return candidate.resolve()


def _choose_default(found: list[tuple[str, Path]]) -> Path | None:
    if not found:
        return None
    wanted = os.environ.get(ENV_DEFAULT_MODEL, "").strip()
    if not wanted:
        shipped = _shipped_default()
        if shipped is not None:
            return shipped
        if len(found) == 1:
            return found[0][1]
        raise BundleError(builtin_models_dir(), f"{len(found)} bundles are installed and none is the default: set "
                                                f"{ENV_DEFAULT_MODEL} or pass --model")
    as_path = Path(wanted).expanduser()
    if (as_path / MANIFEST).is_file():
        return as_path.resolve()
    matches = [path for name, path in found if name == wanted]
    if len(matches) != 1:
        raise BundleError(wanted, f"{ENV_DEFAULT_MODEL} names no installed model bundle (installed: "
                                  f"{', '.join(name for name, _ in found)})")
    return matches[0]


def default_bundle_path() -> Path:
    """Path of the default bundle; :class:`BundleError` when none is installed or the choice is ambiguous."""
    wanted = os.environ.get(ENV_DEFAULT_MODEL, "").strip()
    if wanted and (Path(wanted).expanduser() / MANIFEST).is_file():
        return Path(wanted).expanduser().resolve()
    for info in list_bundles():
        if info.default:
            return info.path
    raise BundleError(
        builtin_models_dir(), f"no model bundle installed (set {ENV_MODEL_PATH} or pass --model)"
    )


def resolve_bundle(path_or_name: str | Path | None) -> Path:
    """A bundle folder from a path, an installed bundle's name, or None (the default bundle)."""
    if path_or_name is None or str(path_or_name) == "":
        return default_bundle_path()
    candidate = Path(path_or_name).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    for info in list_bundles():
        if info.name == str(path_or_name):
            return info.path
    raise BundleError(path_or_name, "no such model bundle (neither a folder nor an installed bundle's name)")
