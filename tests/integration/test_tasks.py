"""`gencore tasks` reads every asyncio task from a core: the same tasks, coroutine stacks and
awaiters as `python -m asyncio ps` on the live process right before the dump (3.14+), or as
the program saw itself just before it (3.9-3.13); what each task is blocked on; the await tree
as pstree draws it; a hang: loop core, uvloop, and damaged task objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, run
from test_stacks import _wait_for

import gencore

PROGRAM = str(PROGRAMS / "tasks.py")
NEW = sys.version_info >= (3, 14)
PS_TABLE = (
    "import json, sys\n"
    "from asyncio.tools import _get_awaited_by_tasks, build_task_table\n"
    "print(json.dumps(build_task_table(_get_awaited_by_tasks(int(sys.argv[1])))))\n"
)


def take(directory: Path, **args) -> dict:
    """Run the program until its tasks are parked, take the live process's own views
    (`python -m asyncio ps` and `pstree` on 3.14+), then its core (the signal trigger; the
    watchdog with ``hang``)."""
    view = directory / "view.json"
    p = subprocess.Popen(
        [sys.executable, PROGRAM, str(directory), str(view), json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=directory,
    )
    out: dict = {}
    try:
        pid = json.loads(p.stdout.readline())["pid"]
        if NEW and not args.get("hang"):
            ps = run([sys.executable, "-m", "asyncio", "ps", str(pid)])
            assert ps.returncode == 0, ps.stdout + ps.stderr
            rows = run([sys.executable, "-c", PS_TABLE, str(pid)])
            assert rows.returncode == 0, rows.stderr
            out["ps"] = json.loads(rows.stdout)
            out["pstree"] = run([sys.executable, "-m", "asyncio", "pstree", str(pid)])
        if not args.get("hang"):
            os.kill(pid, signal.SIGUSR2)
        out["core"] = _wait_for(directory, "core_*.core", time.monotonic() + 120)
    finally:
        p.kill()
        p.wait()
    if view.exists():
        out["view"] = json.loads(view.read_text())
    return out


@pytest.fixture(scope="session")
def parked(tmp_path_factory):
    return take(tmp_path_factory.mktemp("tasks"))


def ours(core: Path, *opts: str) -> dict:
    p = run([sys.executable, "-m", "gencore", "tasks", "--json", *opts, str(core)])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_tasks_match_the_programs_own_view(parked):
    """3.9-3.13 (and every version): the task names, coroutine chains and awaiter names the
    program read from its live objects just before it parked."""
    doc = ours(parked["core"])
    names = {t["id"]: t["name"] for t in doc["tasks"]}
    mine = {
        (
            t["name"],
            tuple(f["function"] for f in t["coroutine"]),
            tuple(sorted(names[a] for a in t["awaited_by"])),
        )
        for t in doc["tasks"]
        if t["name"] != "main"  # it was running when it wrote its view
    }
    theirs = {
        (t["name"], tuple(t["coroutine"]), tuple(t["awaited_by"]))
        for t in parked["view"]["tasks"]
        if t["name"] != "main"
    }
    assert mine == theirs
    assert sum(t["name"].startswith("parked-") for t in doc["tasks"]) == 1000


@pytest.mark.skipif(not NEW, reason="python -m asyncio ps exists from Python 3.14")
def test_tasks_match_asyncio_ps(parked):
    """(task name, coroutine function names innermost first, awaiter name) for every row."""
    doc = ours(parked["core"])
    by_id = {t["id"]: t for t in doc["tasks"]}
    mine = set()
    for t in doc["tasks"]:
        stack = " -> ".join(f["function"] for f in reversed(t["coroutine"]))
        awaiters = [by_id[a]["name"] for a in t["awaited_by"]] or [""]
        mine.update((t["name"], stack, a) for a in awaiters)
    theirs = {(r[2], r[3], r[5]) for r in parked["ps"]}
    assert mine == theirs
    assert {t["id"] for t in doc["tasks"]} == {r[1] for r in parked["ps"]}


def _tree_paths(lines: list[str]) -> set[tuple[str, ...]]:
    """Root-to-leaf label paths of a pstree-style drawing."""
    paths, stack = set(), []
    for line in lines:
        if not line.strip():
            continue
        cut = max(line.find("└── "), line.find("├── "))
        depth = cut // 4
        label = line[cut + 4 :].strip().replace(" (await cycle: drawn above)", "")
        del stack[depth:]
        if stack and len(stack) == depth:
            paths.discard(tuple(stack))
        stack.append(label.replace("(T)", "").strip())
        paths.add(tuple(stack))
    return paths


@pytest.mark.skipif(not NEW, reason="python -m asyncio pstree exists from Python 3.14")
def test_tree_matches_pstree(tmp_path):
    """pstree refuses await cycles: this process has none."""
    got = take(tmp_path, cycle=False, parked=50)
    assert got["pstree"].returncode == 0, got["pstree"].stderr
    p = run([sys.executable, "-m", "gencore", "tasks", "--tree", str(got["core"])])
    assert p.returncode == 0, p.stderr
    tree = p.stdout.split("\n\n", 1)[1]
    assert _tree_paths(tree.splitlines()) == _tree_paths(got["pstree"].stdout.splitlines())


def test_what_tasks_are_blocked_on(parked):
    doc = ours(parked["core"])
    t = {x["name"]: x for x in doc["tasks"]}
    kind = {n: x["blocked_on"]["kind"] for n, x in t.items()}
    assert kind["lock-waiter"] == "lock" and t["lock-waiter"]["blocked_on"]["waiters"] == 1
    assert kind["event-waiter"] == "event" and t["event-waiter"]["blocked_on"]["waiters"] == 2
    assert kind["queue-getter"] == "queue.get" and t["queue-getter"]["blocked_on"]["waiters"] == 1
    assert kind["future-waiter"] == "future"
    assert kind["gatherer"] == "gather" and kind["shielded"] == "shield"
    assert kind["cycle-a"] == kind["cycle-b"] == "task"
    assert kind["wait-for"] == ("sleep" if sys.version_info >= (3, 12) else "wait_for")
    if sys.version_info >= (3, 11):
        assert kind["outer-group"] == kind["nested-group"] == "taskgroup"
    # sleep(1800) began before the program parked; the core was taken within 120 s of that
    left = t["sleeper"]["blocked_on"]["remaining"]
    assert 1800 - 130 < left <= 1800, left
    ids = {x["name"]: x["id"] for x in doc["tasks"]}
    assert [sorted(c) for c in doc["cycles"]] == [
        sorted([ids["cycle-a"], ids["cycle-b"], ids["cycle-a"]])
    ]
    assert {x["state"] for x in doc["tasks"]} == {"pending"}
    assert len(doc["loops"]) == 1 and doc["loops"][0]["thread"] == parked["view"]["tid"]


def test_text_outputs(parked):
    p = run([sys.executable, "-m", "gencore", "tasks", str(parked["core"])])
    assert p.returncode == 0, p.stderr
    assert "await cycle: cycle-a → cycle-b → cycle-a" in p.stdout or (
        "await cycle: cycle-b → cycle-a → cycle-b" in p.stdout
    )
    assert "asyncio.locks.Lock at 0x" in p.stdout
    p = run([sys.executable, "-m", "gencore", "stacks", str(parked["core"])])
    assert p.returncode == 0, p.stderr
    n = len(parked["view"]["tasks"])
    assert "Event loop" in p.stdout and f"{n} pending tasks" in p.stdout
    p = run([sys.executable, "-m", "gencore", "info", str(parked["core"])])
    assert f"asyncio:  {n} tasks ({n} pending) on 1 loop " in p.stdout, p.stdout


def test_hang_loop_core_shows_the_blocking_task(tmp_path):
    got = take(tmp_path, hang=True, hang_timeout=1.0, parked=10)
    with gencore.open_core(got["core"]) as core:
        assert core.metadata["reason"] == "hang: loop"
        report = core.tasks()
    main = next(t for t in report.tasks if t.name == "main")
    assert main.running and main.blocked_on.kind == "running"
    assert [f.qualname for f in main.coroutine] == ["main"]
    assert main.thread == report.loops[0].thread
    assert not [t for t in report.tasks if t.running and t.name != "main"]


def test_uvloop(tmp_path):
    """uvloop is one of the test extras: where it is missing, the program fails and so does
    this test."""
    got = take(tmp_path, loop="uvloop", parked=20)
    doc = ours(got["core"])
    assert doc["loops"][0]["type"] == "uvloop.Loop" and doc["loops"][0]["thread"]
    names = {t["name"] for t in doc["tasks"]}
    assert {"lock-waiter", "gatherer", "parked-19"} <= names


def test_damaged_task_objects_give_tasks_or_core_format_error(parked, tmp_path):
    """Flip bytes inside the task objects and what they point to: every run gives a report
    or CoreFormatError, never another exception or a hang."""
    import random

    from gencore.analysis.memory import CoreMemory

    src = Path(parked["core"])
    with gencore.open_core(src) as core:
        mem = CoreMemory(core)
        offsets = []
        for t in core.tasks(include_done=True).tasks[:40]:
            for addr in (t.id, t.coro_address):
                try:
                    offsets.append(mem.offset(addr, 256))
                except Exception:
                    pass
        mem.close()
    data = src.read_bytes()
    rng = random.Random(1234)
    bad = tmp_path / "bad.core"
    for case in range(int(os.environ.get("GENCORE_FUZZ_TASKS", "40"))):
        b = bytearray(data)
        for _ in range(64):
            at = rng.choice(offsets) + rng.randrange(256)
            b[at] = rng.randrange(256) if case % 2 else b[at] ^ (1 << rng.randrange(8))
        bad.write_bytes(b)
        try:
            with gencore.open_core(bad) as core:
                report = core.tasks(include_done=True)
                report.to_json()
                list(gencore.analysis.tasks.await_tree(report))
        except gencore.CoreFormatError:
            pass
