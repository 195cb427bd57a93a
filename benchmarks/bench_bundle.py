"""Bundling a core: time and size with tar.gz, tar.zst and the original `tar -czf` in a shell.

    python benchmarks/bench_bundle.py [--rss-mib 1024] [--dir DIR] [--repeat 2]

A worker process fills --rss-mib of memory (a quarter random bytes, the rest repetitive
records, like a heap), starts 4 threads, writes one core with gencore, then bundles that same
core three ways, side by side:

  gencore tar.gz   bundle_core(format="tar.gz")   (helper process, gzip level 1)
  gencore tar.zst  bundle_core(format="tar.zst")  (helper process, zstd level 3, all cores)
  original         tar -czf through /bin/sh, as the original collectCore did (gzip level 6)

For each it reports the wall time, the archive size and the CPU time the application's own
interpreter spent meanwhile (the work must happen in the helper, so this stays near zero).
Results go to OUT/bundle.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent


def cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process only, not its children


def worker(args: argparse.Namespace) -> None:
    import gencore

    size = args.rss_mib << 20
    rnd = bytearray(os.urandom(size // 4))
    record = b"".join(b"user=%08d status=active balance=%010d;" % (i, i * 37) for i in range(4096))
    rest = bytearray(record * ((size - len(rnd)) // len(record)))
    ev = threading.Event()
    for _ in range(4):
        threading.Thread(target=ev.wait, daemon=True).start()
    d = Path(args.dir)
    results = []
    for rep in range(args.repeat):
        core = gencore.create_core(d, name=f"bench_{rep}")
        row = {"core_bytes": core.stat().st_size, "core_blocks": core.stat().st_blocks * 512}
        for fmt in ("tar.gz", "tar.zst"):
            c0, t0 = cpu(), time.monotonic()
            b = gencore.bundle_core(core, format=fmt, keep_core=True)
            row[fmt] = {
                "s": time.monotonic() - t0,
                "app_cpu_s": cpu() - c0,
                "bytes": b.stat().st_size,
                "files": len(b.manifest["files"]),
            }
            files = [str(core)] + [f["path"] for f in b.manifest["files"]]
            b.unlink()
        out = d / f"bench_{rep}.orig.tar.gz"
        c0, t0 = cpu(), time.monotonic()
        subprocess.run(
            f"tar -czf {shlex.quote(str(out))} {' '.join(map(shlex.quote, files))}",
            shell=True,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        row["original"] = {
            "s": time.monotonic() - t0,
            "app_cpu_s": cpu() - c0,
            "bytes": out.stat().st_size,
            "files": len(files) - 1,
        }
        out.unlink()
        core.unlink()
        results.append(row)
        subprocess.run(["sync"])
    del rnd, rest
    print(json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rss-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    d = Path(args.dir or tempfile.mkdtemp(prefix="gencore-bench-bundle-"))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--rss-mib",
        str(args.rss_mib),
        "--dir",
        str(d),
        "--repeat",
        str(args.repeat),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.json").write_text(json.dumps({"rss_mib": args.rss_mib, "rows": rows}, indent=1))

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rows)

    core = statistics.median(r["core_bytes"] for r in rows)
    orig = med("original", "s")
    print(
        f"core of a {args.rss_mib} MiB process: {core / 2**20:.0f} MiB (median of {len(rows)} runs)"
    )
    print(
        f"{'method':<16}{'time':>9}{'vs original':>13}{'size MiB':>10}{'vs core':>9}{'app CPU':>10}"
    )
    for key in ("tar.gz", "tar.zst", "original"):
        s = med(key, "s")
        print(
            f"{'gencore ' + key if key != 'original' else 'tar -czf (sh)':<16}{s:>8.2f}s"
            f"{s / orig:>12.2f}x{med(key, 'bytes') / 2**20:>10.0f}"
            f"{med(key, 'bytes') / core:>9.2f}{med(key, 'app_cpu_s') * 1000:>8.0f}ms"
        )


if __name__ == "__main__":
    main()
