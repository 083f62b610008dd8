"""The prediction child process: started, read and ended without a thread in Slicer's interpreter.

The child is ``python -m LNMStagingLib predict ... --progress-lines`` run by Slicer's own Python launcher
(``PythonSlicer``) or by the interpreter of an LNMStaging environment the user chose. Its standard output
and error go to files in the run's work folder, so the child never blocks on a full pipe and the module
reads them whenever its timer fires (``poll``). The child gets a process group of its own; ``cancel`` ends
the whole group (the child and anything it started).

Standard library only (no qt, no ``slicer``): the headless tests run the same code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from LNMStagingLib.io.progress_lines import parse_progress

STDOUT_NAME = "child-stdout.txt"
STDERR_NAME = "child-stderr.txt"
ERROR_PREFIX = "lnmstaging: error: "
# Variables that tie a process to Slicer's own Python; an interpreter of another environment must not
# inherit them (it would load Slicer's standard library or shared libraries instead of its own).
SLICER_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONSTARTUP")


@dataclass
class ChildOutcome:
    """How a finished child ended.

    Attributes:
        returncode: the exit status (negative: ended by that signal on POSIX).
        cancelled: True when ``cancel`` ended it.
        errorLine: the child's one-line error for the user ("" when it succeeded or said nothing).
    """

    returncode: int
    cancelled: bool
    errorLine: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.cancelled


def libraryRoot() -> Path | None:
    """The folder holding ``LNMStagingLib`` for the child's ``PYTHONPATH``: beside the module in an installed
    extension (qt-scripted-modules), the checkout's top folder in a source tree; None when neither has it."""
    moduleDir = Path(__file__).resolve().parents[1]
    for candidate in (moduleDir, moduleDir.parent):
        if (candidate / "LNMStagingLib" / "__init__.py").is_file():
            return candidate
    return None


def childEnvironment(base: Mapping[str, str], libraryPath: Path | None, ownInterpreter: bool) -> dict[str, str]:
    """The child's environment.

    Args:
        base: the environment to start from (Slicer's, or the one Slicer itself was started with).
        libraryPath: the folder holding ``LNMStagingLib``, put first on ``PYTHONPATH`` so that the child runs
            the module's own copy of the library (the files it writes are the ones this module reads).
        ownInterpreter: False for Slicer's launcher; True for another environment's interpreter, whose
            packages must not be mixed with Slicer's (Slicer's Python variables are dropped).

    Returns:
        A new dictionary; ``base`` is left as it is.
    """
    env = dict(base)
    if ownInterpreter:
        for name in SLICER_PYTHON_VARIABLES:
            env.pop(name, None)
    if libraryPath is not None:
        existing = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(libraryPath) + (os.pathsep + existing if existing else "")
    env["PYTHONUNBUFFERED"] = "1"  # progress lines reach the file as they are printed
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


class ChildProcess:
    """One child process writing its output into ``workDir``.

    Args:
        command: the program and its arguments.
        workDir: an existing folder for the output files (the caller owns and removes it).
        env: the child's environment (see ``childEnvironment``).
    """

    def __init__(self, command: Sequence[str], workDir: Path, env: Mapping[str, str] | None = None) -> None:
        self.command = [str(part) for part in command]
        self.workDir = Path(workDir)
        self.env = dict(env) if env is not None else None
        self._process: subprocess.Popen | None = None
        self._stdoutOffset = 0
        self._pendingLine = ""
        self._cancelled = False
        self.lastProgress: tuple[float, str] = (0.0, "")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the child (returns at once). Raises OSError when the program cannot be started."""
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel ends everything it starts
        with open(self.workDir / STDOUT_NAME, "wb") as stdout, open(self.workDir / STDERR_NAME, "wb") as stderr:
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=self.env,
                cwd=str(self.workDir), **kwargs,
            )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def cancel(self, grace: float = 3.0) -> None:
        """End the child's whole process group: politely first, then by force after ``grace`` seconds."""
        if self._process is None or self._process.poll() is not None:
            return
        self._cancelled = True
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True, check=False)
        else:
            self._signalGroup(signal.SIGTERM)
            try:
                self._process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signalGroup(signal.SIGKILL)
        self._process.wait()
        if sys.platform != "win32":
            self._signalGroup(signal.SIGKILL)  # grandchildren that outlived the child

    def _signalGroup(self, signalNumber: int) -> None:
        try:
            os.killpg(self._process.pid, signalNumber)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None, pollInterval: float = 0.05) -> ChildOutcome:
        """Block until the child ends (for scripts and tests; the module polls instead).

        Raises TimeoutError (after cancelling the child) when it runs longer than ``timeout`` seconds.
        """
        started = time.monotonic()
        while self.running:
            self.poll()
            if timeout is not None and time.monotonic() - started > timeout:
                self.cancel()
                raise TimeoutError(f"the prediction did not finish within {timeout:.0f} s")
            time.sleep(pollInterval)
        self.poll()
        return self.outcome()

    # ------------------------------------------------------------------ output

    def poll(self) -> list[tuple[float, str]]:
        """The progress lines the child printed since the last call, as (fraction, message)."""
        path = self.workDir / STDOUT_NAME
        if not path.is_file():
            return []
        with open(path, "rb") as stream:
            stream.seek(self._stdoutOffset)
            chunk = stream.read()
        self._stdoutOffset += len(chunk)
        text = self._pendingLine + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._pendingLine = lines.pop()  # a line still being written
        updates = [update for update in (parse_progress(line.rstrip("\r")) for line in lines) if update is not None]
        if updates:
            self.lastProgress = updates[-1]
        return updates

    def stderrText(self) -> str:
        path = self.workDir / STDERR_NAME
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    def outcome(self) -> ChildOutcome:
        """The outcome of the finished child (call after ``running`` is False)."""
        if self._process is None:
            raise RuntimeError("the child process was never started")
        returncode = self._process.poll()
        if returncode is None:
            raise RuntimeError("the child process is still running")
        return ChildOutcome(int(returncode), self._cancelled, "" if returncode == 0 else errorLineOf(self.stderrText(), returncode))


def errorLineOf(stderr: str, returncode: int) -> str:
    """The sentence to show for a failed child: its own one-line error, else its last line of output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):]
    if lines:
        return f"the prediction process failed (exit code {returncode}): {lines[-1]}"
    return f"the prediction process failed (exit code {returncode}) without a message"
