"""`lnmstaging` command line: one sub-command per user task.

Each command module exposes ``register(subparsers)``; the sub-parser it adds sets ``handler`` to a function
taking the parsed arguments and returning an exit code. Errors meant for the user (``LNMStagingError``)
become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .. import __version__
from ..errors import CancelledError, LNMStagingError

# Modules are imported lazily so that `lnmstaging measure` does not pay for importing torch.
COMMAND_MODULES: tuple[str, ...] = (
    "LNMStagingLib.cli.case",
    "LNMStagingLib.cli.learning",
    "LNMStagingLib.cli.prediction",
    "LNMStagingLib.cli.cohorts",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnmstaging",
        description="Interpretable lymph node metastasis staging (research use only, not a medical device).",
    )
    parser.add_argument("--version", action="version", version=f"lnmstaging {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # a command group not installed in this build
            raise
        module.register(subparsers)
    return parser


class Terminated(LNMStagingError):
    """SIGTERM arrived: unwinding as an exception lets every atomic writer remove its temporary files."""

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM): nothing was left half-written")


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for a user error, 130/143 when stopped).

    Args:
        argv: the arguments (None: the process's own, as the console script and ``python -m`` run it).

    Returns:
        The exit code. Started from the command line (``argv`` None), a command that sets ``fast_exit`` ends
        the process here instead (:func:`_exit_now`).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    code = _run(args)
    if argv is None and getattr(args, "fast_exit", False):
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown, which takes about 0.8 s once torch and MONAI are
    loaded (freeing every module and tensor) and does nothing a finished command needs: its outputs are written,
    closed and renamed into place (io/atomic.py) before the handler returns. Only the standard streams still
    hold buffered text; they are flushed first."""
    if "torch" not in sys.modules:
        return  # nothing slow to skip
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can be delivered anyway
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    """The handler's exit code; user-facing errors as one line on stderr."""
    try:
        return int(args.handler(args) or 0)
    except CancelledError as error:
        print(f"lnmstaging: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("lnmstaging: cancelled by the user", file=sys.stderr)
        return 130
    except Terminated as error:
        print(f"lnmstaging: {error}", file=sys.stderr)
        return 143
    except LNMStagingError as error:
        print(f"lnmstaging: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file system refusal the checks did not foresee (permissions, disk full...)
        where = f"{error.filename}: " if error.filename else ""
        print(f"lnmstaging: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
