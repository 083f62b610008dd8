"""One run context for training: progress bars, the device, the log and the work folder, passed as one value
instead of four parameters through every stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunContext:
    """How a training run reports and where it works.

    Args:
        progress: show progress bars.
        device: "cpu" or "cuda".
        log: a print-like function for one-line messages.
        work_dir: checkpoints and resumable intermediate results (None: none kept).
    """

    progress: bool = True
    device: str = "cpu"
    log: Callable[[str], None] = print
    work_dir: Path | None = None
