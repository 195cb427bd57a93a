"""``gencore doctor``: what would stop core dumps here, and how to fix it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import FAIL, run_checks

    checks = run_checks(args.directory, trial=args.trial)
    if args.json:
        json.dump([c.as_dict() for c in checks], sys.stdout, indent=1)
        print()
    else:
        for c in checks:
            print(f"{c.level:<4}  {c.name:<13} {c.message}")
            if c.advice and c.level != "OK":
                print(f"{'':<19} -> {c.advice}")
    return 1 if any(c.level == FAIL for c in checks) else 0


def register(sub: Any) -> None:
    """Add ``doctor`` to the ``gencore`` command's subparsers."""
    o = sub.add_parser("doctor", help="what would stop core dumps here, and how to fix it")
    o.add_argument(
        "--directory",
        "-d",
        help="where cores would be written (default: $GENCORE_DIR or the current directory)",
    )
    o.add_argument("--trial", action="store_true", help="also write and read back a real core")
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=cmd_doctor)
