"""The pytest plugin: cores of tests that pass their deadline or crash, under real pytest
with pytest-timeout and pytest-xdist, without CAP_SYS_PTRACE; pystack is the oracle."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

pytestmark = pytest.mark.once


def inner_pytest(tmp: Path, *args: str, hold: float = 3.0) -> tuple[object, Path, Path]:
    """Run pytest on tests/programs/pytest_suite.py as a CI job would: no CAP_SYS_PTRACE."""
    cores, out = tmp / "cores", tmp / "out"
    out.mkdir()
    cmd = [
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--inh-caps=-sys_ptrace",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(PROGRAMS),
        "--gencore-dir",
        str(cores),
        *args,
        str(PROGRAMS / "pytest_suite.py"),
    ]
    env = {"SUITE_OUT": str(out), "SUITE_HOLD": str(hold), "PYTHONPATH": str(PROGRAMS)}
    r = run(cmd, timeout=120, env=env, cwd=tmp)
    return r, cores, out


def started(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def pystack(core: Path) -> str:
    r = run([tool("pystack"), "core", str(core), real_python()])
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory):
    """The issue's run: a test holding the GIL in C for 11 s, pytest-timeout at 10 s, our
    deadline at 5 s."""
    tmp = tmp_path_factory.mktemp("pytest-timeout")
    r, cores, out = inner_pytest(
        tmp, "--timeout=10", "--gencore-timeout", "5", "-k", "stuck_in_c and not too", hold=11
    )
    return r, cores, out


def test_a_test_holding_the_gil_in_c_gets_a_core_before_pytest_timeout(timed_out):
    r, cores, out = timed_out
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Timeout (>10.0s)" in r.stdout, r.stdout[-3000:]  # pytest-timeout acted too
    found = sorted(cores.glob("*.core"))
    assert len(found) == 1, found
    test = started(out, "stuck_in_c")
    with gencore.open_core(found[0]) as core:
        meta = core.metadata
        assert meta["reason"] == "hang: deadline"
        assert meta["watch"]["name"].endswith("pytest_suite.py::test_stuck_in_c")
        assert core.pid == test["pid"] and core.threads[0].tid == test["tid"]
    # written within 10 s of the test's start, 5 s into it
    assert 5.0 <= meta["time"] - test["time"] < 10.0, meta["time"] - test["time"]
    text = pystack(found[0])
    assert f"Traceback for thread {test['tid']}" in text
    assert "in test_stuck_in_c" in text and "in hold_gil_in_c" in text, text


def test_the_report_names_the_core(timed_out):
    r, cores, _ = timed_out
    core = next(cores.glob("*.core"))
    assert "gencore" in r.stdout and f"core: {core}" in r.stdout, r.stdout[-3000:]
    assert "the test passed its 5 s deadline" in r.stdout
    assert "gencore: cores of crashes and tests past their deadline to" in r.stdout


def test_default_deadline_comes_before_pytest_timeout(tmp_path):
    # no --gencore-timeout: pytest-timeout's 3 s minus the margin (1 s)
    r, cores, out = inner_pytest(tmp_path, "--timeout=3", "-k", "stuck_in_c and not too", hold=4)
    found = sorted(cores.glob("*.core"))
    assert len(found) == 1, r.stdout[-3000:]
    with gencore.open_core(found[0]) as core:
        assert core.metadata["watch"]["deadline"] == 2.0
        assert core.metadata["time"] - started(out, "stuck_in_c")["time"] < 3.0


def test_xdist_workers_each_write_their_own_core(tmp_path):
    r, cores, out = inner_pytest(
        tmp_path, "-n", "2", "--gencore-timeout", "1", "-k", "stuck_in_c or quick", hold=2.5
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    found = sorted(cores.glob("*.core"))
    assert len(found) == 2, found
    tests = {started(out, n)["pid"]: n for n in ("stuck_in_c", "stuck_in_c_too")}
    assert len(tests) == 2  # two workers
    for path in found:
        with gencore.open_core(path) as core:
            name = tests[core.pid]
            assert core.metadata["watch"]["name"].endswith(f"::test_{name}")
        assert f"in test_{name}" in pystack(path)
    assert r.stdout.count("the test passed its 1 s deadline") == 0  # passed tests: no -rP


def test_a_crashing_test_gets_a_crash_core(tmp_path):
    r, cores, out = inner_pytest(tmp_path, "-n", "1", "-k", "segfault")
    assert r.returncode == 1
    found = sorted(cores.glob("*.core"))
    assert len(found) == 1, r.stdout[-3000:] + r.stderr[-3000:]
    with gencore.open_core(found[0]) as core:
        assert core.metadata["reason"] == "crash"
        assert core.pid == started(out, "segfault")["pid"]
    assert f"gencore: crash core {found[0]}" in r.stdout, r.stdout[-3000:]
    assert "in test_segfault" in pystack(found[0])


def test_without_the_option_the_plugin_does_nothing(tmp_path):
    r = run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path)
    assert "--gencore-dir" in r.stdout
    r = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-k",
            "quick",
            str(PROGRAMS / "pytest_suite.py"),
        ],
        env={"SUITE_OUT": str(tmp_path), "PYTHONPATH": str(PROGRAMS)},
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "gencore: cores" not in r.stdout, r.stdout


def test_a_bad_directory_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    r = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--gencore-dir",
            str(tmp_path / "file" / "x"),
            "-k",
            "quick",
            str(PROGRAMS / "pytest_suite.py"),
        ],
        env={"SUITE_OUT": str(tmp_path), "PYTHONPATH": str(PROGRAMS)},
        cwd=tmp_path,
    )
    assert r.returncode == 4, r.stdout + r.stderr
    assert "--gencore-dir" in r.stderr and os.fspath(tmp_path / "file") in r.stderr
