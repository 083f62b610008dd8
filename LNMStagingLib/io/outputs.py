"""The output-file rule: a command replaces an existing file only when it is recognisably this tool's own
earlier output of the same kind (or the user passed ``--overwrite``), and never when it is one of the
command's inputs. Output folders follow the same rule in :mod:`LNMStagingLib.io.atomic`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import InputError

Recogniser = Callable[[Path], bool]


def _same_or_inside(output: Path, source: Path) -> bool:
    """Whether ``output`` is the file ``source`` (also through links), an existing file inside the folder
    ``source`` (a DICOM series folder, a data folder) or holds ``source`` (an output folder around an input)."""
    try:
        source_resolved = source.resolve()
        output_resolved = output.resolve()
    except OSError:
        return False
    if output_resolved == source_resolved:
        return True
    if output.exists() and source.exists():
        try:
            if os.path.samefile(output, source):
                return True
        except OSError:
            pass
    # an existing file inside an input folder is part of that input (a DICOM slice); a new name there is not.
    # An input inside an output folder would go when the folder is replaced.
    inside_input = source.is_dir() and source_resolved in output_resolved.parents and output.exists()
    return inside_input or output_resolved in source_resolved.parents


def refuse_input_as_output(output: str | Path, inputs: Iterable[str | Path | None], option: str = "--out") -> None:
    """Raise :class:`InputError` when ``output`` is one of the command's ``inputs`` (or inside an input folder).

    Args:
        output: the output path the user gave.
        inputs: the command's input files and folders (None entries are ignored).
        option: the option that named ``output``, for the message.
    """
    output = Path(output)
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        if _same_or_inside(output, source):
            raise InputError(output, f"{option} is one of this command's inputs ({source}); choose another output path")


def check_output_file(output: str | Path, inputs: Iterable[str | Path | None], recognise: Recogniser,
                      kind: str, overwrite: bool = False, option: str = "--out") -> Path:
    """``output`` if the command may write it: not an input, and absent, or recognisably an earlier output of
    this kind (``recognise``), or ``overwrite`` is set.

    Args:
        output: the output path.
        inputs: the command's inputs, never replaced, even with ``overwrite``.
        recognise: tells whether an existing file is this command's own earlier output.
        kind: what the command writes ("an lnmstaging measure CSV"), for the message.
        overwrite: the user's explicit ``--overwrite``.
        option: the option that named ``output``.

    Returns:
        ``output`` as a :class:`Path`.
    """
    output = Path(output)
    refuse_input_as_output(output, inputs, option)
    if output.is_dir():
        raise InputError(output, f"{option} is a folder; give a file name")
    if output.exists() and not overwrite:
        try:
            ours = recognise(output)
        except (OSError, ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise InputError(output, f"exists and is not {kind}: it is left as it is; choose another {option} "
                                     "or pass --overwrite to replace it")
    return output


def first_line_is(header: str) -> Recogniser:
    """A recogniser for text files whose first line is exactly ``header`` (CSV outputs)."""
    def recognise(path: Path) -> bool:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n") == header
    return recognise


def json_with_keys(*keys: str) -> Recogniser:
    """A recogniser for JSON objects holding every one of ``keys`` (JSON outputs)."""
    def recognise(path: Path) -> bool:
        if path.stat().st_size > 64 << 20:
            return False
        value = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(value, dict) and all(key in value for key in keys)
    return recognise
