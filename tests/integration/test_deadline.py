"""gencore.deadline: one core when a deadline passes (even with the GIL held in C), none when
it is cancelled in time; pystack shows the thread that armed it."""

from __future__ import annotations

import json
import sys

from conftest import PROGRAMS, real_python, run, tool

import gencore

SCRIPT = """
import json, sys, threading, time, gencore
from gil import hold_gil_in_c
gencore.install(signals=(), directory=sys.argv[1])
with gencore.deadline(5, name="in time") as quick:
    time.sleep(0.2)
def the_work():
    with gencore.deadline(0.5, name='export "nightly"') as dl:
        hold_gil_in_c(2.5)
    return dl
dl = the_work()
print(json.dumps({"quick": quick.passed, "passed": dl.passed, "core": str(dl.core),
                  "tid": threading.get_native_id(), "counters": gencore.installed().counters}))
gencore.uninstall()
try:
    gencore.deadline(1)
except gencore.GencoreError as e:
    print(json.dumps({"refused": str(e)}))
"""


def test_a_deadline_that_passes_gives_one_core_of_its_thread(tmp_path):
    r = run([sys.executable, "-c", SCRIPT, str(tmp_path)], env={"PYTHONPATH": str(PROGRAMS)})
    assert r.returncode == 0, r.stderr
    result, refused = (json.loads(line) for line in r.stdout.splitlines()[-2:])
    assert result["quick"] is False and result["passed"] is True
    assert "needs gencore's triggers" in refused["refused"]
    cores = sorted(tmp_path.glob("*.core"))
    assert [str(c) for c in cores] == [result["core"]]  # one core: the cancelled one made none
    assert result["counters"]["hangs"] == 1
    with gencore.open_core(cores[0]) as core:
        assert core.metadata["reason"] == "hang: deadline"
        watch = core.metadata["watch"]
        assert watch["name"] == 'export "nightly"' and watch["deadline"] == 0.5
        assert watch["tid"] == result["tid"] and core.threads[0].tid == result["tid"]
        assert 0.5 <= watch["stalled_seconds"] < 2.5
    out = run([tool("pystack"), "core", str(cores[0]), real_python()]).stdout
    assert "in the_work" in out and "in hold_gil_in_c" in out, out
