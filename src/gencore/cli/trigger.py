"""``gencore trigger``: make a process with the trigger (or any 3.14+ one) dump itself."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .._common import stem_of
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


def cmd_trigger(args: argparse.Namespace) -> int:

    from ..capture.delivery import find_state

    if args.inject:
        return cmd_inject(args)
    state = find_state(args.pid, args.state)
    sig = args.signal or state.get("signal")
    if not sig:
        print(f"gencore: process {args.pid} installed no signal trigger", file=sys.stderr)
        return 1
    directory = Path(state["directory"])
    try:
        # kept open: an exiting process removes its events file, what it wrote stays readable
        events = open(state["events"], "rb")
    except OSError as e:
        print(f"gencore: cannot read the events of process {args.pid}: {e}", file=sys.stderr)
        return 1
    with events:
        events.seek(0, os.SEEK_END)
        os.kill(args.pid, sig)
        return _follow_trigger(args, state, events, directory)


def _follow_trigger(
    args: argparse.Namespace, state: dict[str, Any], events: Any, directory: Path
) -> int:
    """Follow the events of one triggered dump (see cmd_trigger)."""

    from .._procfs import alive as process_alive

    deadline = time.monotonic() + args.timeout
    progress = Progress("writing")
    name = None
    core_done = False
    buf = ""
    try:
        while time.monotonic() < deadline:
            alive = process_alive(args.pid, state.get("start_time"))
            buf += events.read().decode(errors="replace")
            lines, _, buf = buf.rpartition("\n")
            for line in lines.splitlines():
                word, _, rest = line.partition(" ")
                parts = rest.split()
                if word == "start" and name is None:
                    name = parts[0]
                    if not args.wait:
                        print(directory / name)
                        return 0
                elif word == "skipped" and name is None:
                    reason = parts[0] if parts else "?"
                    print(
                        f"gencore: process {args.pid} skipped the dump ({reason} guard)",
                        file=sys.stderr,
                    )
                    return 1
                elif word == "progress" and parts and parts[0] == name:
                    progress(int(parts[1]), int(parts[2]))
                elif word == "error" and parts and parts[0] == name:
                    progress.end()
                    print(
                        f"gencore: the core failed: {os.strerror(int(parts[1]))}", file=sys.stderr
                    )
                    return 1
                elif word == "done" and parts and parts[0] == name:
                    progress.end()
                    core_done = True
                    print(directory / name)
                    if not state.get("collect") and not state.get("upload"):
                        return 0
                elif word == "bundle" and core_done:
                    print(directory / parts[0])
                    if not state.get("upload"):
                        return 0
                elif word == "upload" and core_done and len(parts) > 1:
                    if name is not None and parts[0].startswith(stem_of(name)):
                        print(parts[1])
                        return 0
                elif word == "upload-error" and core_done and parts:
                    if name is not None and parts[0].startswith(stem_of(name)):
                        print(f"gencore: the upload failed: {rest}", file=sys.stderr)
                        return 1
                elif word == "bundle-error" and core_done:
                    print(f"gencore: bundling failed: {rest}", file=sys.stderr)
                    return 1
            if not alive:  # everything it wrote has been read: the rest is on disk
                progress.end()
                return _after_exit(args.pid, directory, name, core_done, deadline)
            time.sleep(0.05)
    finally:
        progress.end()
    if core_done:
        print(
            "gencore: the bundle is not ready yet (the process may be stuck holding the "
            "GIL; the core above is complete)",
            file=sys.stderr,
        )
        return 0
    print(
        f"gencore: no core from process {args.pid} within {args.timeout:g} s"
        + ("" if name is None else f" ({name} still being written)"),
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
    final, partial = directory / name, directory / f".{name}.partial"
    while time.monotonic() < deadline and not final.exists() and partial.exists():
        time.sleep(0.05)
    if final.exists():
        print(final)
        print(f"gencore: process {pid} exited; its core is complete", file=sys.stderr)
        return 0
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
        "through the state file the process announced.",
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
    t.set_defaults(func=cmd_trigger)
