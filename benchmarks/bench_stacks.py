"""Stacks and tasks read from a core, side by side with the tools that read them elsewhere.

    python benchmarks/bench_stacks.py threads [--threads 3000] [--compare 2000]
    python benchmarks/bench_stacks.py tasks [--tasks 10000]          (Python 3.14+)

threads: a process with --threads threads, each parked in a small Python function, dumps
itself (create_core); `gencore stacks` reads the core in a fresh process (time, peak RSS).
A process with --compare threads is dumped too, and pystack (`pystack core`) and py-spy
(`py-spy dump --core`) read that one and this one, with their times, peak RSS and exit
status (pystack 1.7.2 crashes past about 2,000 threads, py-spy 0.4 runs out of memory).
Target: gencore's time on the big core at most pystack's on the --compare core; its peak
RSS under 1 GiB.

tasks: a process with --tasks parked asyncio tasks; `python -m asyncio ps PID` runs on the
live process, then the process dumps itself (SIGUSR2, the signal trigger) and
`gencore tasks CORE` reads the core. Target: gencore's time at most ps's.

Each run prints one line per measurement and a ratio; results go to OUT/stacks-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

THREADS_PROGRAM = textwrap.dedent(
    """
    import sys, threading, gencore
    ev = threading.Event()
    def parked_worker():
        ev.wait()
    for _ in range(int(sys.argv[2])):
        threading.Thread(target=parked_worker, daemon=True).start()
    print(gencore.create_core(sys.argv[1]), flush=True)
    """
)

TASKS_PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys, gencore
    async def parked(i):
        await asyncio.sleep(3600)
    async def main():
        for i in range(int(sys.argv[2])):
            asyncio.create_task(parked(i), name=f"parked-{i}")
        for _ in range(5):
            await asyncio.sleep(0)
        print(os.getpid(), flush=True)
        await asyncio.Event().wait()
    gencore.install(directory=sys.argv[1])
    asyncio.run(main())
    """
)


def tool(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def run_measured(cmd: list[str]) -> dict:
    """Wall time, peak RSS and exit status of one command, run from a fresh wrapper process
    (so the peak is this command's alone), its data (heap) capped at 8 GiB (a reader that
    runs out of memory fails there instead of taking the machine's)."""
    code = (
        "import json, resource, subprocess, sys, time\n"
        "cap = lambda: resource.setrlimit(resource.RLIMIT_DATA, (8 << 30, 8 << 30))\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, preexec_fn=cap)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'returncode': p.returncode,"
        " 'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " 'stdout_bytes': len(p.stdout),"
        " 'stderr_tail': p.stderr.decode(errors='replace')[-300:]}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    doc = json.loads(p.stdout)
    doc["cmd"] = " ".join(cmd[:3])
    return doc


def dump_threads(directory: Path, n: int) -> str:
    p = subprocess.run(
        [sys.executable, "-c", THREADS_PROGRAM, str(directory), str(n)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return p.stdout.strip()


def bench_threads(args: argparse.Namespace, out: Path) -> dict:
    python = os.path.realpath(sys.executable)
    results: dict = {"threads": args.threads, "compare": args.compare, "runs": []}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        big, small = dump_threads(Path(tmp), args.threads), dump_threads(Path(tmp), args.compare)
        for label, core in (("big", big), ("compare", small)):
            for cmd in (
                [sys.executable, "-m", "gencore", "stacks", core],
                [tool("pystack"), "core", core, python],
                [tool("py-spy"), "dump", "--core", core],
            ):
                r = run_measured(cmd)
                r["core"] = label
                results["runs"].append(r)
                print(
                    f"{label:8} {r['cmd'][:40]:40} {r['seconds']:8.2f} s "
                    f"{r['rss_kib'] / 1024:8.0f} MiB  exit {r['returncode']}"
                )
    ours = next(r for r in results["runs"] if r["core"] == "big" and "gencore" in r["cmd"])
    theirs = next(r for r in results["runs"] if r["core"] == "compare" and "pystack" in r["cmd"])
    results["ratio_vs_pystack"] = ours["seconds"] / theirs["seconds"]
    print(
        f"gencore stacks on {args.threads + 1} threads / pystack on {args.compare + 1}: "
        f"{results['ratio_vs_pystack']:.2f} (target <= 1)"
    )
    return results


def bench_tasks(args: argparse.Namespace, out: Path) -> dict:
    if sys.version_info < (3, 14):
        raise SystemExit("python -m asyncio ps needs Python 3.14+")
    results: dict = {"tasks": args.tasks}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        p = subprocess.Popen(
            [sys.executable, "-c", TASKS_PROGRAM, tmp, str(args.tasks)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            pid = int(p.stdout.readline())
            results["ps"] = run_measured([sys.executable, "-m", "asyncio", "ps", str(pid)])
            os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 300
            while not list(Path(tmp).glob("core_*.core")) and time.monotonic() < deadline:
                time.sleep(0.1)
            core = str(next(Path(tmp).glob("core_*.core")))
        finally:
            p.kill()
            p.wait()
        results["gencore"] = run_measured([sys.executable, "-m", "gencore", "tasks", core])
    for name in ("ps", "gencore"):
        r = results[name]
        print(
            f"{name:8} {r['seconds']:8.2f} s {r['rss_kib'] / 1024:8.0f} MiB  exit {r['returncode']}"
        )
    results["ratio"] = results["gencore"]["seconds"] / results["ps"]["seconds"]
    print(
        f"gencore tasks / python -m asyncio ps on {args.tasks} tasks: {results['ratio']:.2f} "
        "(target <= 1)"
    )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["threads", "tasks"])
    ap.add_argument("--threads", type=int, default=3000)
    ap.add_argument("--compare", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--tmp", default=None, help="where the cores go (default $TMPDIR)")
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = bench_threads(args, out) if args.what == "threads" else bench_tasks(args, out)
    (out / f"stacks-{args.what}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
