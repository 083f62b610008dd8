"""The extension configured, built and installed with Slicer's and CTK's real CMake macros.

For each Slicer tag of the reference kit (``../shared/slicer-reference``, or ``$LNMSTAGING_SLICER_REFERENCE``),
``cmake`` configures the repository against the stub Slicer config of ``Testing/CMake/SlicerStub``, which
includes the kit's ``SlicerMacroBuildScriptedModule.cmake``, ``SlicerMacroPythonTesting.cmake``,
``SlicerMacroConfigureGenericPythonModuleTests.cmake`` and the pinned CTK commit's
``ctkMacroCompilePythonScript.cmake`` unchanged. The build copies and byte-compiles the scripts through CTK's
macro, ``cmake --install`` installs into a temporary prefix, and the tests check that the module, its
package, its self-test scenarios, the library, every bundled model and the requirements file lie where the
installed module and library look for them, and that a fresh Python finds them there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from LNMStagingLib.bundle import sha256_file

ROOT = Path(__file__).resolve().parents[2]
KIT = Path(os.environ.get("LNMSTAGING_SLICER_REFERENCE") or ROOT.parent / "shared" / "slicer-reference")
STUB = ROOT / "Testing" / "CMake" / "SlicerStub"
TAGS = ("v5.10.0", "v5.12.3")
MODULE = "LNMStaging"
# The form of Slicer's EXTENSION_CONTRIBUTORS: "Name (Org)" or "Name ([SubOrg, ]Org)", comma-separated.
CONTRIBUTORS_FORM = re.compile(r"^[^(),]+ \([^()]+\)(, [^(),]+ \([^()]+\))*$")
COMMAND_TIMEOUT_S = 300


@dataclass
class Installed:
    """One configured, built and installed extension."""

    tag: str
    build: Path
    prefix: Path
    qsm: Path  # <prefix>/<Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR>


def _run(command: list[str], cwd: Path, log: Path) -> None:
    """Run one cmake/ctest step, its output appended to ``log``; fail with the output's tail."""
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}\n")
    assert completed.returncode == 0, (
        f"{' '.join(command)} exited {completed.returncode}:\n{(completed.stdout + completed.stderr)[-3000:]}")


def _source_files() -> set[Path]:
    """Files of the folders the build reads, except Python's own import caches (``__pycache__``)."""
    found = set()
    for folder in (ROOT / MODULE, ROOT / "LNMStagingLib", ROOT / "Resources", STUB):
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(path)
    return found


