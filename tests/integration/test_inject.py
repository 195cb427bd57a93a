"""gencore trigger --inject: a core of a 3.14+ process that never imported gencore."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

PROGRAM = str(PROGRAMS / "injectable.py")
NEW = sys.version_info >= (3, 14)


def as_user(user: str | None) -> list[str]:
    if user is None:
        return []
    import pwd

    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


class Target:
    """The injectable program, with its JSON reports read on demand."""

    def __init__(self, mode: str, exe: str = sys.executable, env=None, user=None, cwd=None):
        self.p = subprocess.Popen(
            [*as_user(user), exe, PROGRAM, mode],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.first = json.loads(self.p.stdout.readline())
        self.pid = self.first["pid"]

    def report(self) -> dict:
        os.kill(self.pid, signal.SIGUSR1)
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        self.p.kill()
        self.p.wait()


def inject(pid: int, *opts: str, user=None, timeout: float = 180):
    cmd = [*as_user(user), sys.executable, "-m", "gencore", "trigger", "--inject", str(pid), *opts]
    return run(cmd, timeout=timeout)


@pytest.mark.skipif(NEW, reason="the refusal on interpreters without sys.remote_exec")
def test_inject_needs_python_3_14():
    t = Target("loop")
    try:
        r = inject(t.pid, "--wait")
        assert r.returncode == 1 and "needs Python 3.14" in r.stderr, r.stderr
        assert t.report()["new_modules"] == []
    finally:
        t.close()


@pytest.mark.skipif(not NEW, reason="sys.remote_exec exists from Python 3.14")
def test_inject_dumps_a_process_that_never_imported_gencore(tmp_path):
    t = Target("loop", cwd=tmp_path)
    try:
        before = t.report()
        for _ in range(2):  # twice: nothing accumulates either
            r = inject(t.pid, "--wait", "--timeout", "120")
            assert r.returncode == 0, r.stdout + r.stderr
            core = Path(r.stdout.strip())
            assert core.parent == tmp_path and core.name.endswith(".core") and core.exists()
            after = t.report()  # it runs on, as it was: no descriptor left open (libffi's
            assert after["fds"] == before["fds"]  # trampoline file: no ctypes is loaded)
            assert after["threads"] == before["threads"]
            assert after["native_threads"] == before["native_threads"]
            assert [m for m in after["new_modules"] if not m.startswith("gencore")] == []
        assert not list(Path("/tmp").glob("gencore-inject-*"))  # nothing left behind
    finally:
        t.close()
    p = run([tool("pystack"), "core", str(core), real_python()])
    assert p.returncode == 0, p.stdout + p.stderr
    traces = re.split(r"^Traceback for thread ", p.stdout, flags=re.M)[1:]
    assert len(traces) == 5, p.stdout
    for i in range(4):
        assert sum(f"in inj_worker_{i}" in tr for tr in traces) == 1, p.stdout
    assert sum("in main_loop" in tr for tr in traces) == 1, p.stdout


@pytest.mark.skipif(not NEW, reason="sys.remote_exec exists from Python 3.14")
def test_inject_refuses_a_target_without_remote_debugging(tmp_path):
    t = Target("loop", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"}, cwd=tmp_path)
    try:
        r = inject(t.pid, "--wait", "--timeout", "20")
        assert r.returncode == 1 and "PYTHON_DISABLE_REMOTE_DEBUG" in r.stderr, r.stderr
        assert list(tmp_path.iterdir()) == []
    finally:
        t.close()


@pytest.mark.skipif(not NEW, reason="sys.remote_exec exists from Python 3.14")
def test_inject_refuses_another_python_version(tmp_path):
    minor = sys.version_info[1]
    other = shutil.which(f"python3.{minor + 1}") or shutil.which(f"python3.{minor - 1}")
    assert other, "the test root has python3.14 and python3.15 (scripts/sid-root)"
    t = Target("loop", exe=other, cwd=tmp_path)
    try:
        r = inject(t.pid, "--wait", "--timeout", "20")
        assert r.returncode == 1, r.stderr
        assert re.search(rf"runs Python 3\.\d+.*installed for 3\.{minor}", r.stderr), r.stderr
        assert list(tmp_path.iterdir()) == []
    finally:
        t.close()


@pytest.mark.skipif(not NEW, reason="sys.remote_exec exists from Python 3.14")
def test_inject_refuses_another_users_process(tmp_path):
    os.chmod(tmp_path, 0o777)
    t = Target("loop", user="nobody", cwd=tmp_path)
    try:
        r = inject(t.pid, "--wait", "--timeout", "20", user="daemon")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "needs root or CAP_SYS_PTRACE" in r.stderr, r.stderr
        assert t.report()["new_modules"] == []
        assert list(tmp_path.iterdir()) == []
    finally:
        t.close()


@pytest.mark.skipif(not NEW, reason="sys.remote_exec exists from Python 3.14")
def test_inject_timeout_leaves_a_blocked_target_untouched(tmp_path):
    t = Target("blocked", cwd=tmp_path)
    try:
        r = inject(t.pid, "--wait", "--timeout", "2")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "did not reach a safe point" in r.stderr and "untouched" in r.stderr, r.stderr
        # the main thread leaves C now: the queued script runs, sees the withdrawn request
        # and does nothing
        first = t.report()
        time.sleep(1.0)
        later = t.report()
        assert later["fds"] == first["fds"]
        assert later["new_modules"] == [] and first["new_modules"] == []
        assert list(tmp_path.iterdir()) == []
        assert not list(Path("/tmp").glob("gencore-inject-*"))
    finally:
        t.close()
