"""``gencore trigger``: make a process with the trigger (or any 3.14+ one) dump itself, or
every Python process of a tree at once."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import GencoreError
from ._dumps import Dump, open_dump, wait_published
from ._format import Progress, signal_arg


def cmd_inject(args: argparse.Namespace) -> int:
    """``gencore trigger --inject PID``: a 3.14+ process that never imported gencore."""
    from ..capture.inject import inject

    doc = inject(args.pid, args.directory, args.wait, args.timeout)
    if "error" in doc:
        print(f"gencore: the core of process {args.pid} failed: {doc['error']}", file=sys.stderr)
        return 1
    print(doc.get("ok") or doc["started"])
    return 0


def not_armed(pid: int, error: GencoreError) -> GencoreError:
    """The refusal for a process without the trigger, suggesting ``--inject`` where the
    target runs Python 3.14 or newer."""
    if "has not installed" not in str(error):
        return error
    try:
        from ..capture.inject import target_python

        version, _ = target_python(pid)
    except (GencoreError, OSError, ValueError):
        return error
    if version < (3, 14):
        return error
    return GencoreError(
        str(error),
        stage="trigger",
        advice=f"it runs Python {version[0]}.{version[1]}: dump it once with `gencore trigger "
        f"--inject {pid}` (sys.remote_exec, needs ptrace permission), or call "
        "gencore.install() in it / start it with `gencore run`",
    )


def cmd_trigger(args: argparse.Namespace) -> int:
    from ..capture.delivery import find_state

    if args.tree:
        from .tree import cmd_tree

        return cmd_tree(args)
    if args.inject:
        return cmd_inject(args)
    try:
        state = find_state(args.pid, args.state)
    except GencoreError as e:
        raise not_armed(args.pid, e) from None
    sig = args.signal or state.get("signal")
    if not sig:
        print(f"gencore: process {args.pid} installed no signal trigger", file=sys.stderr)
        return 1
    try:
        dump = open_dump(args.pid, state, args.wait)
    except GencoreError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 1
    with dump.events:
        os.kill(args.pid, sig)
        return _follow_trigger(args, dump)


def _follow_trigger(args: argparse.Namespace, dump: Dump) -> int:
    """Follow the events of one triggered dump (see cmd_trigger)."""
    from .._procfs import alive as process_alive

    deadline = time.monotonic() + args.timeout
    progress = Progress("writing")
    printed = 0
    try:
        while time.monotonic() < deadline:
            alive = process_alive(args.pid, dump.state.get("start_time"))
            over = dump.poll(progress)
            if dump.outputs[printed:]:
                progress.end()
                for line in dump.outputs[printed:]:
                    print(line)
                printed = len(dump.outputs)
            if over:
                if dump.error:
                    print(f"gencore: {dump.error}", file=sys.stderr)
                return 1 if dump.error else 0
            if not alive:  # everything it wrote has been read: the rest is on disk
                progress.end()
                return _after_exit(args.pid, dump.directory, dump.name, dump.core_done, deadline)
            time.sleep(0.05)
    finally:
        progress.end()
    if dump.core_done:
        print(
            "gencore: the bundle is not ready yet (the process may be stuck holding the "
            "GIL; the core above is complete)",
            file=sys.stderr,
        )
        return 0
    print(
        f"gencore: no core from process {args.pid} within {args.timeout:g} s"
        + ("" if dump.name is None else f" ({dump.name} still being written)"),
        file=sys.stderr,
    )
    return 1


def _after_exit(
    pid: int, directory: Path, name: Optional[str], core_done: bool, deadline: float
) -> int:
    """The target exited during its dump: its snapshot child lives on and publishes the
    core (``.NAME.partial`` renamed to NAME) or removes the partial file on failure."""
    if name is None:
        print(f"gencore: process {pid} exited before it started a core", file=sys.stderr)
        return 1
    if core_done:  # printed already; the bundle was due
        print(f"gencore: process {pid} exited before its bundle was built", file=sys.stderr)
        return 0
    final = wait_published(directory, name, deadline)
    if final is not None:
        print(final)
        print(f"gencore: process {pid} exited; its core is complete", file=sys.stderr)
        return 0
    partial = directory / f".{name}.partial"
    print(
        f"gencore: process {pid} exited and its core {name} "
        + ("is still being written" if partial.exists() else "was not completed"),
        file=sys.stderr,
    )
    return 1


def register(sub: Any) -> None:
    """Add ``trigger`` to the ``gencore`` command's subparsers."""
    t = sub.add_parser(
        "trigger",
        help="make a process that installed the trigger dump itself",
        description="Signal PID (which called gencore.install() or runs under `gencore run`) "
        "and print the path of its new core. It finds the process's directory and signal "
        "through the state file the process announced. With --tree, every Python process of "
        "the tree under PID at once.",
    )
    t.add_argument("pid", type=int)
    t.add_argument(
        "--wait",
        action="store_true",
        help="wait until the core is complete (and the bundle, if the process collects)",
    )
    t.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    t.add_argument("--signal", type=signal_arg, help="override the announced signal")
    t.add_argument(
        "--inject",
        action="store_true",
        help="for a Python 3.14+ process that never imported gencore: run one create_core in "
        "it through sys.remote_exec (needs ptrace permission: root, CAP_SYS_PTRACE or the "
        "same user)",
    )
    t.add_argument(
        "--directory", "-d", help="with --inject: where the core goes (default: its cwd)"
    )
    t.add_argument("--state", help="the state file, if not in the usual place")
    t.add_argument(
        "--tree",
        action="store_true",
        help="every Python process of the tree under PID (PID included): signal those with "
        "the trigger at once, inject the others on Python 3.14+; one line per process",
    )
    t.add_argument(
        "--collect",
        metavar="ARCHIVE",
        nargs="?",
        const="",
        help="with --tree: one .tar.gz of every core (or bundle) and a manifest of the tree "
        "(default name tree_<date>.<time>.<PID>.tar.gz in the current directory)",
    )
    t.set_defaults(func=cmd_trigger)
