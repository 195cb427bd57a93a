"""``gencore demo``: a small multi-threaded service dumps itself and is read back."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ..analysis.core import open_core
from ._format import find_tool
from .stacks import print_stacks

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
        print_stacks(core, sys.stdout)
    exe = os.path.realpath(sys.executable)
    pystack = find_tool("pystack")
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
    print("for another machine, pack it with its libraries and open it there:")
    print(f"  gencore bundle {path}")
    print(f"  gencore debug {path[: -len('.core')]}.tar.gz -- --native")
    return 0


def register(sub: Any) -> None:
    """Add ``demo`` to the ``gencore`` command's subparsers."""
    d = sub.add_parser("demo", help="dump a small multi-threaded program and read it back")
    d.add_argument("--directory", "-d", help="where to write the core (default: a temp dir)")
    d.set_defaults(func=cmd_demo)
