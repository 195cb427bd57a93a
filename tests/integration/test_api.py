"""The Python surface: async, callback form, threads=False, errors."""

from __future__ import annotations

from test_failures import assert_valid_core, no_partials, scenario

import gencore


def test_create_core_async_runs_the_loop_meanwhile(tmp_path):
    r = scenario("async", dir=str(tmp_path))
    assert r["threads"] == 3
    assert r["thread_names"] == ["MainThread", "idle0", "idle1"]  # no helper thread
    assert_valid_core(r["core"], 3)


def test_create_core_async_cancel(tmp_path):
    r = scenario("async_cancel", dir=str(tmp_path))
    assert r["outcome"] == "cancelled"
    assert r["listing"] == [] and r["children"] == []


def test_start_core_future_and_callback(tmp_path):
    r = scenario("start_core", dir=str(tmp_path))
    assert r["callback"] == [["None", r["core"]]]
    assert_valid_core(r["core"])


def test_threads_false_captures_only_the_caller(tmp_path):
    r = scenario("threads_false", dir=str(tmp_path))
    # the others are listed (readers check thread ids against the core's) but not frozen
    assert r["threads"][0] == [r["me"], "caller"]
    assert sorted(st for _, st in r["threads"][1:]) == ["incomplete"] * 3
    assert_valid_core(r["core"], 4)


def test_a_collection_during_the_thread_walk_does_not_hang_the_process(tmp_path):
    # a collection clearing a thread-local while the thread list is walked hung 3.11 (gh-106883)
    r = scenario("gc_during_current_frames", timeout=60, dir=str(tmp_path))
    assert r["gc_enabled"] is True  # the collector is on again afterwards
    assert_valid_core(r["core"], 4)


def test_errors_share_one_hierarchy():
    for cls in (
        gencore.CoreDirectoryError,
        gencore.CoreWriteError,
        gencore.CoreTimeoutError,
        gencore.NotDumpableError,
        gencore.FreezeError,
        gencore.CoreForkError,
        gencore.UnsupportedPlatformError,
        gencore.CoreFormatError,
    ):
        assert issubclass(cls, gencore.GencoreError)
    e = gencore.CoreWriteError(
        "no space left on /x", errno=28, stage="memory", advice="free space", written=1, total=2
    )
    assert "free space" in str(e) and e.errno == 28 and e.stage == "memory"


def test_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCORE_DIR", str(tmp_path))
    p = gencore.create_core(threads=False)
    assert p.parent == tmp_path and no_partials(p.name)
    assert p.report is not None and p.report.written > 0


def test_unsupported_platform_raises_clear_error(monkeypatch, tmp_path):
    import gencore.capture.engine as engine

    monkeypatch.setattr(engine, "IMPORT_ERROR", ImportError("no engine here"))
    try:
        gencore.create_core(tmp_path)
    except gencore.UnsupportedPlatformError as e:
        assert "Linux on x86_64 and aarch64" in str(e)
    else:
        raise AssertionError("create_core worked without the native engine")
    assert list(tmp_path.iterdir()) == []


def test_gencore_stacks_command(tmp_path):
    import subprocess
    import sys

    r = scenario("threads_false", dir=str(tmp_path))
    p = subprocess.run(
        [sys.executable, "-m", "gencore", "stacks", r["core"]], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert "Thread" in p.stdout and "scenario_threads_false" in p.stdout
    bad = tmp_path / "not-a-core"
    bad.write_bytes(b"\x7fELF" + b"\0" * 100)
    p = subprocess.run(
        [sys.executable, "-m", "gencore", "info", str(bad)], capture_output=True, text=True
    )
    assert p.returncode == 2 and "gencore:" in p.stderr
