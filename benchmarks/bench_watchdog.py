"""The watchdog's cost and its detection latency.

    python benchmarks/bench_watchdog.py [--seconds 3] [--repeat 9] [--latency-runs 10]

Overhead: a CPU-bound loop (pure Python, one thread, and the same with two threads) and an
asyncio request loop (gather of 200 small coroutines per round) each run for --seconds in a
fresh process, with and without ``install(signals=(), hang_timeout=5, heartbeat_timeout=5,
rss_limit="90%")``; the two run at the same time, so both see the same moment of the
machine. The ratio is the median over the pairs of throughput with the watchdog over
throughput without, per wall second and per CPU second of the whole process (its threads,
the watchdog's and the probes' included).

Latency: a program under ``hang_timeout=2`` holds the GIL in C (``hang: gil``) or blocks its
asyncio loop with time.sleep (``hang: loop``); the latency is the capture time stamped in the
core's note minus the moment the stall began. Target: at most hang_timeout + 1 s.

Results go to OUT/watchdog.json and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
WATCH = dict(signals=(), hang_timeout=5, heartbeat_timeout=5, rss_limit="90%")


def work_cpu(seconds: float, threads: int) -> float:
    import threading

    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def spin(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            for _ in range(200):
                sum(j * j for j in range(50))
            n += 200
        counts[i] = n

    ts = [threading.Thread(target=spin, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def work_asyncio(seconds: float) -> float:
    import asyncio

    import gencore

    async def request(i: int) -> int:
        await asyncio.sleep(0)
        return sum(range(i % 64))

    async def serve() -> int:
        done = 0
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            await asyncio.gather(*(request(i) for i in range(200)))
            gencore.heartbeat()
            done += 200
        return done

    return asyncio.run(serve()) / seconds


def worker(args: argparse.Namespace) -> None:
    import gencore

    if args.watch:
        gencore.install(directory=tempfile.gettempdir(), **WATCH)
    cpu0 = time.process_time()  # every thread of the process: the watchdog's and probes' too
    if args.worker == "cpu":
        rate = work_cpu(args.seconds, 1)
    elif args.worker == "cpu2":
        rate = work_cpu(args.seconds, 2)
    else:
        rate = work_asyncio(args.seconds)
    cpu = time.process_time() - cpu0
    probes = gencore.installed().counters["probes"] if args.watch else 0
    own = helper_cpu_seconds() / args.seconds if args.watch else 0.0
    print(
        json.dumps(
            {"rate": rate, "per_cpu": rate * args.seconds / cpu, "probes": probes, "own": own}
        )
    )


def helper_cpu_seconds() -> float:
    """CPU time of gencore's native thread (named "gencore") since it started, from the
    scheduler's nanosecond count (schedstat)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            if Path(f"/proc/self/task/{tid}/comm").read_text().strip() != "gencore":
                continue
            return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9
        except OSError:
            continue
    return 0.0


def overhead(args: argparse.Namespace) -> list[dict]:
    """Each repeat runs the two processes at the same time (one per CPU on this 2-CPU
    machine), so they see the same moment of a shared, noisy machine; the ratio of each pair
    is taken, then the median of the pairs."""
    rows = []
    for kind in ("cpu", "cpu2", "asyncio"):
        cmd = [sys.executable, __file__, "--worker", kind, "--seconds", str(args.seconds)]
        pairs: list[dict[bool, dict]] = []
        for _ in range(args.repeat):
            procs = {
                watch: subprocess.Popen(
                    cmd + (["--watch"] if watch else []), stdout=subprocess.PIPE, text=True
                )
                for watch in (False, True)
            }
            pairs.append({w: json.loads(p.communicate()[0]) for w, p in procs.items()})
        rows.append(
            {
                "workload": kind,
                "without": statistics.median(p[False]["rate"] for p in pairs),
                "with": statistics.median(p[True]["rate"] for p in pairs),
                "ratio": statistics.median(p[True]["rate"] / p[False]["rate"] for p in pairs),
                "cpu_ratio": statistics.median(
                    p[True]["per_cpu"] / p[False]["per_cpu"] for p in pairs
                ),
                "probes": statistics.median(p[True]["probes"] for p in pairs),
                "own_ms_per_s": 1000 * statistics.median(p[True]["own"] for p in pairs),
            }
        )
    return rows


LATENCY_PROGRAM = r"""
import asyncio, ctypes, json, sys, time
import gencore
gencore.install(directory=sys.argv[2], signals=(), hang_timeout=2)
mode = sys.argv[1]
time.sleep(0.5)
class T(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
if mode == "gil":
    libc = ctypes.PyDLL(None)
    m = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(m, None)
    libc.pthread_mutex_lock(m)
    start = time.time()
    until = start + 5
    libc.pthread_mutex_timedlock(m, ctypes.byref(T(int(until), int(until % 1 * 1e9))))
else:
    async def main():
        global start
        await asyncio.sleep(0.2)
        start = time.time()
        time.sleep(5)
    asyncio.run(main())
time.sleep(0.5)
print(json.dumps({"start": start}))
"""


def latency(args: argparse.Namespace) -> list[dict]:
    sys.path.insert(0, str(HERE.parent / "src"))
    import gencore

    rows = []
    for mode, reason in (("gil", "hang: gil"), ("loop", "hang: loop")):
        lat = []
        for _ in range(args.latency_runs):
            with tempfile.TemporaryDirectory() as d:
                out = subprocess.run(
                    [sys.executable, "-c", LATENCY_PROGRAM, mode, d],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                start = json.loads(out)["start"]
                (core,) = Path(d).glob("*.core")
                with gencore.open_core(core) as c:
                    assert c.metadata["reason"] == reason
                    lat.append(c.metadata["time"] - start)
        rows.append(
            {
                "stall": reason,
                "median_s": statistics.median(lat),
                "max_s": max(lat),
                "runs": len(lat),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=("cpu", "cpu2", "asyncio"))
    ap.add_argument("--watch", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--latency-runs", type=int, default=10)
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "overhead": overhead(args),
        "latency": latency(args),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "watchdog.json").write_text(json.dumps(result, indent=1))
    print(
        "| workload | without, per s | with the watchdog, per s | ratio | ratio per CPU s "
        "| GIL probes | gencore thread CPU ms/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in result["overhead"]:
        print(
            f"| {r['workload']} | {r['without']:.0f} | {r['with']:.0f} | {r['ratio']:.3f} | "
            f"{r['cpu_ratio']:.3f} | {r['probes']:.0f} | {r['own_ms_per_s']:.2f} |"
        )
    print()
    print("| stall | median latency s | worst s | runs |")
    print("|---|---:|---:|---:|")
    for r in result["latency"]:
        print(f"| {r['stall']} | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['runs']} |")


if __name__ == "__main__":
    main()
