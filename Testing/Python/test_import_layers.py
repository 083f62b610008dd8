"""The library's packages only look down: no module imports a package of a higher layer (read with ``ast``),
the command line imports no private names, and no library file is much longer than 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "LNMStagingLib"
# lowest first; a module may import its own layer and the layers before it (see LNMStagingLib/__init__.py)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "errors", "fromdict", "clinical"),
    ("io",),
    ("imaging",),
    ("synthetic",),
    ("models",),
    ("bundle",),
    ("data",),
    ("training",),
    ("prediction",),
    ("evaluation", "export", "survival"),
    ("cohort_prediction",),
    ("cli", "__main__"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, text: str | None = None) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import of ``path`` (or of ``text`` as if it were that file),
    lazy ones inside functions included."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if not node.module:  # `from . import criteria`: a name is a module when its file exists
                for name in names:
                    sub = LIBRARY.parent / (target.replace(".", "/") + f"/{name}")
                    is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                    found.append((f"{target}.{name}", []) if is_module else (target, [name]))
            else:
                found.append((target, names))
    return [(target, names) for target, names in found if target.split(".")[0] == "LNMStagingLib"]


def _layer(module: str) -> int:
    parts = module.split(".")
    return RANK[parts[1] if len(parts) > 1 else ""]


def _library_files() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def test_every_library_module_has_a_layer():
    unknown = sorted({_module(p) for p in _library_files() if (_module(p).split(".") + [""])[1] not in RANK})
    assert not unknown, f"modules outside every layer: {unknown} (add them to LAYERS)"


def test_no_package_imports_a_package_above_it():
    upward = []
    for path in _library_files():
        own = _layer(_module(path))
        for target, _ in _imports(path):
            if _layer(target) > own:
                upward.append(f"{_module(path)} imports {target}")
    assert not upward, "imports that look up:\n" + "\n".join(upward)


def test_the_import_reader_resolves_relative_and_lazy_imports():
    path = LIBRARY / "io" / "image.py"
    text = "from ..training.pipeline import fit\ndef f():\n    from . import volume\n    import LNMStagingLib.cli.main\n"
    assert sorted(_imports(path, text)) == [("LNMStagingLib.cli.main", []), ("LNMStagingLib.io.volume", []),
                                            ("LNMStagingLib.training.pipeline", ["fit"])]
    assert _layer("LNMStagingLib.training.pipeline") > _layer(_module(path))


def test_the_command_line_imports_no_private_names():
    private = [f"{_module(path)}: {target}.{name}" for path in (LIBRARY / "cli").glob("*.py")
               for target, names in _imports(path) for name in names
               if name.startswith("_") and name != "__version__"]
    assert not private, f"the CLI reaches into private names: {private}"


def test_no_library_file_is_much_longer_than_400_lines():
    long = {str(p.relative_to(LIBRARY)): n for p in _library_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"
