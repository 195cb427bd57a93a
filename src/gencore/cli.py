"""The ``gencore`` command.

Exit codes: 0 success, 1 the operation failed (a GencoreError, or a tool failed),
2 bad usage or an unreadable core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Optional

from .errors import CoreFormatError, GencoreError
from .reader import CoreFile, open_core

DEMO_PROGRAM = textwrap.dedent(
    '''
    """gencore demo: a small service with busy threads dumps itself while it keeps running."""
    import hashlib, queue, socket, sys, threading, time
    import gencore

    def handle_requests(q):
        while True:
            item = q.get()
            hashlib.sha256(item * 1000).hexdigest()

    def wait_for_lock(lock):
        with lock:
            pass

    def read_socket(sock):
        sock.recv(1)

    def compute_forever():
        n = 0
        while True:
            n += sum(i * i for i in range(1000))

    lock = threading.Lock(); lock.acquire()
    a, b = socket.socketpair()
    q = queue.Queue()
    for name, target, args in [("worker-queue", handle_requests, (q,)),
                               ("worker-lock", wait_for_lock, (lock,)),
                               ("worker-socket", read_socket, (a,)),
                               ("worker-cpu", compute_forever, ())]:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()
    time.sleep(0.2)
    path = gencore.create_core(sys.argv[1])
    r = path.report
    print(f"{path}\\t{r.pause_s * 1000:.2f}\\t{len(r.threads)}\\t{r.elapsed_s:.2f}", flush=True)
    '''
)


def _print_stacks(core: CoreFile, out: Any) -> None:
    stacks = core.python_stacks
    if not stacks:
        print(
            "no Python stacks in this core (written without python_stacks, or not by gencore)",
            file=out,
        )
        return
    meta = core.metadata
    print(f"Process {core.pid}: {core.command}", file=out)
    print(
        f"Python v{meta.get('python', {}).get('version', '?')} (reason: {meta.get('reason', '?')})",
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


def _info(core: CoreFile) -> dict[str, Any]:
    dumped = sum(m.filesz for m in core.mappings)
    return {
        "path": str(core.path),
        "pid": core.pid,
        "command": core.command,
        "signal": core.signal,
        "threads": [{"tid": t.tid, "pc": t.pc, "sp": t.sp} for t in core.threads],
        "incomplete_threads": core.incomplete_threads,
        "mappings": len(core.mappings),
        "file_mappings": len({m.path for m in core.mappings if m.path}),
        "dumped_bytes": dumped,
        "file_size": os.stat(core.path).st_size,
        "allocated_bytes": os.stat(core.path).st_blocks * 512,
        "metadata": {k: v for k, v in core.metadata.items() if k != "stacks"},
    }


def cmd_stacks(args: argparse.Namespace) -> int:
    with open_core(args.core) as core:
        if args.json:
            json.dump(core.python_stacks, sys.stdout, indent=1)
            print()
        else:
            _print_stacks(core, sys.stdout)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_core(args.core) as core:
        info = _info(core)
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(f"core:     {info['path']}")
    print(f"process:  {info['pid']}  {info['command']}")
    print(
        f"threads:  {len(info['threads'])}"
        + (f" ({len(info['incomplete_threads'])} incomplete)" if info["incomplete_threads"] else "")
    )
    print(f"mappings: {info['mappings']} ({info['file_mappings']} files)")
    print(
        f"size:     {info['file_size']} bytes, {info['allocated_bytes']} allocated, "
        f"{info['dumped_bytes']} of memory"
    )
    meta = info["metadata"]
    if meta:
        print(
            f"written:  by gencore {meta.get('gencore')} (reason {meta.get('reason')}) "
            f"for Python {meta.get('python', {}).get('version')}"
        )
    return 0


def _find_tool(name: str) -> Optional[str]:
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else shutil.which(name)


def cmd_demo(args: argparse.Namespace) -> int:
    directory = Path(args.directory or tempfile.mkdtemp(prefix="gencore-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"starting a Python program with 5 threads; it dumps itself into {directory}")
    program = directory / "gencore_demo_service.py"
    program.write_text(DEMO_PROGRAM)
    p = subprocess.run(
        [sys.executable, str(program), str(directory)], capture_output=True, text=True, timeout=300
    )
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        return 1
    path, pause_ms, nthreads, elapsed = p.stdout.strip().splitlines()[-1].split("\t")
    print(f"core written: {path}")
    print(f"  the program was paused {pause_ms} ms; {nthreads} threads; core ready in {elapsed} s")
    print("\nPython stacks read back from the core:\n")
    with open_core(path) as core:
        _print_stacks(core, sys.stdout)
    exe = os.path.realpath(sys.executable)
    pystack = _find_tool("pystack")
    if pystack:
        print(f"\n$ pystack core {path} {exe}\n")
        r = subprocess.run(
            [pystack, "core", path, exe], capture_output=True, text=True, timeout=300
        )
        print(r.stdout + r.stderr)
        if r.returncode != 0:
            return 1
    print("open it with:")
    print(f"  pystack core --native {path} {exe}")
    print(f"  py-spy dump --core {path}")
    print(f"  gdb -iex 'set auto-load safe-path /' {exe} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gencore`` command."""
    ap = argparse.ArgumentParser(
        prog="gencore",
        description="Core dumps of live Python processes, every thread, without stopping them.",
        epilog="exit codes: 0 success, 1 failure, 2 bad usage or unreadable core",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="dump a small multi-threaded program and read it back")
    d.add_argument("--directory", "-d", help="where to write the core (default: a temp dir)")
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("stacks", help="every Python thread's stack stored in a gencore core")
    s.add_argument("core")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stacks)
    i = sub.add_parser("info", help="process, threads, mappings and sizes of a core")
    i.add_argument("core")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``gencore`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CoreFormatError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
