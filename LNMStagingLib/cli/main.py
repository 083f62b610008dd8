"""`lnmstaging` command line: one sub-command per user task.

Each command module exposes ``register(subparsers)``; the sub-parser it adds sets ``handler`` to a function
taking the parsed arguments and returning an exit code. Errors meant for the user (``LNMStagingError``)
become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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
    """Run one ``lnmstaging`` command; returns its exit code (2 for a user error, 130/143 when stopped).

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
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
