"""Outputs appear whole or not at all: everything is written to a temporary sibling and renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _ordinary_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp make 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; on success it replaces ``destination``."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".partial" + "".join(destination.suffixes), dir=destination.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    temporary_path.chmod(_ordinary_mode(directory=False))
    try:
        yield temporary_path
        os.replace(temporary_path, destination)
    finally:
        temporary_path.unlink(missing_ok=True)


def check_output_directory(destination: str | Path, marker: str) -> Path:
    """``destination`` resolved, if it may be (re)written as an output folder: absent, empty, or an earlier
    output of the same command (it holds ``marker``). Anything else, e.g. the folder of the input images, is
    refused: replacing it would delete the user's files."""
    from ..errors import InputError

    destination = Path(destination).resolve()
    if destination.exists():
        if not destination.is_dir():
            raise InputError(destination, "exists and is not a folder: choose a new output folder")
        if any(destination.iterdir()) and not (destination / marker).is_file():
            raise InputError(destination, f"is a folder with other files (no {marker} of an earlier run): it would be "
                                          "replaced as a whole, so choose a new or empty output folder")
    if destination.parent == destination:
        raise InputError(destination, "cannot be an output folder")
    return destination


@contextlib.contextmanager
def atomic_directory(destination: str | Path, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``destination`` (an existing output
    directory is replaced as a whole, so a failed run leaves the previous result untouched). ``marker``: a
    file every output of this kind holds (see :func:`check_output_directory`)."""
    destination = check_output_directory(destination, marker)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    temporary.chmod(_ordinary_mode(directory=True))
    try:
        yield temporary
        if destination.exists():
            backup = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(destination, backup)
            os.replace(temporary, destination)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(temporary, destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_text_atomic(destination: str | Path, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")
