"""Compressed and capped cores, side by side with plain cores and the kernel's, in one run.

    python benchmarks/bench_compress.py [--gib 1 4] [--threads 2 17] [--cap 64M]

For each size and thread count, one program holds SIZE of heap (a quarter random bytes, the
rest repetitive text, like a service's caches and buffers) plus THREADS-1 idle threads, and
takes, in turn and each into an empty directory:

- ``plain``: ``create_core()``;
- ``zstd``: ``create_core(compress="zstd")``;
- ``capped``: ``create_core(max_size=CAP)``;
- ``kernel``: ``create_core(method="kernel")``, the kernel's own plain core of a forked copy
  of the calling thread (the original technique);
- ``fork``: a bare ``os.fork()`` + ``_exit`` of the same process (the pause's physical limit).

It reports, per core: the file size (and its ratio to the plain core), the time until the
core is published, the application's pause (freeze + fork), and for ``zstd`` the CPU time of
the snapshot child and its compressor (from the child's rusage as the process's children).
The page size of the heap (transparent huge pages or not) is printed with each row.
Results go to OUT/compress.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import json, os, resource, shutil, sys, threading, time
    import gencore

    gib, nthreads, cap, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    size = int(gib * (1 << 30))
    text = (b"GET /api/v1/orders?customer=%08d HTTP/1.1 200 OK cache-hit " * 20000)[: 1 << 20]
    heap = []
    for i in range(size >> 20):
        heap.append(os.urandom(1 << 20) if i % 4 == 0 else bytearray(text))  # a copy each
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(nthreads - 1)]
    for t in threads:
        t.start()

    def thp():
        try:
            with open("/proc/self/smaps_rollup") as f:
                for line in f:
                    if line.startswith("AnonHugePages:"):
                        return int(line.split()[1]) > 0
        except OSError:
            pass
        return False

    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    rows = {}
    for kind, kw in (
        ("plain", {}),
        ("zstd", {"compress": "zstd"}),
        ("capped", {"max_size": cap}),
        ("kernel", {"method": "kernel"}),
    ):
        d = os.path.join(out, kind)
        os.mkdir(d)
        cpu0 = children_cpu()
        t0 = time.monotonic()
        p = gencore.create_core(d, **kw)
        elapsed = time.monotonic() - t0
        rows[kind] = {
            "file_size": os.path.getsize(p),
            "elapsed_s": elapsed,
            "pause_s": p.report.pause_s,
            "child_cpu_s": children_cpu() - cpu0,
        }
        shutil.rmtree(d)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    rows["fork"] = {"pause_s": time.monotonic() - t0}
    os.waitpid(pid, 0)
    rows["huge_pages"] = thp()
    print(json.dumps(rows))
    """
)


def one(gib: float, threads: int, cap: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gencore-bench-compress-", dir="/var/tmp") as out:
        p = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(gib), str(threads), cap, out],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if p.returncode != 0:
        raise SystemExit(f"benchmark program failed:\n{p.stderr}")
    rows: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 17])
    ap.add_argument("--cap", default="64M")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    hdr = (
        f"{'heap':>6} {'thr':>4} {'core':>7} {'size MiB':>9} {'×plain':>7} {'done s':>7} "
        f"{'×kernel':>8} {'pause ms':>9} {'child CPU s':>12} {'THP':>4}"
    )
    print(hdr)
    for gib in args.gib:
        for threads in args.threads:
            rows = one(gib, threads, args.cap)
            results.append({"gib": gib, "threads": threads, **rows})
            plain, kernel = rows["plain"], rows["kernel"]
            assert isinstance(plain, dict) and isinstance(kernel, dict)
            for kind in ("plain", "zstd", "capped", "kernel"):
                r = rows[kind]
                assert isinstance(r, dict)
                print(
                    f"{gib:>5g}G {threads:>4} {kind:>7} {r['file_size'] / 2**20:>9.1f} "
                    f"{r['file_size'] / plain['file_size']:>7.3f} {r['elapsed_s']:>7.2f} "
                    f"{r['elapsed_s'] / kernel['elapsed_s']:>8.2f} {r['pause_s'] * 1e3:>9.1f} "
                    f"{r['child_cpu_s']:>12.2f} {'yes' if rows['huge_pages'] else 'no':>4}"
                )
            fork = rows["fork"]
            assert isinstance(fork, dict)
            print(
                f"{gib:>5g}G {threads:>4} {'fork':>7} {'':>9} {'':>7} {'':>7} {'':>8} "
                f"{fork['pause_s'] * 1e3:>9.1f}"
            )
    (args.out / "compress.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
