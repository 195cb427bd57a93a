"""Pause, completion time and disk blocks of gencore vs bare fork, the kernel's core and gcore.

    python benchmarks/bench_snapshot.py [--sizes 256,1024,4096] [--threads 1,16,64]
                                        [--dir DIR] [--out benchmarks/out] [--no-gcore]

For each RSS size a fresh worker process fills that much anonymous memory, then for each
thread count (Python threads besides the main one, all idle) measures side by side:

  (a) pause: the longest stall seen by a native probe thread that spins on the clock, over
      the snapshot and the 50 ms after it (the child already writing), and gencore's own
      measure (freeze + fork);
  (b) a bare raw fork() of the same process;
  (c) the time until gencore's core is published;
  (d) the kernel's core of the same process made the original way: a forked child that
      raises SIGSEGV in a temp dir (coredump_filter 0xff, RLIMIT_CORE unlimited);
  (e) gcore (gdb), where present: the process is stopped for the whole dump;
  (f) allocated disk blocks of each core.

Results go to OUT/results.json; benchmarks/report.py turns them into BENCHMARKS.md and a plot.
Needs core_pattern to be a plain file name (for (d)) and root or ptrace rights (for (e)).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent


def build_probe(out: Path) -> str:
    lib = out / "libprobe.so"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-shared",
            "-fPIC",
            "-pthread",
            "-Wall",
            "-Wextra",
            "-o",
            str(lib),
            str(HERE / "probe.c"),
        ],
        check=True,
    )
    return str(lib)


def kernel_core(workdir: Path) -> tuple[float, int, int]:
    """The original technique: fork, crash with SIGSEGV in a temp dir, let the kernel write."""
    d = Path(tempfile.mkdtemp(dir=workdir, prefix="kernel-"))
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(d)
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
            with open("/proc/self/coredump_filter", "w") as f:
                f.write("0xff")
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGSEGV})
            os.kill(os.getpid(), signal.SIGSEGV)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    elapsed = time.monotonic() - t0
    cores = list(d.iterdir())
    if not cores:
        return elapsed, -1, -1
    st = cores[0].stat()
    return elapsed, st.st_blocks * 512, st.st_size


def gcore(workdir: Path) -> tuple[float, int, int]:
    exe = shutil.which("gcore")
    if not exe:
        return -1.0, -1, -1
    out = workdir / "gcore"
    t0 = time.monotonic()
    p = subprocess.run([exe, "-o", str(out), str(os.getpid())], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    files = list(workdir.glob("gcore*"))
    if p.returncode != 0 or not files:
        return -1.0, -1, -1
    st = files[0].stat()
    return elapsed, st.st_blocks * 512, st.st_size


def clean(workdir: Path) -> None:
    """Remove this round's files, then let the filesystem settle (unlink + discard of GBs
    would otherwise slow down whoever writes next)."""
    for f in workdir.iterdir():
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    os.sync()
    time.sleep(1.0)


def worker(args: argparse.Namespace) -> None:
    import gencore

    probe = ctypes.CDLL(args.probe)
    probe.probe_max_gap_ns.restype = ctypes.c_uint64
    probe.bare_fork_ns.restype = ctypes.c_uint64
    workdir = Path(args.dir)
    size = args.size << 20
    blob = bytearray(b"\x5a") * size  # resident, non-zero anonymous memory
    stop = threading.Event()
    threads: list[threading.Thread] = []
    probe.probe_start()
    results = []
    for n in args.threads:
        while len(threads) < n - 1:
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            threads.append(t)
        clean(workdir)
        forks = sorted(probe.bare_fork_ns() / 1e6 for _ in range(5))
        # the probe's own noise floor over a quiet window
        probe.probe_reset()
        time.sleep(0.3)
        idle_gap = probe.probe_max_gap_ns() / 1e6
        runs = []
        for _ in range(args.repeat):
            probe.probe_reset()
            fut = gencore.start_core(workdir)  # returns once the threads run again
            time.sleep(0.05)
            stall = probe.probe_max_gap_ns() / 1e6
            p = fut.result()
            st = os.stat(p)
            r = p.report
            runs.append(
                {
                    "probe_stall_ms": stall,
                    "pause_ms": r.pause_s * 1e3,
                    "freeze_ms": r.freeze_s * 1e3,
                    "fork_ms": r.fork_s * 1e3,
                    "publish_s": r.elapsed_s,
                    "blocks": st.st_blocks * 512,
                    "size": st.st_size,
                    "threads": len(r.threads),
                }
            )
            clean(workdir)
        k_time, k_blocks, k_size = kernel_core(workdir)
        clean(workdir)
        g_time, g_blocks, g_size = gcore(workdir) if args.gcore else (-1.0, -1, -1)
        best = min(runs, key=lambda x: x["publish_s"])
        results.append(
            {
                "rss_mib": args.size,
                "threads": best["threads"],
                "bare_fork_ms": statistics.median(forks),
                "probe_idle_gap_ms": idle_gap,
                "gencore": runs,
                "kernel": {"publish_s": k_time, "blocks": k_blocks, "size": k_size},
                "gcore": {"publish_s": g_time, "blocks": g_blocks, "size": g_size},
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        clean(workdir)
    stop.set()
    probe.probe_stop()
    del blob
    print(json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--threads", default="1,16,64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where cores are written (default: a temp dir)")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--no-gcore", dest="gcore", action="store_false")
    ap.add_argument(
        "--prewarm",
        type=int,
        default=12,
        help="GiB of memory to touch once first: on VMs whose host backs guest "
        "memory lazily, first-touch page faults would otherwise dominate",
    )
    ap.add_argument("--worker-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = [int(x) for x in str(args.threads).split(",")]
    if args.worker_size:
        args.size = args.worker_size
        worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = build_probe(out)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="gencore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.prewarm:
        print(f"prewarming {args.prewarm} GiB ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-c", f"b = bytearray(b'\\1') * ({args.prewarm} << 30)"], check=True
        )
    all_results = []
    for size in [int(x) for x in args.sizes.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--worker-size",
            str(size),
            "--probe",
            probe,
            "--dir",
            str(workdir),
            "--threads",
            ",".join(map(str, args.threads)),
            "--repeat",
            str(args.repeat),
        ] + ([] if args.gcore else ["--no-gcore"])
        print(f"RSS {size} MiB ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        all_results += json.loads(p.stdout)
    meta = {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": all_results}, indent=1))
    print(f"wrote {out / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
