"""celery's prefork pool: a task past its hard time limit leaves a core of the pool child,
written before billiard kills it; pystack is the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

pytestmark = pytest.mark.once


def test_a_task_past_its_time_limit_gets_a_core_of_the_pool_child(tmp_path):
    cores, out = tmp_path / "cores", tmp_path / "out"
    cores.mkdir()
    out.mkdir()
    env = dict(os.environ, GENCORE_DIR=str(cores), APP_OUT=str(out), PYTHONPATH=str(PROGRAMS))
    log = open(tmp_path / "worker.log", "w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
         "--concurrency", "1", "--loglevel", "INFO", "--without-heartbeat",
         "--without-mingle", "--without-gossip"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        r = run(
            [sys.executable, "-c", "from celery_app import stuck_task; stuck_task.delay()"],
            env={k: env[k] for k in ("GENCORE_DIR", "APP_OUT", "PYTHONPATH")},
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline and worker.poll() is None:
            log.seek(0)
            text = log.read()
            if "Hard time limit (3" in text and "exceeded" in text:
                break
            time.sleep(0.2)
        assert "Hard time limit (3" in text, text[-3000:]
        task = json.loads((out / "task.json").read_text())
        found = sorted(cores.glob(f"*.{task['pid']}.*.core"))
        assert len(found) == 1, (sorted(cores.iterdir()), text[-3000:])
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    with gencore.open_core(found[0]) as core:
        assert core.pid == task["pid"] and core.threads[0].tid == task["tid"]
        watch = core.metadata["watch"]
        assert core.metadata["reason"] == "hang: deadline"
        assert watch["name"].startswith("celery_app.stuck_task[") and watch["deadline"] == 2.0
    text = run([tool("pystack"), "core", str(found[0]), real_python()]).stdout
    assert "in stuck_task" in text and "in hold_gil_in_c" in text, text