def _files_under(folder: Path, pattern: str = "*") -> list[Path]:
    """Files under ``folder`` matching ``pattern``, relative to it, without Python's caches."""
    return sorted(path.relative_to(folder) for path in folder.rglob(pattern)
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"))


def _contract() -> dict[Path, Path]:
    """Installed path (relative to the module folder) -> source file, for every file that must be installed."""
    module_dir = ROOT / MODULE
    contract = {Path(path.name): path for path in module_dir.glob("*.py")}
    for relative in _files_under(module_dir / f"{MODULE}SlicerLib", "*.py"):
        contract[Path(f"{MODULE}SlicerLib") / relative] = module_dir / f"{MODULE}SlicerLib" / relative
    for path in sorted((module_dir / "Testing" / "Python").glob("*.py")):
        contract[Path("Testing/Python") / path.name] = path
    for relative in ("Resources/UI/LNMStaging.ui", "Resources/Icons/LNMStaging.png"):
        contract[Path(relative)] = module_dir / relative
    for relative in _files_under(ROOT / "LNMStagingLib"):
        contract[Path("LNMStagingLib") / relative] = ROOT / "LNMStagingLib" / relative
    for relative in _files_under(ROOT / "Resources" / "Models"):
        contract[Path("Resources/Models") / relative] = ROOT / "Resources" / "Models" / relative
    contract[Path("Resources/requirements.txt")] = ROOT / "Resources" / "requirements.txt"
    return contract


@pytest.fixture(scope="module", params=TAGS)
def installed(request, tmp_path_factory) -> Installed:
    """Configure (BUILD_TESTING=ON), build and install the extension against the stub for one Slicer tag."""
    tag = request.param
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found on PATH (CI installs Debian's cmake in .ci/run); the extension build "
                    "test needs it")
    if not (KIT / "index.json").is_file():
        pytest.skip(f"Slicer reference kit not found at {KIT} (set LNMSTAGING_SLICER_REFERENCE); the "
                    "extension build test needs its Slicer and CTK CMake macros")
    index = json.loads((KIT / "index.json").read_text(encoding="utf-8"))
    assert tag in index["slicer"], f"{KIT / 'index.json'} lists no Slicer tag {tag}"

    work = tmp_path_factory.mktemp(f"extension-{tag}")
    build, prefix, log = work / "build", work / "prefix", work / "cmake.log"
    build.mkdir()
    before = _source_files()
    _run([cmake, "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={STUB}", f"-DSlicerStub_KIT_DIR={KIT}",
          f"-DSlicerStub_TAG={tag}", f"-DPYTHON_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=ON"], work, log)
    _run([cmake, "--build", str(build), "--parallel", "2"], work, log)
    _run([cmake, "--install", str(build), "--prefix", str(prefix)], work, log)
    added = sorted(str(path.relative_to(ROOT)) for path in _source_files() - before)
    assert not added, f"configuring or building wrote into the source tree: {added}"

    major, minor = tag[1:].split(".")[:2]
    return Installed(tag, build, prefix, prefix / "lib" / f"Slicer-{major}.{minor}" / "qt-scripted-modules")


def _fresh_python(installed: Installed, tmp_path: Path, *args: str) -> str:
    """Run a new interpreter with only the installed module folder added to its path, outside the checkout."""
    env = {key: value for key, value in os.environ.items() if key not in ("LNMSTAGING_MODEL_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed.qsm)
    completed = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_every_file_installed_where_the_module_looks(installed: Installed):
    contract = _contract()
    assert Path("LNMStaging.py") in contract and Path("Resources/requirements.txt") in contract
    missing = [str(relative) for relative in contract if not (installed.qsm / relative).is_file()]
    assert not missing, f"not installed under {installed.qsm}: {missing}"
    different = [str(relative) for relative, source in contract.items()
                 if sha256_file(installed.qsm / relative) != sha256_file(source)]
    assert not different, f"installed files differ from their sources: {different}"
    # Nothing else: a file installed elsewhere (e.g. under an absolute build path) would show up here.
    extra = sorted(str(relative) for relative in _files_under(installed.prefix)
                   if installed.prefix / relative not in {installed.qsm / key for key in contract})
    assert not extra, f"installed outside the contract: {extra}"


def test_build_tree_module_folder_has_the_same_files(installed: Installed):
    # The registered tests load the module from the build tree (--additional-module-path), so the library,
    # models and requirements must lie beside it there too.
    build_qsm = installed.build / installed.qsm.relative_to(installed.prefix)
    missing = [str(relative) for relative in _contract() if not (build_qsm / relative).is_file()]
    assert not missing, f"not in the build tree's module folder {build_qsm}: {missing}"


def test_nothing_under_an_absolute_path_subfolder(installed: Installed):
    assert sorted(path.name for path in installed.prefix.iterdir()) == ["lib"]
    module_scripts = {path.name for path in (ROOT / MODULE).glob("*.py")}
    expected_top = module_scripts | {name + "c" for name in module_scripts} | {
        "LNMStagingLib", f"{MODULE}SlicerLib", "Resources", "Testing"}
    assert {path.name for path in installed.qsm.iterdir()} == expected_top
    assert sorted(path.name for path in (installed.qsm / "Resources").iterdir()) == [
        "Icons", "Models", "UI", "requirements.txt"]
    # CTK copies an absolute RESOURCES entry to <module folder>/<the absolute path>: no such path may appear.
    for path in installed.prefix.rglob("*"):
        relative = path.relative_to(installed.prefix).as_posix()
        for absolute in (installed.build, ROOT):
            assert absolute.as_posix().lstrip("/") not in relative, f"absolute-path subfolder: {path}"


def test_scripts_byte_compiled_by_ctk(installed: Installed):
    # ctk_compile_file writes <script>.pyc beside each copied script: the CTK macro ran with PYTHON_EXECUTABLE.
    scripts = [relative for relative in _contract() if relative.suffix == ".py"]
    uncompiled = [str(relative) for relative in scripts
                  if not (installed.qsm / relative.with_name(relative.name + "c")).is_file()]
    assert not uncompiled, f"no .pyc beside: {uncompiled}"


def test_bundled_models_match_their_manifests(installed: Installed):
    source_models = ROOT / "Resources" / "Models"
    manifests = sorted(source_models.glob("*/manifest.json"))
    assert manifests, f"no bundled model in {source_models}"
    for manifest_source in manifests:
        bundle = installed.qsm / "Resources" / "Models" / manifest_source.parent.name
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["files"], f"{bundle / 'manifest.json'} lists no file"
        for name, entry in manifest["files"].items():
            assert sha256_file(bundle / name) == entry["sha256"], f"{bundle / name}: SHA-256 differs from the manifest"
    default = (source_models / "DEFAULT").read_text(encoding="utf-8").strip()
    assert (installed.qsm / "Resources" / "Models" / "DEFAULT").read_text(encoding="utf-8").strip() == default


def test_installed_module_finds_its_requirements_file(installed: Installed, tmp_path: Path):
    out = _fresh_python(installed, tmp_path, "-c", (
        "import LNMStagingSlicerLib.dependencies as d; print(d.__file__); print(d.requirementsFile())"))
    module_file, requirements = out.strip().splitlines()
    assert Path(module_file) == installed.qsm / f"{MODULE}SlicerLib" / "dependencies.py"
    assert Path(requirements) == installed.qsm / "Resources" / "requirements.txt"


def test_installed_library_lists_the_bundled_default_model(installed: Installed, tmp_path: Path):
    models = json.loads(_fresh_python(installed, tmp_path, "-m", "LNMStagingLib", "models", "--json"))
    default = (ROOT / "Resources" / "Models" / "DEFAULT").read_text(encoding="utf-8").strip()
    defaults = [entry for entry in models if entry["default"]]
    assert [entry["name"] for entry in defaults] == [default], models
    path = Path(defaults[0]["path"]).resolve()
    assert path == (installed.qsm / "Resources" / "Models" / default).resolve()
    assert installed.prefix.resolve() in path.parents


def test_ctest_lists_the_module_tests(installed: Installed):
    listed = subprocess.run([shutil.which("ctest") or "ctest", "-N"], cwd=installed.build, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT_S)
    assert listed.returncode == 0, listed.stderr
    names = set(re.findall(r"Test +#\d+: (\S+)", listed.stdout))
    expected = {f"py_{MODULE}", f"py_nomainwindow_{MODULE}", f"py_nomainwindow_qSlicer{MODULE}ModuleGenericTest"}
    assert expected <= names, listed.stdout


def test_extension_metadata(installed: Installed):
    # Written by the stub's config step with the defaults of the kit's SlicerExtensionDescriptionSpec.cmake.
    lines = (installed.build / f"{MODULE}.s4ext-metadata.txt").read_text(encoding="utf-8").splitlines()
    metadata = dict((line.split(" ", 1) + [""])[:2] for line in lines)
    assert CONTRIBUTORS_FORM.match(metadata["contributors"]), metadata["contributors"]
    assert "Requires 3D Slicer 5.10 or newer" in metadata["description"]
    assert metadata["depends"] == "PyTorch"
