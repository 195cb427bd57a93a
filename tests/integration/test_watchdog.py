"""Unattended cores: the hang watchdog (GIL, asyncio loop, heartbeat) and the memory limit.

Each program runs under `gencore run` as a user would start a service; pystack reads the
cores (the oracle for "which thread, which frame").
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gencore_run_cmd, real_python, run, tool

import gencore

PROGRAM = str(Path(__file__).parent.parent / "programs" / "watched.py")


def gencore_run(directory: Path, *opts: str, mode: str, **args) -> list[str]:
    return gencore_run_cmd(PROGRAM, directory, *opts, mode=mode, args=args)


def watched(directory: Path, *opts: str, mode: str, **args) -> tuple[dict, list[Path]]:
    r = run(gencore_run(directory, *opts, mode=mode, **args), timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    cores = sorted(directory.glob("*.core"))
    return result, cores


def pystack_thread(core: Path, tid: int) -> str:
    """pystack's traceback of one thread of the core."""
    out = run([tool("pystack"), "core", str(core), real_python()]).stdout
    start = out.index(f"Traceback for thread {tid} ")
    end = out.find("\nTraceback for thread", start + 1)
    return out[start : end if end > 0 else len(out)]


def test_a_thread_holding_the_gil_in_c_gets_one_core(tmp_path):
    result, cores = watched(tmp_path, "--on-hang", "2", mode="gil", seconds=8)
    assert len(cores) == 1, cores  # one core per stall, not one per check
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "hang: gil"
        assert core.metadata["watch"]["stalled_seconds"] >= 2.0
        assert core.threads[0].tid == result["main_tid"]  # gdb selects the stalled thread
    main = pystack_thread(cores[0], result["main_tid"])
    assert "Has the GIL" in main and "in stuck_in_c" in main, main
    info = run([sys.executable, "-m", "gencore", "info", str(cores[0])]).stdout
    assert "reason hang: gil" in info and "stalled 2." in info, info
    assert result["counters"]["hangs"] == 1 and result["counters"]["cores"] == 1


def test_an_asyncio_handler_blocking_the_loop_gets_one_core(tmp_path):
    # time.sleep releases the GIL: only the loop's own beat can tell it stalled
    result, cores = watched(tmp_path, "--on-hang", "2", mode="loop", seconds=8)
    assert len(cores) == 1, cores
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "hang: loop"
        assert core.threads[0].tid == result["main_tid"]
    main = pystack_thread(cores[0], result["main_tid"])
    assert "in blocking_handler" in main and "in serve_then_block" in main, main


def test_stalls_shorter_than_the_timeout_give_no_core(tmp_path):
    # the beat comes every 0.5 s: a 1.6 s stall must not look like a 2 s one
    result, cores = watched(tmp_path, "--on-hang", "2", mode="loop", seconds=1.6)
    assert cores == [] and result["counters"]["hangs"] == 0, result
    result, cores = watched(tmp_path, "--on-hang", "2", mode="gil", seconds=1.6)
    assert cores == [] and result["counters"]["hangs"] == 0, result


def test_a_missed_heartbeat_gets_a_core_with_the_beating_thread_first(tmp_path):
    result, cores = watched(tmp_path, "--heartbeat-timeout", "1", mode="heartbeat", seconds=4)
    assert len(cores) == 1, cores
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "hang: heartbeat"
        assert core.metadata["watch"]["stalled_seconds"] >= 1.0
        assert core.threads[0].tid == result["beat_tid"]
    assert "in heartbeats" in pystack_thread(cores[0], result["beat_tid"])


def test_growing_past_the_rss_limit_gives_exactly_one_core(tmp_path):
    result, cores = watched(tmp_path, "--on-rss", "300M", mode="grow", mib=700)
    assert len(cores) == 1, cores
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "memory: rss"
        seen = core.metadata["watch"]
        assert seen["rss_limit"] == 300 << 20 and seen["rss_bytes"] > 300 << 20
    assert result["counters"]["memory"] == 1
    info = run([sys.executable, "-m", "gencore", "info", str(cores[0])]).stdout
    assert "reason memory: rss" in info and "past the limit of 300.0 MiB" in info, info


