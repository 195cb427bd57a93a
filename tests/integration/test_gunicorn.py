"""gunicorn: a worker it times out leaves a complete core taken before the kill, with the
hooks of gencore.integrations.gunicorn and under `gencore run`; `gencore trigger --tree` on
the arbiter gives one core per process, the processes and top frames of py-spy's
`dump --subprocesses` taken just before. Oracles: pystack, eu-stack, py-spy."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore

pytestmark = pytest.mark.once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        return s.recv(4096).decode(errors="replace")


class Server:
    def __init__(self, tmp: Path, cmd: list[str], workers: int) -> None:
        self.cores, self.out, self.port = tmp / "cores", tmp / "out", free_port()
        self.cores.mkdir()
        self.out.mkdir()
        self.log = open(tmp / "gunicorn.log", "w+")
        env = dict(
            __import__("os").environ,
            GENCORE_DIR=str(self.cores),
            APP_OUT=str(self.out),
            PYTHONPATH=str(PROGRAMS),
        )
        self.proc = subprocess.Popen(
            [*cmd, "--workers", str(workers), "--timeout", "5", "--bind",
             f"127.0.0.1:{self.port}", "wsgi_app:app"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if "200 OK" in get(self.port, "/"):
                    break
            except OSError:
                time.sleep(0.2)
        while len(self.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(self.workers()) == workers, self.text()

    def workers(self) -> list[int]:
        from gencore import _procfs

        return _procfs.children(self.proc.pid)

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn with 4 sync workers and a config file holding only the star import."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    (tmp / "gunicorn.conf.py").write_text("from gencore.integrations.gunicorn import *\n")
    s = Server(tmp, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], workers=4)
    yield s
    s.stop()


def pystack_top(core: Path, tid: int) -> str:
    """pystack's innermost Python function of thread ``tid`` in the core."""
    out = run([tool("pystack"), "core", str(core), real_python()]).stdout
    start = out.index(f"Traceback for thread {tid} ")
    end = out.find("\nTraceback for thread", start + 1)
    frames = re.findall(r'\(Python\) File "[^"]+", line \d+, in (\S+)', out[start:end])
    return frames[-1]


def pyspy_tree(pid: int) -> dict[int, str]:
    """py-spy's innermost frame of each process's main thread (the reference)."""
    out = run([tool("py-spy"), "dump", "--pid", str(pid), "--subprocesses"]).stdout
    tops: dict[int, str] = {}
    for block in re.split(r"\n(?=Process \d+:)", out):
        m = re.match(r"Process (\d+):", block.strip())
        if not m:
            continue
        p = int(m.group(1))
        thread = re.search(rf"Thread (?:0x[0-9A-Fa-f]+|{p}) \([^)]*\)[^\n]*\n\s+(\S+) \(", block)
        assert thread, block
        tops[p] = thread.group(1)
    return tops


def test_tree_of_the_arbiter_gives_one_core_per_process_like_py_spy(server, tmp_path):
    # the reference once the server is idle (two dumps in a row agree: it finished starting)
    reference, previous = pyspy_tree(server.proc.pid), None
    for _ in range(20):
        if reference == previous:
            break
        previous, reference = reference, pyspy_tree(server.proc.pid)
    assert set(reference) == {server.proc.pid, *server.workers()}, reference
    r = run([sys.executable, "-m", "gencore", "trigger", "--tree", str(server.proc.pid),
             "--wait", "--collect", str(tmp_path / "tree.tar.gz")], timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines() if re.match(r"\s*\d+ ", ln)]
    cores = {int(ln[0]): Path(ln[3]) for ln in lines}
    assert set(cores) == set(reference), r.stdout
    span = float(re.search(r"capture moments span ([\d.]+) ms over 5 cores", r.stdout).group(1))
    assert span < 100, r.stdout
    for pid, core in cores.items():
        with gencore.open_core(core) as c:
            assert c.pid == pid
        # py-spy names the qualified name (3.11+), pystack the code's name
        assert pystack_top(core, pid) == reference[pid].rsplit(".", 1)[-1], (pid, reference)
    import tarfile

    with tarfile.open(tmp_path / "tree.tar.gz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(next(n for n in names if n.endswith("manifest.json"))))
    assert {p["pid"] for p in manifest["processes"]} == set(reference)
    assert all(p["time"] and p["cmdline"] for p in manifest["processes"])
    assert sum(n.endswith(".core") for n in names) == 5


def timed_out_worker(server: Server) -> tuple[dict, Path]:
    """Send a request whose view blocks in C; gunicorn times the worker out (SIGABRT) and
    SIGKILLs it a moment later. Returns the view's pid/tid and the worker's core."""
    before = set(server.cores.glob("*.core"))  # the tree test's cores
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /block HTTP/1.0\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 60
    block = server.out / "block.json"
    while not block.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    view = json.loads(block.read_text())
    while time.monotonic() < deadline and "was sent SIGKILL" not in server.text():
        time.sleep(0.2)
    s.close()
    log = server.text()
    assert f"WORKER TIMEOUT (pid:{view['pid']})" in log, log[-3000:]
    assert f"Worker (pid:{view['pid']}) was sent SIGKILL" in log, log[-3000:]
    new = set(server.cores.glob("*.core")) - before
    found = [p for p in new if f".{view['pid']}." in p.name]
    assert len(found) == 1, (found, log[-3000:])
    assert not list(server.cores.glob(".*.partial"))
    return view, found[0]


def check_timeout_core(view: dict, core: Path) -> None:
    with gencore.open_core(core) as c:
        assert c.pid == view["pid"]
        assert c.metadata["reason"] == "signal"
    out = run([tool("pystack"), "core", str(core), real_python()]).stdout
    assert "SIGABRT" in out, out
    assert pystack_top(core, view["tid"]) == "hold_gil_in_c"
    assert "in blocking_view" in out and "in app" in out, out
    eu = run([tool("eu-stack"), "--core", str(core), "--executable", real_python()])
    stack = eu.stdout[eu.stdout.index(f"TID {view['tid']}:") :]
    assert "ffi_call" in stack.split("\nTID ")[0], eu.stdout + eu.stderr  # the ctypes call


def test_a_timed_out_worker_leaves_a_complete_core(server):
    view, core = timed_out_worker(server)
    check_timeout_core(view, core)


def test_gencore_run_gunicorn_gets_the_same_core(tmp_path):
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    cmd = [sys.executable, "-m", "gencore", "run", "--", gunicorn]
    s = Server(tmp_path, cmd, workers=2)
    try:
        view, core = timed_out_worker(s)
    finally:
        s.stop()
    check_timeout_core(view, core)
