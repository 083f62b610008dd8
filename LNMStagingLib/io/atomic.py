"""Outputs appear whole or not at all: everything is written to a temporary sibling and renamed.

An output folder records the files it was given in :data:`OUTPUT_LISTING`; a later run replaces the folder only
when it still holds nothing but those files, so a user's notes or images put there are never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

OUTPUT_LISTING = ".lnmstaging-outputs.json"


def _write_failure(destination: Path, error: OSError) -> InputError:
    """One line naming the user's path (never the hidden temporary one) and the reason."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EACCES: "permission denied (read-only folder?)",
              errno.EROFS: "the file system is read-only", errno.EDQUOT: "disk quota exceeded"}.get(
        error.errno, error.strerror or str(error))
    return InputError(destination, f"cannot be written: {reason}")


def _ordinary_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp make 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; on success it replaces ``destination``."""
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".partial" + "".join(destination.suffixes), dir=destination.parent
        )
    except OSError as error:
        raise _write_failure(destination, error) from None
    os.close(handle)
    temporary_path = Path(temporary)
    temporary_path.chmod(_ordinary_mode(directory=False))
    try:
        yield temporary_path
        os.replace(temporary_path, destination)
    except OSError as error:
        raise _write_failure(destination, error) from None
    finally:
        temporary_path.unlink(missing_ok=True)


def _listed_outputs(folder: Path) -> set[str] | None:
    """The relative paths an earlier run recorded in ``folder`` (None: no readable listing)."""
    try:
        listed = json.loads((folder / OUTPUT_LISTING).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(listed, dict) or not isinstance(listed.get("files"), list):
        return None
    return {str(name) for name in listed["files"]}


def _folder_entries(folder: Path) -> set[str]:
    """Every file, link and folder below ``folder`` as relative POSIX paths (folders end with '/')."""
    entries = set()
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        entries.add(rel + "/" if path.is_dir() and not path.is_symlink() else rel)
    return entries


def _record_outputs(folder: Path) -> None:
    files = sorted(_folder_entries(folder))
    (folder / OUTPUT_LISTING).write_text(json.dumps({"written_by": "lnmstaging", "files": files}, indent=1) + "\n",
                                         encoding="utf-8")


def check_output_directory(destination: str | Path, marker: str, replaced_whole: bool = True) -> Path:
    """``destination`` resolved, if it may be (re)written as an output folder: absent, empty, or an earlier
    output of the same command (it holds ``marker``) that, when it is to be replaced as a whole, holds nothing
    but the files that run recorded. Anything else, e.g. the folder of the input images, is refused: replacing
    it would delete the user's files.

    Args:
        destination: the output folder.
        marker: a file every output of this kind holds.
        replaced_whole: False for a folder the command only adds to and updates by name (predict-cohort's run
            folder): then other files in it are never at risk and the listing is not required.

    Returns:
        The resolved folder.
    """
    destination = Path(destination).resolve()
    if destination.exists():
        if not destination.is_dir():
            raise InputError(destination, "exists and is not a folder: choose a new output folder")
        if any(destination.iterdir()):
            if not (destination / marker).is_file():
                raise InputError(destination, f"is a folder with other files (no {marker} of an earlier run): it "
                                              "would be replaced as a whole, so choose a new or empty output folder")
            if not replaced_whole:
                return destination
            listed = _listed_outputs(destination)
            if listed is None:
                raise InputError(destination, f"holds no {OUTPUT_LISTING} (the list of files an earlier run wrote), "
                                              "so other files may be the user's: choose a new or empty output folder")
            foreign = sorted(_folder_entries(destination) - listed - {OUTPUT_LISTING})
            if foreign:
                raise InputError(destination, f"holds files this tool did not write ({', '.join(foreign[:3])}"
                                              f"{', ...' if len(foreign) > 3 else ''}): they would be deleted, so "
                                              "choose a new or empty output folder")
    if destination.parent == destination:
        raise InputError(destination, "cannot be an output folder")
    return destination


@contextlib.contextmanager
def atomic_directory(destination: str | Path, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``destination`` (an existing output
    directory is replaced as a whole, so a failed run leaves the previous result untouched). ``marker``: a
    file every output of this kind holds (see :func:`check_output_directory`)."""
    destination = check_output_directory(destination, marker)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    except OSError as error:
        raise _write_failure(destination, error) from None
    temporary.chmod(_ordinary_mode(directory=True))
    try:
        yield temporary
        _record_outputs(temporary)
        check_output_directory(destination, marker)  # again: the user may have added files while we worked
        if destination.exists():
            backup = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(destination, backup)
            os.replace(temporary, destination)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(temporary, destination)
    except OSError as error:
        raise _write_failure(destination, error) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def add_to_listing(folder: Path, child: Path) -> None:
    """Record ``child`` (a file or folder just written inside the output folder ``folder``, e.g. a DICOM export
    added to a `predict` folder) in ``folder``'s listing, so that a later run may replace the folder again.

    Args:
        folder: an output folder holding :data:`OUTPUT_LISTING` (nothing happens without one).
        child: the new file or folder inside it.
    """
    listed = _listed_outputs(folder)
    if listed is None:
        return
    rel = child.relative_to(folder).as_posix()
    added = {rel + "/"} if child.is_dir() else {rel}
    if child.is_dir():
        added |= {f"{rel}/{entry}" for entry in _folder_entries(child)}
    files = sorted(listed | added)
    write_text_atomic(folder / OUTPUT_LISTING, json.dumps({"written_by": "lnmstaging", "files": files}, indent=1) + "\n")


def write_text_atomic(destination: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``destination`` through a temporary sibling (see :func:`atomic_path`)."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")
