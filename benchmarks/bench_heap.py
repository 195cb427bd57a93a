"""The heap census: speed and memory of the reader, and accuracy against the process itself.

    python benchmarks/bench_heap.py [--objects 1000000] [--large] [--python PY ...]

Speed: a program holding --objects instances of its own class (each GC-tracked, with an int
and a shared str attribute) dumps itself with create_core; ``gencore heap`` censuses the core
in a fresh process while a sampler reads its anonymous resident memory (RssAnon, which leaves
out the mapped core's page cache). Targets: 1,000,000 tracked objects in at most 10 s,
10,000,000 (--large) in at most 100 s; reader memory at most 10% of the core's size.

Accuracy, per interpreter (--python, default this one): a web-app-like program (users with
dict attributes, sessions, request logs as lists of tuples and strs, a cache dict, a 20 MB
bytearray buffer) counts, right before its core, every object gc.get_objects() returns and
the untracked objects they refer to, and what those refer to (gc.get_referents, plus the keys
of dicts, which it leaves out), with sys.getsizeof sums per type.
The census is printed next to it: count ratio (census / process) and bytes ratio for the
main types, and the share of the core's anonymous memory the census attributes to objects.

Results go to OUT/heap.json and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

SPEED_PROGRAM = textwrap.dedent(
    """
    import sys, gencore
    class Item:
        def __init__(self, i):
            self.n = i
            self.tag = "t"
    items = [Item(i) for i in range(int(sys.argv[2]))]
    print(gencore.create_core(sys.argv[1]))
    """
)

ACCURACY_PROGRAM = textwrap.dedent(
    """
    import gc, json, sys, gencore
    class User:
        def __init__(self, i):
            self.id = i
            self.name = f"user-{i}"
            self.email = f"user{i}@example.com"
            self.score = i * 1.5
            self.tags = ["a", "b", str(i % 10)]
    class Session:
        __slots__ = ("user", "token", "started")
        def __init__(self, user, i):
            self.user, self.token, self.started = user, f"tok-{i:08x}", 1.7e9 + i
    users = [User(i) for i in range(20000)]
    sessions = {s.token: s for s in (Session(users[i % 20000], i) for i in range(30000))}
    log = [("GET", f"/api/items/{i}", 200, i * 0.001) for i in range(50000)]
    cache = {f"key-{i}": {"value": i, "blob": b"x" * 64} for i in range(10000)}
    buffer = bytearray(20 * 1024 * 1024)

    def name(t):
        return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"

    counts, sizes, seen = {}, {}, set()
    def add(o):
        n = name(type(o))
        counts[n] = counts.get(n, 0) + 1
        sizes[n] = sizes.get(n, 0) + sys.getsizeof(o)
    objs = gc.get_objects()
    mine = {id(counts), id(sizes), id(seen), id(objs)}  # the truth's own bookkeeping
    for o in objs:
        seen.add(id(o))
    for o in objs:
        if id(o) in mine:
            continue
        add(o)
        todo = [o]
        while todo:  # into untracked containers too (atomic tuples and dicts)
            refs = gc.get_referents(x := todo.pop())
            if type(x) is dict:
                refs += list(x)  # get_referents leaves out the str keys of dicts
            for r in refs:
                if id(r) not in seen and not gc.is_tracked(r):
                    seen.add(id(r))
                    add(r)
                    todo.append(r)
    del objs, seen, o, r, x, refs, todo  # the truth's bookkeeping is not left to count
    truth = {"counts": counts, "sizes": sizes}
    path = gencore.create_core(sys.argv[1])
    print(json.dumps({"core": str(path), "truth": truth}))
    """
)

MAIN_TYPES = [
    "__main__.User",
    "__main__.Session",
    "dict",
    "list",
    "tuple",
    "str",
    "int",
    "float",
    "bytes",
    "bytearray",
    "function",
    "type",
    "code",
]


def rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def census(core: str) -> tuple[dict, float, int]:
    """gencore heap --json in a fresh process: (document, seconds, peak RssAnon bytes)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "gencore", "heap", "--json", core],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_anon(p.pid))
            time.sleep(0.02)

    th = threading.Thread(target=sample)
    th.start()
    out, err = p.communicate()
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"gencore heap failed: {err}")
    return json.loads(out), elapsed, peak


