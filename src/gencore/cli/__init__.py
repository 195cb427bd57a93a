"""The ``gencore`` command: one module per command group, each adding its subparsers.

Exit codes: 0 success, 1 the operation failed (a GencoreError, or a tool failed),
2 bad usage or an unreadable core.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from ..errors import CoreFormatError, GencoreError
from . import debug, demo, doctor, heap, info, report, run, stacks, storage, tasks, trigger

__all__ = ["build_parser", "main"]

# in the order `gencore --help` lists them
_GROUPS = (demo, stacks, tasks, heap, info, report, debug, doctor, trigger, run, storage)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gencore`` command."""
    ap = argparse.ArgumentParser(
        prog="gencore",
        description="Core dumps of live Python processes, every thread, without stopping them.",
        epilog="exit codes: 0 success, 1 failure, 2 bad usage or unreadable core",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.register(sub)
    return ap


def _reader_gone() -> int:
    """stdout's reader went away (``gencore info CORE | head``): exit quietly, as command-line
    tools do, without a traceback or a second error when Python flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``gencore`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        # The program's own exceptions and exit status are its own: they reach the
        # interpreter (and the installed hooks) untouched.
        return int(args.func(args))
    try:
        rc = int(args.func(args))
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        return _reader_gone()
    except CoreFormatError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
