"""Triggers: signal (even with the GIL held forever), crash, unhandled exception, guards."""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, gencore_run_cmd, real_python, run, tool

import gencore

PROGRAM = str(PROGRAMS / "triggered.py")


def gencore_run(
    directory: Path, *opts: str, mode: str, args: dict | None = None, pre: tuple[str, ...] = ()
) -> list[str]:
    return gencore_run_cmd(PROGRAM, directory, *opts, mode=mode, args=args, pre=pre)


def cores(directory: Path, suffix: str = ".core") -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(suffix))


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_trigger_while_the_main_thread_holds_the_gil_in_c(tmp_path, compress):
    opts = ("--compress", compress) if compress else ()
    p = subprocess.Popen(
        gencore_run(tmp_path, "--collect", *opts, mode="stuck"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        pid = json.loads(line)["ready"]
        assert pid == p.pid
        r = run(
            [sys.executable, "-m", "gencore", "trigger", str(pid), "--wait", "--timeout", "120"]
        )
        assert r.returncode == 0, r.stdout + r.stderr
        core_path, bundle_path = r.stdout.split()
        suffix = ".core.zst" if compress else ".core"
        assert Path(core_path).parent == tmp_path and core_path.endswith(suffix)
        assert bundle_path.endswith(".tar.gz") and Path(bundle_path).exists()
        assert p.poll() is None  # the application is still alive (and still stuck)
    finally:
        p.kill()
        p.wait()
    plain = core_path
    if compress:  # written by the snapshot child of a signal handler, through the compressor
        plain = str(tmp_path / "decompressed.core")
        z = run([tool("zstd"), "-d", "-q", core_path, "-o", plain])
        assert z.returncode == 0, z.stderr
    out = run([tool("pystack"), "core", "--native", plain, real_python()]).stdout
    threads = re.findall(r"Traceback for thread (\d+)", out)
    assert len(threads) >= 5, out[-3000:]
    main = out[out.index(f"Traceback for thread {pid} ") :]
    main = (
        main[: main.find("\nTraceback for thread", 1)]
        if "\nTraceback for thread" in main[1:]
        else main
    )
    assert "Has the GIL" in main
    assert "stuck_in_c" in main and "pthread_mutex_lock" in main
    assert out.count("in spin") >= 4
    with gencore.open_core(core_path) as core:
        assert core.metadata["reason"] == "signal"
        assert abs(core.metadata["time"] - time.time()) < 300  # stamped by the handler
        assert core.signal == signal.SIGUSR2
        assert len(core.threads) >= 6  # main, 4 workers, the gencore thread
    # the signal handler stores no stacks: `gencore stacks` reads them from memory
    r = run([sys.executable, "-m", "gencore", "stacks", core_path])
    assert r.returncode == 0 and "Read from memory" in r.stdout, r.stdout + r.stderr
    assert re.search(r'"MainThread" \[Has the GIL\]', r.stdout) and "in stuck_in_c" in r.stdout
    # the bundle was built by the native reaper while the GIL was stuck
    with gencore.open_core(bundle_path) as core:
        assert core.manifest["executable"]


def test_trigger_wait_follows_a_target_that_exits_during_its_dump(tmp_path):
    p = subprocess.Popen(
        [sys.executable, PROGRAM, "exit", json.dumps({"dir": str(tmp_path)})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = json.loads(p.stdout.readline())["ready"]
        t0 = time.monotonic()
        r = run(
            [sys.executable, "-m", "gencore", "trigger", str(pid), "--wait", "--timeout", "120"]
        )
        took = time.monotonic() - t0
        assert p.wait(30) == 0
    finally:
        p.kill()
        p.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    assert took < 60  # reported when the core was published, not at the end of --timeout
    core_path = Path(r.stdout.split()[0])
    assert core_path.parent == tmp_path and core_path.exists()
    assert not list(tmp_path.glob(".*.partial"))
    with gencore.open_core(core_path) as core:
        assert core.pid == pid and core.metadata["reason"] == "signal"
    # eu-stack reads the whole core: it was complete when reported
    es = run([tool("eu-stack"), "--core", str(core_path), "--executable", real_python()])
    assert f"TID {pid}:" in es.stdout, es.stderr


def test_trigger_refuses_a_process_without_the_trigger(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        r = run([sys.executable, "-m", "gencore", "trigger", str(p.pid), "--timeout", "5"])
        assert r.returncode == 1
        assert "has not installed the gencore trigger" in r.stderr and "gencore run" in r.stderr
        assert p.poll() is None  # not signalled: SIGUSR2's default would have killed it
    finally:
        p.kill()
        p.wait()


def unlimited_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.mark.parametrize("fh", ["none", "fh_first", "fh_after"])
def test_crash_core_then_the_process_dies_as_before(tmp_path, fh):
    pre = ("-X", "faulthandler") if fh == "fh_first" else ()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "cores"
    out.mkdir()
    r = run(
        gencore_run(out, "--on-crash", mode="crash", args={"fh": fh}, pre=pre),
        cwd=cwd,
        preexec_fn=unlimited_core,
    )
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stderr[-2000:])
    # the kernel's own core too, as before (core_pattern is `core` on these machines)
    kernel = [p for p in cwd.iterdir() if p.name.startswith("core")]
    assert kernel, "the re-raised SIGSEGV left no kernel core"
    with gencore.open_core(kernel[0]) as kcore:
        assert kcore.signal == signal.SIGSEGV
    tmp_path = out
    found = cores(tmp_path)
    assert len(found) == 1, r.stderr
    assert f"crash core written: {found[0].name}" in r.stderr
    if fh != "none":
        assert "Fatal Python error: Segmentation fault" in r.stderr
        assert "crash_in_worker" in r.stderr
    with gencore.open_core(found[0]) as core:
        assert core.signal == signal.SIGSEGV
        assert core.metadata["reason"] == "crash"
        first = core.threads[0]
        assert first.signal == signal.SIGSEGV  # pr_cursig of the faulting thread
    out = run([tool("pystack"), "core", str(found[0]), real_python()]).stdout
    first_trace = out[out.index("Traceback for thread") :]
    first_trace = first_trace[: first_trace.find("Traceback for thread", 10)]
    assert f"Traceback for thread {first.tid}" in first_trace
    assert "crash_in_worker" in first_trace  # the faulting thread comes first
    ev = run([tool("eu-readelf"), "-n", str(found[0])]).stdout
    assert re.search(
        r"si_signo: 11, si_errno: 0, si_code: " + ("1" if fh != "fh_after" else "-6"), ev
    ), ev[:3000]


@pytest.fixture(scope="module")
def overflow_lib(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("overflow") / "liboverflow.so"
    src = PROGRAMS / "overflow.c"
    subprocess.run(["gcc", "-O0", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return str(out)


@pytest.mark.parametrize("where", ["worker", "main", "thread"])
@pytest.mark.parametrize("fh", [False, True])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_stack_overflow_gets_a_core(tmp_path, overflow_lib, where, fh, compress):
    pre = ("-X", "faulthandler") if fh else ()  # faulthandler's smaller alternate stack first
    opts = ("--compress", compress) if compress else ()
    r = run(
        gencore_run(
            tmp_path,
            "--on-crash",
            *opts,
            mode="overflow",
            args={"lib": overflow_lib, "where": where},
            pre=pre,
        ),
        cwd=tmp_path,
    )
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stderr[-2000:])
    found = cores(tmp_path, ".core.zst" if compress else ".core")
    assert len(found) == 1, r.stderr[-2000:]
    assert f"crash core written: {found[0].name}" in r.stderr
    if compress:  # the dying process waited for its compressor: the file is complete
        plain = tmp_path / "decompressed.core"
        z = run([tool("zstd"), "-d", "-q", str(found[0]), "-o", str(plain)])
        assert z.returncode == 0, z.stderr
        found = [plain]
    if fh:
        assert "Fatal Python error: Segmentation fault" in r.stderr
    with gencore.open_core(found[0]) as core:
        assert core.signal == signal.SIGSEGV and core.metadata["reason"] == "crash"
        first = core.threads[0]
        assert first.signal == signal.SIGSEGV
        # the faulting thread's stack pointer is at the low end of its overflowed stack (in
        # a worker's guard page, or just below the main thread's [stack])
        m = min((m for m in core.mappings if m.end > first.sp), key=lambda m: m.start)
        assert m.start - (1 << 20) <= first.sp < m.start + 64 * 1024, (hex(first.sp), m)
    # the overflowing thread is first in the core (gdb selects it); pystack shows its frame
    out = run([tool("pystack"), "core", str(found[0]), real_python()]).stdout
    mine = out[out.index(f"Traceback for thread {first.tid} ") :]
    mine = (
        mine[: mine.find("Traceback for thread", 10)]
        if "Traceback for thread" in mine[10:]
        else mine
    )
    assert "in overflow_in_c" in mine, out[-3000:]


@pytest.mark.once  # 100 processes: the wrappers are the same on every interpreter
@pytest.mark.slow
@pytest.mark.parametrize("where", ["pool", "main"])
def test_threads_that_overflow_at_once_always_get_a_core(tmp_path, overflow_lib, where):
    """A thread whose first statement recurses in C, 50 times: 50 complete cores (its
    alternate stack was given before its first Python frame ran, not by the sweep)."""
    import concurrent.futures

    def one(i: int) -> tuple[int, str, str]:
        d = tmp_path / str(i)
        d.mkdir()
        cmd = gencore_run(
            d, "--on-crash", mode="overflow", args={"lib": overflow_lib, "where": where}
        )
        r = run(cmd, cwd=d)
        found = cores(d)
        out = run([tool("pystack"), "core", str(found[0]), real_python()]).stdout if found else ""
        return r.returncode, out, r.stderr[-500:]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(50)))
    for rc, out, err in results:
        assert rc == -signal.SIGSEGV, (rc, err)
        assert "The process died due a segmentation fault" in out, (out[-1500:], err)
        assert "in overflow_in_c" in out, out[-1500:]


def test_two_threads_crashing_at_once_give_one_core(tmp_path):
    r = run(gencore_run(tmp_path, "--on-crash", mode="crash2"))
    assert r.returncode == -signal.SIGSEGV, r.stderr[-2000:]
    found = cores(tmp_path)
    assert len(found) == 1 and r.stderr.count("crash core written") == 1, r.stderr
    with gencore.open_core(found[0]) as core:
        assert core.signal == signal.SIGSEGV and core.threads[0].signal == signal.SIGSEGV


def test_signal_core_names_in_local_time_from_c(tmp_path):
    import datetime

    r = run([sys.executable, PROGRAM, "names", json.dumps({"dir": str(tmp_path)})])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    seqs = []
    for name, expected in res["names"]:
        m = re.fullmatch(r"core_(\d{8}\.\d{6})\.(\d+)\.(\d{3})\.core", name)
        assert m and int(m.group(2)) == res["pid"], name
        got = datetime.datetime.strptime(m.group(1), "%Y%m%d.%H%M%S")
        want = datetime.datetime.strptime(expected, "%Y%m%d.%H%M%S")
        assert abs((got - want).total_seconds()) <= 2, (name, expected)
        seqs.append(int(m.group(3)))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


@pytest.mark.parametrize("where", ["thread", "main"])
def test_unhandled_exception_core(tmp_path, where):
    r = run(gencore_run(tmp_path, "--on-exception", mode="exception", args={"where": where}))
    found = cores(tmp_path)
    assert len(found) == 1, r.stderr
    with gencore.open_core(found[0]) as core:
        meta = core.metadata
    assert meta["reason"] == "exception"
    exc = meta["exception"]
    if where == "thread":
        assert r.returncode == 0 and '"after_thread": true' in r.stdout
        assert exc["type"] == "builtins.ValueError" and exc["thread"] == "failing-worker"
        assert "worker failed on purpose" in exc["text"] and "fail_in_worker" in exc["text"]
        assert "Exception in thread failing-worker" in r.stderr  # the normal report
    else:
        assert r.returncode == 1
        assert exc["type"] == "builtins.RuntimeError" and "fail_in_main" in exc["text"]
        assert "Traceback (most recent call last)" in r.stderr
        assert "RuntimeError: main failed on purpose" in r.stderr
    p = run([sys.executable, "-m", "gencore", "info", str(found[0])])
    assert "exception" in p.stdout


def test_run_a_module(tmp_path):
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "failmod.py").write_text(
        "import sys\nprint('argv', sys.argv[1:])\nraise KeyError('from a module')\n"
    )
    out = tmp_path / "cores"
    out.mkdir()
    r = run(
        [
            sys.executable,
            "-m",
            "gencore",
            "run",
            "--on-exception",
            "--directory",
            str(out),
            "-m",
            "failmod",
            "a",
            "b",
        ],
        env={"PYTHONPATH": str(mod)},
    )
    assert r.returncode == 1 and "argv ['a', 'b']" in r.stdout
    assert "KeyError: 'from a module'" in r.stderr
    found = cores(out)
    with gencore.open_core(found[0]) as core:
        assert core.metadata["exception"]["type"] == "builtins.KeyError"


def test_free_space_floor(tmp_path):
    r = run(
        [
            sys.executable,
            PROGRAM,
            "burst",
            json.dumps(
                {
                    "dir": str(tmp_path),
                    "max_cores": 5,
                    "min_interval": 0,
                    "signals": 3,
                    "gap": 0.2,
                    "min_free": 1 << 60,
                }
            ),
        ]
    )
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["counters"]["cores"] == 0 and res["counters"]["skipped_free_space"] == 3, res
    assert "skipped free_space" in res["events"] and res["listing"] == []


def test_burst_of_signals_respects_the_guards(tmp_path):
    r = run(
        [
            sys.executable,
            PROGRAM,
            "burst",
            json.dumps({"dir": str(tmp_path), "max_cores": 3, "min_interval": 0.3, "gap": 0.01}),
        ]
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    c = res["counters"]
    found = [n for n in res["listing"] if n.endswith(".core")]
    assert 1 <= c["cores"] <= 3 and len(found) == c["cores"], res
    assert c["failed"] == 0
    assert c["skipped_min_interval"] + c["merged"] > 0
    assert not any(n.endswith(".partial") for n in res["listing"])
    assert res["children"] == [] and res["fds_during_same"] and res["fds_after_same"]
    starts = [ln for ln in res["events"].splitlines() if ln.startswith("start")]
    assert len(starts) == c["cores"]


def test_signals_racing_with_python_snapshots(tmp_path):
    r = run([sys.executable, PROGRAM, "mixed", json.dumps({"dir": str(tmp_path)})], timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["errors"] and len(res["made"]) == 6, res
    assert res["counters"]["cores"] >= 1 and res["counters"]["failed"] == 0, res
    found = [n for n in res["listing"] if n.endswith(".core")]
    assert len(found) == 6 + res["counters"]["cores"], res
    assert not any(n.endswith(".partial") for n in res["listing"]) and res["children"] == []
    for name in found:
        with gencore.open_core(tmp_path / name) as core:
            assert len(core.threads) >= 4 and core.metadata["reason"] in ("api", "signal")


def test_max_cores_holds(tmp_path):
    r = run(
        [
            sys.executable,
            PROGRAM,
            "burst",
            json.dumps({"dir": str(tmp_path), "max_cores": 2, "min_interval": 0, "gap": 0.02}),
        ]
    )
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["counters"]["cores"] == 2, res
    assert res["counters"]["skipped_max_cores"] > 0
    assert len([n for n in res["listing"] if n.endswith(".core")]) == 2
    assert "skipped max_cores" in res["events"]


def test_uninstall_restores_every_handler_and_hook(tmp_path):
    r = run([sys.executable, PROGRAM, "uninstall", json.dumps({"dir": str(tmp_path)})])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(res["changed"].values()) and res["hooked"]  # install really replaced them
    assert res["restored"] and res["hooks_restored"] and res["python_handler"]
    assert res["fds_same"] and res["state_file_gone"] and not res["installed"]


def test_forked_child_gets_its_own_trigger(tmp_path):
    r = run([sys.executable, PROGRAM, "fork", json.dumps({"dir": str(tmp_path)})])
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    child = next(x for x in lines if "child" in x)
    parent = next(x for x in lines if "parent" in x)
    assert child["counters"]["cores"] == 1 and parent["counters"]["cores"] == 0
    assert child["state"].endswith(f"/{child['child']}.json")
    found = cores(tmp_path)
    assert len(found) == 1 and f".{child['child']}." in found[0].name
    with gencore.open_core(found[0]) as core:
        assert core.pid == child["child"]


ALTSTACK_PROBE = r"""
import ctypes, faulthandler, json, threading, time
import gencore

class StackT(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

libc = ctypes.CDLL(None, use_errno=True)

def altstack():
    s = StackT()
    assert libc.sigaltstack(None, ctypes.byref(s)) == 0
    return [s.sp, s.flags, s.size]

faulthandler.enable()  # the main thread gets faulthandler's alternate stack
seen = {}
def worker(key):
    while key not in seen:
        time.sleep(0.01)
    seen[key + "-state"] = altstack()
    time.sleep(0.3)
    seen[key + "-after"] = altstack()
w = threading.Thread(target=worker, args=("w",))
w.start()
main_before = altstack()
gencore.install(on_crash=True)
time.sleep(0.3)  # the helper thread covers the worker
covered = gencore.installed().counters["altstacks"]
main_during = altstack()
seen["w"] = 1
time.sleep(0.1)
gencore.uninstall()
w.join()
print(json.dumps({"before": main_before, "during": main_during, "after": altstack(),
                  "covered": covered, "worker": seen["w-state"], "worker_after": seen["w-after"]}))
"""


def test_alternate_stacks_are_given_and_taken_back(tmp_path):
    r = run([sys.executable, "-c", ALTSTACK_PROBE], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["covered"] >= 3  # main, worker, the helper thread
    # faulthandler's stack was too small for our handler: replaced while installed ...
    assert d["during"][2] >= 64 * 1024 and d["during"][0] != d["before"][0]
    assert d["worker"][2] == 64 * 1024 and d["worker"][1] == 0
    # ... and back afterwards, in the main thread and the worker (SS_DISABLE = 2)
    assert d["after"] == d["before"]
    assert d["worker_after"][1] == 2


EXCEPTION_WITH_OPTIONS = """
import logging, signal, sys, threading
import gencore
logging.basicConfig(level=logging.INFO)
gencore.install(signals=(), directory=sys.argv[1], on_exception=True,
                freeze_signal=signal.SIGRTMIN + 4, freeze_timeout=0.05,
                timeout=float(sys.argv[2]), min_interval=0)
def fail():
    raise ValueError("on purpose")
t = threading.Thread(target=fail, name="failing")
t.start()
t.join()
"""


def test_exception_cores_use_the_options_given_to_install(tmp_path):
    """freeze_signal, freeze_timeout and timeout reach the core taken for an exception."""
    r = run([sys.executable, "-c", EXCEPTION_WITH_OPTIONS, str(tmp_path), "60"])
    assert r.returncode == 0, r.stderr
    found = cores(tmp_path)
    assert len(found) == 1, r.stderr
    with gencore.open_core(found[0]) as core:
        assert core.metadata["reason"] == "exception"
        assert core.capture["freeze_signal"] == signal.SIGRTMIN + 4
        assert core.capture["freeze_timeout_ns"] == 50_000_000
    # a timeout no core can meet: the core is abandoned after it, and says so
    (tmp_path / "late").mkdir()
    r = run([sys.executable, "-c", EXCEPTION_WITH_OPTIONS, str(tmp_path / "late"), "0.000001"])
    assert "was not finished within 1e-06 s" in r.stderr, r.stderr
    assert list((tmp_path / "late").iterdir()) == []
