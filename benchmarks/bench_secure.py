"""Redacted and encrypted cores, side by side with plain ones of the same process, in one run.

    python benchmarks/bench_secure.py [--gib 2] [--rounds 3]

One program holds GIB of heap, half in small objects (a service's cache of records: dicts
of short strings, bytes and ints, about 3 million objects per GiB) and half in 1 MiB
buffers (bytes and bytearrays, a quarter random), and takes, in rounds, one core of each
kind into an empty directory (each removed before the next):

- ``plain``: ``create_core()``;
- ``redact``: ``create_core(redact=True)``;
- ``encrypt``: ``create_core(encrypt_to=KEY)`` (an age X25519 key made for the run);
- ``redact+encrypt``: both.

It reports, per kind, the median time until the core is published and its ratio to the
plain core's in the same round (the goals: redaction at most 1.20, encryption at most
1.10), the file size, the application's pause (freeze + fork; the goal: unchanged, one
fork) and the CPU time of the snapshot child and its filter. Rows also go to
OUT/secure.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import json, os, resource, shutil, sys, time
    import pyrage
    import gencore

    gib, rounds, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    half = int(gib * (1 << 30)) // 2
    records = []
    used = 0
    i = 0
    while used < half:  # about 350 bytes per record
        rec = {
            "id": i,
            "user": "user%08d@example.com" % i,
            "token": os.urandom(12).hex(),
            "path": "/api/v1/orders/%d/items" % (i * 7),
            "body": b"x" * (i % 64),
        }
        records.append(rec)
        used += 350
        i += 1
    text = (b"GET /api/v1/orders?customer=%08d HTTP/1.1 200 OK cache-hit " * 20000)[: 1 << 20]
    buffers = [
        os.urandom(1 << 20) if k % 4 == 0 else bytearray(text) for k in range(half >> 20)
    ]
    key = str(pyrage.x25519.Identity.generate().to_public())

    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    kinds = (
        ("plain", {}),
        ("redact", {"redact": True}),
        ("encrypt", {"encrypt_to": key}),
        ("redact+encrypt", {"redact": True, "encrypt_to": key}),
    )
    rows = {k: [] for k, _ in kinds}
    for r in range(rounds):
        for kind, kw in kinds:
            d = os.path.join(out, kind)
            os.mkdir(d)
            cpu0 = children_cpu()
            t0 = time.monotonic()
            p = gencore.create_core(d, **kw)
            done, size = time.monotonic() - t0, os.path.getsize(p)
            rows[kind].append(dict(elapsed_s=done, file_size=size, pause_s=p.report.pause_s,
                                   child_cpu_s=children_cpu() - cpu0))
            shutil.rmtree(d)

    def bare_fork():  # the pause's physical limit
        start = time.monotonic()
        child = os.fork()
        if not child:
            os._exit(0)
        took = time.monotonic() - start
        os.waitpid(child, 0)
        return took

    fork_s = bare_fork()
    with open("/proc/self/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) << 10
    print(json.dumps({"rows": rows, "fork_s": fork_s, "rss": rss, "records": len(records)}))
    """
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gencore-bench-secure-", dir="/var/tmp") as out:
        p = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(args.gib), str(args.rounds), out],
            capture_output=True,
            text=True,
            timeout=7200,
        )
    if p.returncode != 0:
        raise SystemExit(f"benchmark program failed:\n{p.stderr}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rows = res["rows"]
    print(
        f"process: {res['rss'] / 2**30:.2f} GiB resident, {res['records']} records; "
        f"bare fork {res['fork_s'] * 1e3:.1f} ms"
    )
    print(
        f"{'core':>15} {'done s':>7} {'× plain':>8} {'size MiB':>9} {'pause ms':>9} "
        f"{'child CPU s':>12}"
    )
    plain = rows["plain"]
    for kind, runs in rows.items():
        ratios = [r["elapsed_s"] / p["elapsed_s"] for r, p in zip(runs, plain)]
        print(
            f"{kind:>15} {statistics.median(r['elapsed_s'] for r in runs):>7.2f} "
            f"{statistics.median(ratios):>8.3f} "
            f"{statistics.median(r['file_size'] for r in runs) / 2**20:>9.1f} "
            f"{statistics.median(r['pause_s'] for r in runs) * 1e3:>9.1f} "
            f"{statistics.median(r['child_cpu_s'] for r in runs):>12.2f}"
        )
    (args.out / "secure.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
