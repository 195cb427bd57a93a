"""Failure contract: every failure leaves the app running, no zombie, no fd leak, no .partial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore


def scenario(name: str, timeout: float = 180, **args) -> dict:
    p = subprocess.run(
        [sys.executable, str(PROGRAMS / "scenario.py"), name, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, f"scenario {name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def no_partials(listing) -> bool:
    return not any(n.endswith(".partial") for n in listing)


def assert_valid_core(path: str, nthreads: int | None = None) -> None:
    with gencore.open_core(path) as core:
        assert core.threads
        if nthreads is not None:
            assert len(core.threads) == nthreads
    p = run([tool("pystack"), "core", path, real_python()])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback for thread" in p.stdout


def test_missing_directory_fails_before_fork(tmp_path):
    r = scenario("basic", dir=str(tmp_path / "nope"))
    assert r["error"]["type"] == "CoreDirectoryError"
    assert r["error"]["stage"] == "preflight"
    assert "does not exist" in r["error"]["msg"] and str(tmp_path / "nope") in r["error"]["msg"]
    assert r["children"] == [] and r["fds_same"]


def test_unwritable_directory_fails_before_fork(mount_tmpfs):
    d = mount_tmpfs("1m", "ro")
    r = scenario("basic", dir=str(d))
    assert r["error"]["type"] == "CoreDirectoryError"
    assert r["error"]["stage"] == "preflight"
    assert str(d) in r["error"]["msg"] and "EROFS" in r["error"]["msg"]
    assert r["children"] == [] and r["fds_same"]


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_enospc_on_small_tmpfs(mount_tmpfs, compress):
    d = mount_tmpfs("2m")
    r = scenario("basic", dir=str(d), kw={"compress": compress})
    e = r["error"]
    assert e["type"] == "CoreWriteError", e
    assert e["errno"] == 28 and str(d) in e["msg"] and "wrote" in e["msg"]
    assert e["written"] > 0
    assert r["listing"] == [] and r["fds_same"] and r["children"] == []


def test_a_failing_compressor_is_a_clear_error(tmp_path):
    # a zstandard that imports but cannot compress: the compressor process fails
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "zstandard.py").write_text(
        "def ZstdCompressor(**kw):\n    raise RuntimeError('broken on purpose')\n"
    )
    d = tmp_path / "cores"
    d.mkdir()
    env = dict(os.environ, PYTHONPATH=f"{fake}:{os.environ.get('PYTHONPATH', '')}")
    p = subprocess.run(
        [sys.executable, str(PROGRAMS / "scenario.py"), "basic"]
        + [json.dumps({"dir": str(d), "kw": {"compress": "zstd"}})],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    e = r["error"]
    assert e["type"] == "CoreWriteError", e
    assert "zstd compressor" in e["msg"] and "failed" in e["msg"] and str(d) in e["msg"], e
    assert r["listing"] == [] and r["fds_same"] and r["children"] == []


def test_compress_values_are_checked_before_any_fork(tmp_path):
    with pytest.raises(ValueError, match="compress must be None or 'zstd'"):
        gencore.create_core(tmp_path, compress="gzip")
    with pytest.raises(ValueError, match="method='native'"):
        gencore.create_core(tmp_path, compress="zstd", method="kernel")
    with pytest.raises(ValueError, match="compress must be"):
        gencore.install(directory=tmp_path, compress="lz4")
    assert os.listdir(tmp_path) == []


def test_file_size_limit_is_a_clear_error(tmp_path):
    # RLIMIT_FSIZE would send SIGXFSZ; the child blocks it and gets EFBIG instead
    r = scenario("fsize_limit", dir=str(tmp_path))
    e = r["error"]
    assert e["type"] == "CoreWriteError" and e["errno"] == 27, e
    assert "file too large" in e["msg"] and str(tmp_path) in e["msg"]
    assert r["listing"] == [] and r["fds_same"] and r["children"] == []


def test_rlimit_core_zero(tmp_path):
    r = scenario("rlimit_core_zero", dir=str(tmp_path))
    assert r["rlimit"] == [0, 0]
    assert len(r["threads"]) == 4
    assert_valid_core(r["core"], 4)


def test_sigchld_ignored(tmp_path):
    r = scenario("sigchld_ignored", dir=str(tmp_path))
    assert r["children"] == [] and r["fds_same"]
    assert_valid_core(r["core"], 4)


def test_waitpid_reaper_in_app(tmp_path):
    r = scenario("reaper", dir=str(tmp_path))
    assert r["stolen"] == []
    assert_valid_core(r["core"])


def test_concurrent_callers_get_distinct_cores(tmp_path):
    r = scenario("concurrent", dir=str(tmp_path), n=8)
    assert all(isinstance(x, list) for x in r["results"]), r["results"]
    paths = [p for p, _ in r["results"]]
    assert len(set(paths)) == 8
    assert no_partials(r["listing"]) and len(r["listing"]) == 8 and r["children"] == []
    for p, caller in r["results"]:
        with gencore.open_core(p) as core:
            # each core is its caller's: that thread comes first (gdb's selected thread)
            assert core.threads[0].tid == caller
            assert len(core.threads) >= 2


def test_thread_blocking_freeze_signal(tmp_path):
    r = scenario("blocked_signal", dir=str(tmp_path), freeze_timeout=0.3)
    assert r["incomplete"] == [r["blocked_tid"]]
    assert r["survived"] is True  # the pending freeze signal did not kill the process
    assert r["elapsed"] < 0.3 + 30
    with gencore.open_core(r["core"]) as core:
        assert core.incomplete_threads == [r["blocked_tid"]]
        t = next(t for t in core.threads if t.tid == r["blocked_tid"])
        assert t.sp != 0 and t.pc != 0  # from /proc/self/task/TID/syscall
    p = run([tool("pystack"), "core", r["core"], real_python()])
    assert p.returncode == 0 and f"Traceback for thread {r['blocked_tid']}" in p.stdout


def test_stdout_reader_sees_eof_while_core_is_written(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PROGRAMS / "scenario.py"),
            "stdout_eof",
            json.dumps({"dir": str(tmp_path)}),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pipes = {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (proc.stdout, proc.stderr)}
    try:
        out, _ = proc.communicate(timeout=60)  # returns at EOF on stdout and stderr
    finally:
        proc.kill()
    child = json.loads(out.decode().strip().splitlines()[-1])["child"]
    # EOF came while the snapshot child still runs and the core is not yet published
    published_at_eof = list(tmp_path.glob("core_*.core"))
    assert os.path.exists(f"/proc/{child}"), "the child was gone already: no proof"
    try:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            assert f.read()  # still the application's image, not a zombie
        links = {os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")}
        assert not links & pipes, links
    finally:
        os.kill(child, signal.SIGCONT)
    assert published_at_eof == []
    deadline = time.time() + 120
    while os.path.exists(f"/proc/{child}") and time.time() < deadline:
        time.sleep(0.05)
    cores = list(tmp_path.glob("core_*.core"))
    assert len(cores) == 1 and not list(tmp_path.glob(".*.partial"))
    assert_valid_core(str(cores[0]))


def test_timeout_kills_child_and_cleans_up(tmp_path):
    r = scenario("timeout", dir=str(tmp_path))
    assert r["timed_out"], r
    assert r["error"]["type"] == "CoreTimeoutError"
    assert r["listing"] == [] and r["children"] == []


def test_not_dumpable_refused_unless_forced(tmp_path):
    r = scenario("not_dumpable", dir=str(tmp_path))
    assert r["refused"] and r["error"]["stage"] == "preflight"
    assert_valid_core(r["forced"])


def test_reservations_do_not_cost(tmp_path):
    base = scenario(
        "reservations", dir=str(tmp_path / "a") if (tmp_path / "a").mkdir() is None else ""
    )
    big = scenario(
        "reservations",
        dir=str(tmp_path / "b") if (tmp_path / "b").mkdir() is None else "",
        reserve=True,
    )
    # The 2 GiB mapping is listed with its full size (sparse) but only touched pages are
    # written; the 64 GiB PROT_NONE reservation is listed with nothing dumped.
    assert big["apparent"] >= base["apparent"] + (2 << 30) - (64 << 20)
    # 8 touched pages: up to 8 transparent huge pages (2 MiB each) of real data
    assert big["blocks"] <= base["blocks"] + (48 << 20), (base, big)
    assert big["written"] <= base["written"] + (48 << 20), (base, big)
    with gencore.open_core(big["core"]) as core:
        huge = [m for m in core.mappings if m.size >= (64 << 30)]
        assert huge and all(m.filesz == 0 for m in huge)


def test_partial_name_is_hidden_and_file_private(tmp_path):
    r = scenario("basic", dir=str(tmp_path))
    st = os.stat(r["core"])
    assert st.st_mode & 0o777 == 0o600
    assert Path(r["core"]).name.startswith("core_") and r["core"].endswith(".core")
    assert no_partials(r["listing"])


def test_name_must_be_plain(tmp_path):
    with pytest.raises(ValueError):
        gencore.create_core(tmp_path, name="../x")


def test_unique_name_collision(tmp_path):
    name = f"fixed-{uuid.uuid4().hex}"
    (tmp_path / f"{name}.core").write_bytes(b"")
    with pytest.raises(gencore.CoreDirectoryError):
        gencore.create_core(tmp_path, name=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.core"]
