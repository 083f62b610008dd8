"""Errors that reach users as one line (CLI: exit code 2; Slicer: a message box)."""

from __future__ import annotations

from pathlib import Path


class LNMStagingError(Exception):
    """Base class of every error the user should see as a single sentence."""


class InputError(LNMStagingError):
    """A user-supplied file (or value) cannot be used; the message names the file and the problem."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class BundleError(InputError):
    """A model bundle is missing, altered, or does not fit the input."""


class CancelledError(LNMStagingError):
    """The user cancelled a long-running job."""

    def __init__(self) -> None:
        super().__init__("cancelled by the user")
