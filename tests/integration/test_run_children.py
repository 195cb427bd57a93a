"""`gencore run` arms every Python process it starts: multiprocessing's fork, spawn and
forkserver workers (forkserver is 3.14's default), and plain subprocesses with --children.
`gencore trigger --wait` on each worker writes its core; pystack shows the worker function."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

pytestmark = pytest.mark.once


def start(tmp: Path, *args: str, opts: tuple[str, ...] = ()) -> subprocess.Popen:
    cores = tmp / "cores"
    cores.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "gencore", "run", "-d", str(cores), *opts, "--", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> str:
    """Kill the program and every process it started (they hold its output pipes)."""
    os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate()[0]


def wait_lines(path: Path, n: int, proc: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return path.read_text().splitlines()
        time.sleep(0.1)
    raise AssertionError(f"no {n} lines in {path}: {proc.poll()} {proc.stderr.read()}")


def trigger(pid: int) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "gencore", "trigger", "--wait", "--timeout", "60", str(pid)])


@pytest.mark.parametrize("method", ["default", "spawn", "forkserver"])
def test_pool_workers_are_armed(tmp_path, method):
    pids = tmp_path / "pids"
    proc = start(tmp_path, str(PROGRAMS / "pool_app.py"), method, str(pids))
    try:
        workers = [json.loads(line)["pid"] for line in wait_lines(pids, 2, proc)]
        cores = []
        for pid in workers:
            r = trigger(pid)
            assert r.returncode == 0, r.stderr
            cores.append(Path(r.stdout.split()[-1]))
    finally:
        out = stop(proc)
    used = re.search(r"start method (\w+)", out).group(1)
    if method == "default" and sys.version_info >= (3, 14):
        assert used == "forkserver"  # a fresh interpreter, armed by the start hook
    for pid, core in zip(workers, cores):
        with gencore.open_core(core) as c:
            assert c.pid == pid
        text = run([tool("pystack"), "core", str(core), real_python()]).stdout
        assert "in worker_function" in text, text


def test_plain_subprocesses_are_armed_only_with_children(tmp_path):
    for opts, armed in (((), False), (("--children",), True)):
        pidfile = tmp_path / f"child{armed}"
        proc = start(tmp_path, str(PROGRAMS / "child_app.py"), str(pidfile), opts=opts)
        try:
            # the start hook runs before the child's script: armed by the time it writes
            pid = int(wait_lines(pidfile, 1, proc)[0])
            r = trigger(pid)
        finally:
            stop(proc)
        if armed:
            assert r.returncode == 0, r.stderr
            assert "child_app" not in r.stdout and r.stdout.strip().endswith(".core")
        else:
            assert r.returncode == 1 and "has not installed the gencore trigger" in r.stderr
            if sys.version_info >= (3, 14):
                assert f"gencore trigger --inject {pid}" in r.stderr, r.stderr
