"""The heap: speed and memory of the reader, and accuracy against the process itself.

    python benchmarks/bench_heap.py [--instances 1000000] [--large] [--python PY ...]

Speed, side by side in one run: a program holding --instances instances of its own class,
each with an int, a float, a str, a list and a tuple (about 6 objects per instance), measures
what the process itself needs to count its objects by type and size them,
``Counter(type(o) for o in gc.get_objects())`` plus ``sys.getsizeof`` over the same objects,
then dumps itself with create_core. The reader then answers, each in a fresh process (wall
time, and the peak anonymous resident memory, RssAnon, which leaves out the mapped core's page
cache): the census (``gencore heap --json``), ``--retained``, ``--suspects`` and
``--duplicates``; and, in one process through the API, the census and ``retained()`` alone
(without the interpreter's start-up). Targets: census at most 2x the in-process count,
``--retained`` at most 3x the census, reader RssAnon at most 15% of the core.

Accuracy, per interpreter (--python, default this one): a web-app-like program (users with
dict attributes, sessions, request logs as lists of tuples and strs, a cache dict, a 20 MB
bytearray) counts, right before its core, every object gc.get_objects() returns and the
untracked objects they refer to, and what those refer to (gc.get_referents, plus the keys
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
    import collections, gc, json, sys, time, gencore
    class Item:
        def __init__(self, i):
            self.n = i
            self.price = i * 0.5
            self.name = f"item-{i}"
            self.tags = [i, "t"]
            self.pair = (i, self.name)
    items = [Item(i) for i in range(int(sys.argv[2]))]
    gc.collect()
    t0 = time.perf_counter()
    objs = gc.get_objects()
    by_type = collections.Counter(type(o) for o in objs)
    total = sum(map(sys.getsizeof, objs))
    count_s = time.perf_counter() - t0
    del objs, by_type
    path = gencore.create_core(sys.argv[1])
    print(json.dumps({"core": str(path), "count_s": count_s}))
    """
)

API_PROGRAM = textwrap.dedent(
    """
    import json, sys, time, gencore
    with gencore.open_core(sys.argv[1]) as core:
        t0 = time.perf_counter()
        c = core.heap(engine=sys.argv[2])
        t1 = time.perf_counter()
        r = c.retained(top=10)
        t2 = time.perf_counter()
    print(json.dumps({"census_s": t1 - t0, "retained_s": t2 - t1, "objects": c.objects}))
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


def measure(cmd: list[str], env: dict | None = None) -> tuple[str, float, int]:
    """Run cmd: (stdout, seconds, peak RssAnon bytes, sampled every 10 ms)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_anon(p.pid))
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    th.start()
    out, err = p.communicate()
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{cmd}: {err}")
    return out, elapsed, peak


def census(core: str) -> tuple[dict, float, int]:
    """gencore heap --json in a fresh process: (document, seconds, peak RssAnon bytes)."""
    out, elapsed, peak = measure([sys.executable, "-m", "gencore", "heap", "--json", core])
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
        prog = json.loads(run_program(python, SPEED_PROGRAM, d, str(n)))
        core = prog["core"]
        size = os.path.getsize(core)
        doc, census_s, census_rss = census(core)
        row: dict = {
            "instances": n,
            "objects": doc["objects"],
            "tracked": doc["tracked"],
            "core_bytes": size,
            "in_process_count_s": round(prog["count_s"], 3),
            "census_s": round(census_s, 3),
            "census_rss_anon": census_rss,
        }
        heap = [sys.executable, "-m", "gencore", "heap", core, "--json"]
        for name in ("retained", "suspects", "duplicates"):
            _, secs, rss = measure([*heap, f"--{name}"])
            row[f"{name}_s"], row[f"{name}_rss_anon"] = round(secs, 3), rss
        # the heap-sized arrays in anonymous memory instead of temporary file mappings
        _, secs, rss = measure([*heap, "--retained"], {"GENCORE_HEAP_SCRATCH": "memory"})
        row["retained_in_memory_s"], row["retained_in_memory_rss_anon"] = round(secs, 3), rss
        for engine in ("native", "pure") if n <= 200_000 else ("native",):
            api, _, _ = measure([sys.executable, "-c", API_PROGRAM, core, engine])
            t = json.loads(api)
            row[f"api_{engine}_census_s"] = round(t["census_s"], 3)
            row[f"api_{engine}_retained_s"] = round(t["retained_s"], 3)
        count = max(prog["count_s"], 1e-9)
        row["census_over_count"] = round(census_s / count, 2)
        row["api_census_over_count"] = round(row["api_native_census_s"] / count, 2)
        row["retained_over_census"] = round(row["retained_s"] / census_s, 2)
        row["api_retained_over_census"] = round(
            (row["api_native_census_s"] + row["api_native_retained_s"])
            / max(row["api_native_census_s"], 1e-9),
            2,
        )
        peak = max(row[k] for k in row if k.endswith("rss_anon") and "in_memory" not in k)
        row["peak_rss_anon_share_of_core"] = round(peak / size, 4)
        out.setdefault("speed", []).append(row)
        print(
            f"{n:>11,} instances {doc['objects']:>11,} objects  core {size / 2**20:8.1f} MiB"
            f"  in-process count {prog['count_s']:6.2f} s  census {census_s:6.2f} s"
            f" ({row['census_over_count']}x; API {row['api_native_census_s']:.2f} s,"
            f" {row['api_census_over_count']}x)\n"
            f"{'':>12} --retained {row['retained_s']:6.2f} s ({row['retained_over_census']}x"
            f" the census; API {row['api_retained_over_census']}x)  --suspects"
            f" {row['suspects_s']:6.2f} s  --duplicates {row['duplicates_s']:6.2f} s\n"
            f"{'':>12} RssAnon: census {census_rss / 2**20:6.1f} MiB, --retained"
            f" {row['retained_rss_anon'] / 2**20:6.1f} MiB"
            f" ({100 * row['retained_rss_anon'] / size:.1f}% of the core),"
            f" --suspects {row['suspects_rss_anon'] / 2**20:6.1f} MiB,"
            f" --duplicates {row['duplicates_rss_anon'] / 2**20:6.1f} MiB;"
            f" --retained with its arrays in anonymous memory"
            f" {row['retained_in_memory_rss_anon'] / 2**20:6.1f} MiB"
            f" ({100 * row['retained_in_memory_rss_anon'] / size:.1f}%)"
        )
        if "api_pure_census_s" in row:
            print(
                f"{'':>12} pure engine (API): census {row['api_pure_census_s']:.2f} s,"
                f" retained {row['api_pure_retained_s']:.2f} s"
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
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--large", action="store_true", help="also 10,000,000 instances")
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
        speed(sys.executable, 100_000, out)  # small: the pure engine too
        speed(sys.executable, args.instances, out)
    if args.large and not args.accuracy_only:
        speed(sys.executable, 10_000_000, out)
    for py in args.python:
        accuracy(py, out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "heap.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
