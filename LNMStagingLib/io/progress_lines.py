"""Machine-readable progress lines: how a command tells a parent process (the Slicer module) how far it is.

One line per step on standard output, flushed: ``lnmstaging-progress {"fraction": 0.4, "message": "..."}``.
Standard library only, so a parent can parse the lines without the library's scientific dependencies.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

PREFIX = "lnmstaging-progress "


def format_progress(fraction: float, message: str) -> str:
    """One progress line (without the newline).

    Args:
        fraction: the share of the work done, 0 to 1 (clipped).
        message: what is being done now.

    Returns:
        The line, ``PREFIX`` followed by a JSON object with ``fraction`` and ``message``.
    """
    return PREFIX + json.dumps({"fraction": round(min(1.0, max(0.0, float(fraction))), 4), "message": str(message)})


def parse_progress(line: str) -> tuple[float, str] | None:
    """``(fraction, message)`` of a progress line, None for any other line (ordinary output, a torn line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        data = json.loads(line[len(PREFIX):])
        return float(data["fraction"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        return None


def print_progress(fraction: float, message: str, stream: TextIO | None = None) -> None:
    """Write one progress line and flush, so that a parent reading the stream sees it at once."""
    stream = sys.stdout if stream is None else stream
    stream.write(format_progress(fraction, message) + "\n")
    stream.flush()
