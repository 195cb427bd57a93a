"""What the command modules share: progress on a terminal, tools, argument types."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

from .._common import format_size


class Progress:
    """A one-line progress display on a terminal (stderr); silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            return
        pct = 100.0 * done / total if total else 0.0
        sys.stderr.write(
            f"\r{self.label}: {format_size(done)} of {format_size(total)} ({pct:.0f}%)   "
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def find_tool(name: str) -> Optional[str]:
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else shutil.which(name)


def stderr_line(line: str) -> None:
    print(f"gencore: {line}", file=sys.stderr)


def signal_arg(text: str) -> int:
    import signal as sigmod

    t = text.upper()
    if t.isdigit():
        return int(t)
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(getattr(sigmod, name))
    except AttributeError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def size_arg(text: str) -> int:
    from ..capture.options import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def signed_size(n: int) -> str:
    return ("-" if n < 0 else "+") + format_size(abs(n))


def identity_option(parser: argparse.ArgumentParser) -> None:
    """``--identity FILE``: the age identity that opens encrypted cores and bundles."""
    parser.add_argument(
        "--identity",
        metavar="FILE",
        help="age identity file (AGE-SECRET-KEY-1..., or an OpenSSH key) for encrypted "
        "(.age) cores and bundles; default $GENCORE_IDENTITY",
    )
