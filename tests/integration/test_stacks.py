"""`gencore stacks` reads every thread's Python stack from a core's memory, for every kind of
core: the same threads, frames, lines and order as pystack on the same core (the oracle), the
same locals as `pystack --locals`, and the stacks each thread reported of itself."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

PROGRAM = str(PROGRAMS / "pystacks.py")
MODES = ["api", "kernel", "signal", "hang", "crash", "foreign", "inject", "capped"]
DEPTH = {"api": 900}  # frames of recursion in the "deep" thread (150 otherwise)


def _core_limit(size: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_CORE, (size, size))

    return set_limit


def _wait_for(directory: Path, pattern: str, deadline: float) -> Path:
    """The first file matching ``pattern`` once it is complete (gencore publishes cores by
    renaming them; the kernel's is complete once the process is reaped)."""
    while time.monotonic() < deadline:
        found = sorted(directory.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} in {directory}: {os.listdir(directory)}")


def take_core(mode: str, directory: Path) -> tuple[Path, dict]:
    """Run the program in ``mode`` and return its core and its ready report."""
    args = json.dumps({"depth": DEPTH.get(mode, 150)})
    limit = resource.RLIM_INFINITY if mode in ("foreign", "kernel") else 0
    p = subprocess.Popen(
        [sys.executable, PROGRAM, mode, str(directory), args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=directory,
        preexec_fn=_core_limit(limit),
    )
    try:
        report = json.loads(p.stdout.readline())
        deadline = time.monotonic() + 120
        if mode in ("api", "kernel", "capped"):
            core = Path(report["core"])
        elif mode in ("signal", "hang"):
            if mode == "signal":
                os.kill(p.pid, signal.SIGUSR2)
            core = _wait_for(directory, "core_*.core", deadline)
        elif mode == "crash":
            p.wait(timeout=120)
            core = _wait_for(directory, "core_*.core", deadline)
        elif mode == "foreign":
            os.kill(p.pid, signal.SIGABRT)
            p.wait(timeout=120)
            core = directory / "core"
        else:
            r = run(
                [
                    sys.executable,
                    "-m",
                    "gencore",
                    "trigger",
                    "--inject",
                    str(p.pid),
                    "--wait",
                    "--timeout",
                    "120",
                ]
            )
            assert r.returncode == 0, r.stdout + r.stderr
            core = Path(r.stdout.strip())
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert core.exists(), (mode, os.listdir(directory))
    return core, report


@pytest.fixture(scope="session")
def cores(tmp_path_factory):
    """One core per mode, taken when a test first asks for it."""
    made: dict[str, tuple[Path, dict]] = {}

    def get(mode: str) -> tuple[Path, dict]:
        if mode not in made:
            made[mode] = take_core(mode, tmp_path_factory.mktemp(mode))
        return made[mode]

    return get


FRAME = re.compile(r'^    \(Python\) File "(.*)", line (\d+), in (.*)$')
VALUE = re.compile(r"^        (\w+): (.*)$")


def pystack_threads(core: Path, with_locals: bool = False) -> dict[int, dict]:
    """pystack's view: TID -> {"gil": bool, "frames": [(file, line, function, {name: value})]}
    with the frames outermost first (a thread's interpreters one after the other)."""
    cmd = [
        tool("pystack"),
        "core",
        *(["--locals"] if with_locals else []),
        str(core),
        real_python(),
    ]
    p = run(cmd)
    assert p.returncode == 0, p.stdout + p.stderr
    out: dict[int, dict] = {}
    thread = frame = None
    for line in p.stdout.splitlines():
        m = re.match(r"Traceback for thread (\d+)", line)
        if m:
            thread = out.setdefault(int(m.group(1)), {"gil": False, "frames": []})
            thread["gil"] = "Has the GIL" in line
            continue
        if thread is not None and "Has the GIL" in line and line.startswith("  In "):
            thread["gil"] = True
        m = FRAME.match(line)
        if m and thread is not None:
            frame = (m.group(1), int(m.group(2)), m.group(3), {})
            thread["frames"].append(frame)
            continue
        m = VALUE.match(line)
        if m and frame is not None:
            frame[3][m.group(1)] = m.group(2)
    return out


def gencore_threads(core: Path, with_locals: bool = False) -> tuple[dict[int, dict], dict]:
    """`gencore stacks --json`'s view, shaped like :func:`pystack_threads`."""
    p = run(
        [
            sys.executable,
            "-m",
            "gencore",
            "stacks",
            "--json",
            *(["--locals"] if with_locals else []),
            str(core),
        ]
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    out: dict[int, dict] = {}
    for t in doc["threads"]:
        thread = out.setdefault(t["tid"], {"gil": False, "frames": [], "name": t["name"]})
        thread["gil"] = thread["gil"] or bool(t["holds_gil"])
        for f in reversed(t["frames"]):
            values = {v["name"]: v["value"] for v in f.get("locals", [])}
            thread["frames"].append((f["file"], f["line"], f["function"], values))
    return out, doc


def _frames(view: dict[int, dict]) -> dict[int, list[tuple]]:
    return {tid: [f[:3] for f in t["frames"]] for tid, t in view.items() if t["frames"]}


@pytest.mark.parametrize("mode", MODES)
def test_stacks_from_memory_match_pystack(cores, mode):
    if mode == "inject" and sys.version_info < (3, 14):
        pytest.skip("gencore trigger --inject needs sys.remote_exec (Python 3.14+)")
    if mode == "kernel" and sys.version_info < (3, 11):
        # pystack <= 3.10 refuses a kernel-method core of a multi-threaded process (it finds
        # threads by pthread descriptors the forked copy lacks): the threads' own reports
        # are the oracle (test_stacks_match_what_each_thread_saw)
        pytest.skip("pystack cannot read this core on Python <= 3.10")
    core, report = cores(mode)
    ours, doc = gencore_threads(core)
    theirs = pystack_threads(core)
    assert _frames(ours) == _frames(theirs)
    assert {t for t, v in ours.items() if v["gil"]} == {t for t, v in theirs.items() if v["gil"]}
    deep = ours[report["tids"]["deep"]]["frames"]
    assert sum(f[2] == "recurse" for f in deep) == DEPTH.get(mode, 150) + 1
    if mode in ("foreign", "inject"):
        assert "GENCORE" not in doc["layout"] or mode == "inject"
    if mode == "capped":  # the walk kept every interpreter's thread states, whatever fit
        with gencore.open_core(core) as c:
            walked = c.capture["budget"]["python_threads"]
        # the subinterpreter's thread has one in each interpreter
        assert walked == len(report["tids"]) + ("subinterpreter" in report["tids"])


@pytest.mark.parametrize("mode", ["api", "kernel", "signal", "foreign"])
def test_stacks_match_what_each_thread_saw(cores, mode):
    """Every parked thread's functions, innermost first, as sys._current_frames() gave them
    just before the core, and the thread names threading gave them."""
    core, report = cores(mode)
    ours, _ = gencore_threads(core)
    for tid, own in report["own"].items():
        tid = int(tid)
        got = [f[2] for f in reversed(ours[tid]["frames"])]
        if tid == report["tids"].get("subinterpreter"):
            got = got[-len(own) :]  # the subinterpreter's frames come after the thread's own
        assert got == own, tid
    names = {t["name"] for t in ours.values()}
    assert {"deep", "locals", "sleeper", "MainThread"} <= names


def _simple(text: str):
    """The Python value of one of our short reprs, where it is a plain simple value."""
    if text in ("None", "True", "False") or re.fullmatch(r"-?\d+(\.\d+)?(e[-+]\d+)?", text):
        return ast.literal_eval(text)
    if text[:1] in "'\"" or text[:2] in ("b'", 'b"'):
        try:
            return ast.literal_eval(text)
        except (SyntaxError, ValueError):
            return NotImplemented  # shortened
    return NotImplemented


def test_locals_match_pystack_locals(cores):
    core, report = cores("api")
    ours, _ = gencore_threads(core, with_locals=True)
    theirs = pystack_threads(core, with_locals=True)
    compared = 0
    for tid, t in theirs.items():
        for mine, other in zip(ours[tid]["frames"], t["frames"]):
            # pystack 1.7 also lists 3.14's unbound slots (tagged NULL references)
            assert set(mine[3]) <= set(other[3]), (mine[:3], other[:3])
            if sys.version_info < (3, 14):
                assert set(mine[3]) == set(other[3]), (mine[:3], other[:3])
            for name, text in mine[3].items():
                value = _simple(text)
                if value is NotImplemented or isinstance(value, bytes):
                    continue
                if isinstance(value, str):
                    if not (value.isascii() and value.isprintable()):
                        continue  # pystack shows these as <str at ...>
                    assert other[3][name] == f'"{value}"', (name, text)
                elif isinstance(value, int) and abs(value) >= 1 << 62:
                    continue  # pystack prints big ints modulo 2**64
                elif isinstance(value, float):  # pystack prints 6 significant digits
                    assert math.isclose(float(other[3][name]), value, rel_tol=1e-5), name
                else:
                    assert other[3][name] == repr(value), (name, text, other[3][name])
                compared += 1
    assert compared >= 20
    frame = next(f for f in ours[report["tids"]["locals"]]["frames"] if f[2] == "with_locals")
    values = frame[3]
    assert _simple(values["big"]) == 2**100
    assert _simple(values["unicode"]) == "h\xe9llo \u20ac"
    assert _simple(values["blob"]) == b"bytes\x00here"
    assert values["items"] == "<list of 3>" and values["table"] == "<dict of 1>"
    assert values["pair"] == "<tuple of 2>" and values["members"] == "<set of 2>"
    assert values["rest"] == "<tuple of 1>" and values["extra"] == "<dict of 1>"


def test_text_output_and_the_note_agree(cores):
    core, report = cores("api")
    p = run([sys.executable, "-m", "gencore", "stacks", str(core)])
    assert p.returncode == 0, p.stderr
    assert "Read from memory: _PyRuntime from the GENCORE note" in p.stdout
    assert re.search(r'Thread \d+ "MainThread" \(snapshot caller\) \[Has the GIL', p.stdout)
    assert f'Thread {report["tids"]["deep"]} "deep"' in p.stdout
    assert 'in with_locals\n        hold("locals")' in p.stdout  # the source line
    if sys.version_info >= (3, 12):
        assert "in interpreter 1" in p.stdout and "in sub_sleeper" in p.stdout
    p = run([sys.executable, "-m", "gencore", "stacks", "--check", str(core)])
    assert p.returncode == 0 and p.stdout.endswith(" 0 differ from memory\n"), p.stdout
    # the note holds the subinterpreter's thread too
    p = run([sys.executable, "-m", "gencore", "stacks", "--json", "--from-note", str(core)])
    interps = {t["interpreter"] for t in json.loads(p.stdout)["threads"]}
    assert interps == ({0, 1} if sys.version_info >= (3, 12) else {0})


def test_foreign_core_needs_no_note(cores):
    core, _ = cores("foreign")
    import gencore

    with gencore.open_core(core) as c:
        assert c.metadata == {}
        layout = c.python().layout
        assert "symbol" in layout.runtime_source
        if sys.version_info >= (3, 13):
            assert "debug offsets" in layout.sources.values()


THREADS = 3000

# Thread.start() returns before the new thread runs its target: each worker says it is in
# parked_worker before the core is taken, or the last ones may still be in _bootstrap
MANY = """
import json, sys, threading, gencore
ev, inside = threading.Event(), threading.Semaphore(0)
def parked_worker(i):
    inside.release()
    ev.wait()
threads = [threading.Thread(target=parked_worker, args=(i,), daemon=True) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    inside.acquire()
print(gencore.create_core(sys.argv[1]))
"""


def test_three_thousand_threads(tmp_path):
    """pystack 1.7.2 crashes and py-spy runs out of memory on such a core: gencore streams it,
    its memory independent of the threads' stacks (a reader needing over 1 GiB fails)."""
    p = run([sys.executable, "-c", MANY.replace("N", str(THREADS)), str(tmp_path)], timeout=600)
    assert p.returncode == 0, p.stderr
    core = p.stdout.strip()
    # the reader's own memory under 1 GiB: RLIMIT_DATA bounds its private writable memory;
    # the core's mapped pages are page cache, which the kernel maps around each fault as it
    # sees fit (a resident-size peak varied from 0.1 to 1.1 GiB with the page cache's state)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))\n"
        "from gencore.cli import main\n"
        "sys.exit(main(['stacks', '--json', sys.argv[1]]))\n"
    )
    r = run([sys.executable, "-c", code, core], timeout=600)
    assert r.returncode == 0, r.stderr
    threads = json.loads(r.stdout)["threads"]
    assert len(threads) == THREADS + 1
    workers = [t for t in threads if t["frames"] and t["frames"][-1]["function"] == "_bootstrap"]
    assert sum(any(f["function"] == "parked_worker" for f in t["frames"]) for t in workers) == (
        THREADS
    )
    os.unlink(core)
