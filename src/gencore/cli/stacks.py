"""``gencore stacks``: every Python thread's stack in a core or bundle."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..analysis.core import CoreFile, open_core
from ._format import identity_option


def print_stacks(core: CoreFile, out: Any) -> None:
    stacks = core.python_stacks
    if not stacks:
        reason = core.metadata.get("reason")
        if reason in ("signal", "crash"):
            why = f"it was written by the {reason} trigger, in a signal handler where Python "
            why += "cannot run"
        elif core.metadata:
            why = "it was written with python_stacks=False"
        else:
            why = "it was not written by gencore"
        print(
            f"no Python stacks stored in this core: {why}. Read them from memory with "
            "`pystack core CORE` (or `gencore debug BUNDLE`).",
            file=out,
        )
        return
    meta = core.metadata
    print(f"Process {core.pid}: {core.command}", file=out)
    py = meta.get("python", {})
    print(
        f"Python v{py.get('version', '?')} ({py.get('executable', '?')}), "
        f"reason: {meta.get('reason', '?')}",
        file=out,
    )
    print("", file=out)
    for t in stacks:
        tid = t.get("native_id") or t.get("ident")
        flags = " (snapshot caller)" if t.get("current") else ""
        print(f'Thread {tid}{flags}: "{t.get("name")}"', file=out)
        for f in t.get("frames", []):
            print(
                f"    {f.get('qualname') or f.get('function')} ({f.get('file')}:{f.get('line')})",
                file=out,
            )
        if t.get("frames_skipped"):
            print(f"    ... {t['frames_skipped']} more frames", file=out)
    if core.incomplete_threads:
        print(
            f"\nincomplete threads (did not stop for the snapshot): "
            f"{', '.join(map(str, core.incomplete_threads))}",
            file=out,
        )


def cmd_stacks(args: argparse.Namespace) -> int:
    with open_core(args.core, args.identity) as core:
        if args.json:
            json.dump(core.python_stacks, sys.stdout, indent=1)
            print()
        else:
            print_stacks(core, sys.stdout)
    return 0


def register(sub: Any) -> None:
    """Add ``stacks`` to the ``gencore`` command's subparsers."""
    s = sub.add_parser("stacks", help="every Python thread's stack in a gencore core or bundle")
    s.add_argument("core")
    s.add_argument("--json", action="store_true")
    identity_option(s)
    s.set_defaults(func=cmd_stacks)