def run_program(python: str, source: str, directory: str, *args: str) -> str:
    prog = Path(directory) / "program.py"
    prog.write_text(source)
    p = subprocess.run(
        [python, str(prog), directory, *args], capture_output=True, text=True, timeout=3600
    )
    if p.returncode != 0:
        raise SystemExit(f"{python}: {p.stderr}")
    return p.stdout.strip().splitlines()[-1]


def page_size_note() -> str:
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = "unknown"
    return f"page size {os.sysconf('SC_PAGE_SIZE')}, transparent huge pages: {thp}"


def speed(python: str, n: int, out: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="gencore-bench-heap-") as d:
        core = run_program(python, SPEED_PROGRAM, d, str(n))
        size = os.path.getsize(core)
        doc, elapsed, peak = census(core)
        items = next((t for t in doc["types"] if t["type"] == "__main__.Item"), {"count": 0})
        row = {
            "objects_asked": n,
            "tracked": doc["tracked"],
            "objects": doc["objects"],
            "items_counted": items["count"],
            "core_bytes": size,
            "seconds": round(elapsed, 2),
            "seconds_per_million_tracked": round(elapsed / max(doc["tracked"], 1) * 1e6, 2),
            "reader_rss_anon_bytes": peak,
            "reader_memory_share_of_core": round(peak / size, 4),
        }
        out.setdefault("speed", []).append(row)
        print(
            f"{n:>11,} objects asked  {doc['tracked']:>11,} tracked  {doc['objects']:>11,} in all"
            f"  core {size / 2**20:8.1f} MiB  census {elapsed:6.2f} s"
            f"  reader {peak / 2**20:6.1f} MiB ({100 * peak / size:.1f}% of the core)"
            f"  Items counted {items['count']:,}"
        )


def accuracy(python: str, out: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="gencore-bench-heap-") as d:
        res = json.loads(run_program(python, ACCURACY_PROGRAM, d))
        doc, _, _ = census(res["core"])
    truth = res["truth"]
    got = {t["type"]: t for t in doc["types"]}
    rows = []
    for name in MAIN_TYPES:
        tc, ts = truth["counts"].get(name, 0), truth["sizes"].get(name, 0)
        g = got.get(name, {"count": 0, "bytes": 0})
        rows.append(
            {
                "type": name,
                "process_count": tc,
                "census_count": g["count"],
                "count_ratio": round(g["count"] / tc, 4) if tc else None,
                "process_bytes": ts,
                "census_bytes": g["bytes"],
                "bytes_ratio": round(g["bytes"] / ts, 4) if ts else None,
            }
        )
    version = doc["python"]
    share = doc["bytes"] / doc["anon_bytes"] if doc["anon_bytes"] else 0.0
    out.setdefault("accuracy", []).append(
        {
            "python": version,
            "types": rows,
            "attributed_share": round(share, 4),
            "census_bytes": doc["bytes"],
            "anon_bytes": doc["anon_bytes"],
        }
    )
    print(
        f"\nPython {version}: census attributes {doc['bytes'] / 2**20:.1f} MiB of "
        f"{doc['anon_bytes'] / 2**20:.1f} MiB anonymous memory ({100 * share:.0f}%)"
    )
    print(
        f"  {'type':<18} {'process':>10} {'census':>10} {'ratio':>7}"
        f" {'getsizeof':>12} {'census':>12} {'ratio':>7}"
    )
    for r in rows:
        cr = f"{r['count_ratio']:.3f}" if r["count_ratio"] is not None else "-"
        br = f"{r['bytes_ratio']:.3f}" if r["bytes_ratio"] is not None else "-"
        print(
            f"  {r['type']:<18} {r['process_count']:>10,} {r['census_count']:>10,} {cr:>7}"
            f" {r['process_bytes']:>12,} {r['census_bytes']:>12,} {br:>7}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--large", action="store_true", help="also 10,000,000 objects")
    ap.add_argument("--accuracy-only", action="store_true", help="skip the speed runs")
    ap.add_argument(
        "--python",
        nargs="*",
        default=[sys.executable],
        help="interpreters for the accuracy table (each needs gencore installed)",
    )
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args()
    out: dict = {"machine": page_size_note(), "reader": sys.version.split()[0]}
    print(out["machine"])
    if not args.accuracy_only:
        speed(sys.executable, 0, out)  # the reader's own floor: interpreter, modules, marks
        speed(sys.executable, args.objects, out)
    if args.large and not args.accuracy_only:
        speed(sys.executable, 10_000_000, out)
    for py in args.python:
        accuracy(py, out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "heap.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