@pytest.mark.once  # 30 s of a healthy service: the native watchdog, not the interpreter
@pytest.mark.slow
def test_a_healthy_busy_service_gets_no_core_and_no_extra_thread(tmp_path):
    p = subprocess.Popen(
        gencore_run(
            tmp_path,
            "--on-hang",
            "2",
            "--heartbeat-timeout",
            "2",
            "--on-rss",
            "90%",
            mode="healthy",
            seconds=30,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(15)
    p.send_signal(signal.SIGUSR2)  # a core on demand in the middle of it
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    counters = result["counters"]
    assert counters["hangs"] == 0 and counters["memory"] == 0, counters
    assert counters["probes"] >= 20  # the GIL was probed all along
    # install() added no Python thread: the program saw only its own
    assert result["threads_before"] == ["MainThread"], result
    assert result["threads_after"] == ["MainThread"], result
    cores = sorted(tmp_path.glob("*.core"))
    assert len(cores) == 1, cores
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "signal"
    # pystack lists the application's Python threads: main and the two CPU workers (a
    # probe thread waiting for the GIL at that instant would have no frames)
    out = run([tool("pystack"), "core", str(cores[0]), real_python()]).stdout
    with_frames = re.findall(r"Traceback for thread (\d+)", out)
    assert len(with_frames) == 3, out[-4000:]


def test_bad_limits_are_refused_with_the_argument_named(tmp_path):
    for kwargs, name in [
        ({"hang_timeout": -1}, "hang_timeout"),
        ({"heartbeat_timeout": float("nan")}, "heartbeat_timeout"),
        ({"rss_limit": "lots"}, "rss_limit"),
        ({"rss_limit": "0%"}, "rss_limit"),
        ({"rss_limit": -5}, "rss_limit"),
        ({"rss_limit": "1G", "rss_interval": 0}, "rss_interval"),
    ]:
        with pytest.raises(ValueError, match=name):
            gencore.install(directory=tmp_path, **kwargs)
        assert gencore.installed() is None
    r = run(gencore_run(tmp_path, "--on-rss", "lots", mode="grow", mib=20))
    assert r.returncode == 2 and "rss_limit" in r.stderr, r.stderr


def _memory_cgroup() -> tuple[Path, str, str]:
    """A fresh child of this process's memory cgroup: (directory, limit file, procs file)."""
    mounts = gencore._procfs.cgroup_mounts()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and "v1" in mounts:
            base, limit = Path(mounts["v1"][1]), "memory.limit_in_bytes"
        elif hid == "0" and "v2" in mounts:
            base, limit = Path(mounts["v2"][1]), "memory.max"
            if "memory" not in (base / path.lstrip("/") / "cgroup.controllers").read_text():
                continue
        else:
            continue
        d = base / path.lstrip("/") / f"gencore-test-{time.monotonic_ns()}"
        d.mkdir()
        return d, limit, "cgroup.procs"
    raise AssertionError("no memory cgroup to test in: " + Path("/proc/self/cgroup").read_text())


def test_rss_limit_percentage_of_the_cgroup_limit_and_of_ram(tmp_path):
    code = (
        f"import gencore; c = gencore.install(directory={str(tmp_path)!r}, signals=(), "
        "rss_limit='50%'); print(c.rss_limit)"
    )
    group, limit_file, procs = _memory_cgroup()
    try:
        (group / limit_file).write_text(str(1 << 30))

        def enter():
            (group / procs).write_text("0")

        r = run([sys.executable, "-c", code], preexec_fn=enter)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) == 1 << 29  # half of the group's 1 GiB
    finally:
        group.rmdir()
    r = run([sys.executable, "-c", code])
    meminfo = Path("/proc/meminfo").read_text()
    ram = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1)) * 1024
    # no limit of its own here: half of the RAM (the page count rounds MemTotal slightly)
    assert abs(int(r.stdout) - ram // 2) < ram // 100, (r.stdout, ram)


def test_install_with_every_trigger_adds_no_python_thread_and_uninstall_restores(tmp_path):
    import asyncio
    import asyncio.events
    import threading

    original = asyncio.events._set_running_loop
    before = threading.enumerate()
    gencore.install(
        directory=tmp_path,
        on_crash=True,
        on_exception=True,
        on_memory_error=True,
        hang_timeout=5,
        heartbeat_timeout=5,
        rss_limit="90%",
    )
    try:
        assert threading.enumerate() == before
        assert asyncio.events._set_running_loop is not original  # loops are followed
        assert asyncio.run(asyncio.sleep(0.01, result=7)) == 7
        gencore.heartbeat()
        counters = gencore.installed().counters
        assert counters["hangs"] == 0 and counters["cores"] == 0
    finally:
        gencore.uninstall()
    assert asyncio.events._set_running_loop is original
    assert threading.enumerate() == before and not list(tmp_path.glob("*.core"))
