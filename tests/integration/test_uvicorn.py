"""uvicorn with spawned workers under `gencore run --on-hang`: every worker is armed (the
process-start hook), and a handler that blocks the event loop gets a core of its worker
(reason hang: loop); pystack is the oracle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

pytestmark = pytest.mark.once


def test_a_blocked_event_loop_in_a_worker_gets_a_core(tmp_path):
    from test_gunicorn import free_port, get

    cores, out, port = tmp_path / "cores", tmp_path / "out", free_port()
    cores.mkdir()
    out.mkdir()
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    env = dict(os.environ, APP_OUT=str(out), PYTHONPATH=str(PROGRAMS))
    log = open(tmp_path / "uvicorn.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "gencore", "run", "--on-hang", "2", "-d", str(cores), "--",
         uvicorn, "asgi_app:app", "--workers", "2", "--loop", "asyncio", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if "200 OK" in get(port, "/"):
                    break
            except OSError:
                time.sleep(0.2)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /block HTTP/1.0\r\nHost: x\r\n\r\n")
        block = out / "block.json"
        while not block.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = json.loads(block.read_text())
        while time.monotonic() < deadline and not list(cores.glob("*.core")):
            time.sleep(0.2)
        time.sleep(0.5)  # the published core is whole; let a second (wrong) one show up
        found = sorted(cores.glob("*.core"))
        s.close()
    finally:
        server.terminate()
        server.wait(30)
        log.seek(0)
        text = log.read()
        log.close()
    assert len(found) == 1, (found, text[-3000:])
    assert f".{worker['pid']}." in found[0].name
    with gencore.open_core(found[0]) as core:
        assert core.metadata["reason"] == "hang: loop"
        assert core.threads[0].tid == worker["tid"]
    out = run([tool("pystack"), "core", str(found[0]), real_python()]).stdout
    assert "in blocking_handler" in out and "in app" in out, out
