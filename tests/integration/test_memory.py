"""Memory cores that do not cause the OOM kill, and memory.high breaches.

A service in a memory cgroup grows until the OOM killer ends it: the core taken at 85 % of the
limit is complete, readable and published before the kill, and the kill is the service's own.
The snapshot child keeps its page cache bounded and caps the core when the headroom is short
(benchmarks/bench_memcg.py measures the cgroup's peak with and without).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gencore_run_cmd, real_python, run, tool
from test_watchdog import PROGRAM, _memory_cgroup

import gencore

pytestmark = pytest.mark.once  # the native watchdog and the child: no interpreter's layout

MIB = 1 << 20


def _oom_kills(group: Path) -> int:
    for name in ("memory.oom_control", "memory.events"):
        f = group / name
        if f.exists():
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    raise AssertionError(f"no OOM counter in {group}")


@pytest.mark.slow
def test_a_leaking_service_gets_its_core_before_the_oom_killer(tmp_path):
    group, limit_file, procs = _memory_cgroup()
    try:
        (group / limit_file).write_text(str(512 * MIB))
        cmd = gencore_run_cmd(PROGRAM, tmp_path, "--on-rss", "85%", mode="leak", args={"step": 1})

        def enter() -> None:
            (group / procs).write_text("0")

        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=enter)
        _, err = p.communicate(timeout=240)
        died = time.time()
        assert p.returncode == -9, (p.returncode, err.decode()[-2000:])  # the OOM killer's
        assert _oom_kills(group) == 1  # one kill: the service, not the snapshot child
    finally:
        time.sleep(0.2)
        group.rmdir()
    found = sorted(tmp_path.glob("core_*.core"))
    assert len(found) == 1, list(tmp_path.iterdir())
    assert os.stat(found[0]).st_ctime <= died  # published before the kill
    with gencore.open_core(found[0]) as core:
        assert core.metadata["reason"] == "memory: rss"
        memory = core.capture["memory"]
        assert memory["cgroup_limit"] == 512 * MIB
        assert memory["bounded_page_cache"] is True
        assert memory["auto_max_size"] > 0  # little headroom: what analysis needs first
    out = run([tool("pystack"), "core", str(found[0]), real_python()])
    assert out.returncode == 0, out.stderr
    assert "in leak" in out.stdout, out.stdout[-3000:]


def _fake_v2_group(d: Path, current: int, high: int, events: int) -> None:
    d.mkdir(exist_ok=True)
    (d / "memory.max").write_text("max\n")
    (d / "memory.high").write_text(f"{high}\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.events").write_text(f"low 0\nhigh {events}\nmax 0\noom 0\noom_kill 0\n")


HIGH_PROGRAM = """
import json, sys, time, gencore
cfg = gencore.install(signals=(), directory=sys.argv[1], on_memory_high=True, rss_interval=0.05)
print(json.dumps({"events": str(cfg.state_file.with_suffix(".events"))}), flush=True)
time.sleep(60)
"""


def test_a_memory_high_breach_gives_one_core(tmp_path):
    """cgroup v2's memory.events counts a breach of memory.high: one core per episode (a
    recorded v2 group: this machine may have v1 only)."""
    group = tmp_path / "group"
    _fake_v2_group(group, current=300 * MIB, high=400 * MIB, events=3)  # breaches before
    env = dict(os.environ, GENCORE_CGROUP=f"v2:{group}")
    p = subprocess.Popen(
        [sys.executable, "-c", HIGH_PROGRAM, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        events = Path(json.loads(p.stdout.readline())["events"])
        time.sleep(0.5)
        assert not list(tmp_path.glob("core_*.core"))  # earlier breaches do not count
        _fake_v2_group(group, current=410 * MIB, high=400 * MIB, events=4)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "done " not in events.read_text():
            time.sleep(0.05)
        _fake_v2_group(group, current=410 * MIB, high=400 * MIB, events=9)  # same episode
        time.sleep(0.5)
        text = events.read_text()
    finally:
        p.kill()
        p.wait()
    assert text.count("done ") == 1, text
    (core,) = tmp_path.glob("core_*.core")
    with gencore.open_core(core) as c:
        assert c.metadata["reason"] == "memory: high"
        assert c.metadata["watch"]["cgroup_usage"] == 410 * MIB
