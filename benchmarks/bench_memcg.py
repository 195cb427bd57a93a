"""What a core costs a memory cgroup: the group's peak usage during a dump, over the
application's own, with the snapshot child's page cache bounded (flushed and dropped as it
writes, the child's copy of written memory let go) and unbounded, side by side.

A 400 MiB process in a 1 GiB group (as in the issue): the unbounded core's page cache is
charged to the group, the bounded one's is not. Needs root (it makes a cgroup).

    python benchmarks/bench_memcg.py [--size-mib 400] [--limit-mib 1024] [--runs 3]
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

import gencore._procfs as procfs

PROGRAM = r"""
import json, os, sys, time
import gencore
size, directory, peak_file, reset = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ballast = bytearray(os.urandom(1 << 20) * size)   # resident, incompressible
time.sleep(0.2)
def usage():
    name = "memory.current" if reset == "v2" else "memory.usage_in_bytes"
    with open(peak_file.rsplit("/", 1)[0] + "/" + name) as f:
        return int(f.read())
def reset_peak():
    with open(peak_file, "w") as f:
        f.write("0" if reset == "v1" else "reset")
def peak():
    with open(peak_file) as f:
        return int(f.read())
reset_peak()
own = max(usage(), peak())
t0 = time.monotonic()
path = gencore.create_core(directory, python_stacks=False)
dt = time.monotonic() - t0
print(json.dumps({"own": own, "peak": peak(), "seconds": dt, "size": os.stat(path).st_size,
                  "memory": gencore.open_core(path).capture.get("memory")}))
os.unlink(path)
"""


def make_group(limit: int) -> tuple[Path, str, str]:
    mounts = procfs.cgroup_mounts()
    if "v1" in mounts:
        base = Path(mounts["v1"][1])
        own = next(p for v, p in procfs.cgroup_dirs() if v == "v1")
        d = Path(own) / f"gencore-bench-{os.getpid()}"
        d.mkdir()
        (d / "memory.limit_in_bytes").write_text(str(limit))
        return d, str(d / "memory.max_usage_in_bytes"), "v1"
    base = Path(mounts["v2"][1])
    d = base / f"gencore-bench-{os.getpid()}"
    d.mkdir()
    (d / "memory.max").write_text(str(limit))
    return d, str(d / "memory.peak"), "v2"


def one(group: Path, peak_file: str, version: str, size: int, mode: str, tmp: str) -> dict:
    def enter() -> None:
        (group / "cgroup.procs").write_text("0")

    env = dict(os.environ, GENCORE_PAGE_CACHE=mode)
    r = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(size), tmp, peak_file, version],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=enter,
        timeout=600,
    )
    if r.returncode != 0:
        raise SystemExit(f"the {mode} run failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=400)
    ap.add_argument("--limit-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    group, peak_file, version = make_group(a.limit_mib << 20)
    print(
        f"page size {os.sysconf('SC_PAGE_SIZE')} bytes; cgroup {version} limit "
        f"{a.limit_mib} MiB; a {a.size_mib} MiB process"
    )
    results: dict[str, list[dict]] = {"auto": [], "unbounded": []}
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
            for _ in range(a.runs):
                for mode in results:  # interleaved: the machine's noise hits both alike
                    results[mode].append(one(group, peak_file, version, a.size_mib, mode, tmp))
                    time.sleep(0.5)
    finally:
        time.sleep(0.5)
        group.rmdir()
    print(f"{'page cache':<12} {'rise over own (MiB)':>20} {'seconds':>8}  bounded")
    for mode, runs in results.items():
        rise = statistics.median((r["peak"] - r["own"]) / (1 << 20) for r in runs)
        secs = statistics.median(r["seconds"] for r in runs)
        bounded = {bool((r["memory"] or {}).get("bounded_page_cache")) for r in runs}
        print(f"{mode:<12} {rise:>20.1f} {secs:>8.2f}  {sorted(bounded)}")
    b = statistics.median((r["peak"] - r["own"]) for r in results["auto"])
    u = statistics.median((r["peak"] - r["own"]) for r in results["unbounded"])
    print(f"bounded/unbounded rise: {b / u:.3f}" if u else "unbounded rise is 0")


if __name__ == "__main__":
    main()
