"""method='kernel' (the original technique) and `gencore doctor`."""

from __future__ import annotations

import re
import sys

from conftest import real_python, run, tool
from test_failures import scenario

# pystack on Python <= 3.10 matches threads by pthread descriptor: in a kernel-method core of a
# multi-threaded process the other threads' descriptors name threads the core does not have
# (fork copies one thread), so it refuses the core. From 3.11 it reads them.
KERNEL_THREADS = 2 if sys.version_info >= (3, 11) else 0


def test_kernel_method_writes_the_kernels_core_and_no_copy_survives(tmp_path):
    r = scenario("kernel_method", dir=str(tmp_path), faulthandler=True, threads=KERNEL_THREADS)
    assert "error" not in r, r
    assert r["child_alive"] is False and r["children"] == [] and r["fds_same"]
    assert r["listing"] == [r["core"].rsplit("/", 1)[1]]  # temp dir removed
    # the kernel's core of the forked copy: one thread, the caller, killed by SIGSEGV
    p = run([tool("eu-readelf"), "-n", r["core"]])
    assert p.stdout.count("PRSTATUS") == 1, p.stdout[:2000]
    assert re.search(r"si_signo: 11", p.stdout)
    p = run([tool("pystack"), "core", r["core"], real_python()])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "kernel_caller_frame" in p.stdout
    # the faulthandler of the app never ran in the dying copy
    assert "Fatal Python error" not in p.stderr


def test_kernel_method_fails_fast_on_a_piped_core_pattern(tmp_path):
    pattern = tmp_path / "core_pattern"
    pattern.write_text("|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n")
    out = tmp_path / "out"
    out.mkdir()
    r = scenario("kernel_method", dir=str(out), pattern_file=str(pattern))
    e = r["error"]
    assert e["type"] == "KernelCoreUnavailableError" and e["stage"] == "preflight"
    assert "systemd-coredump" in e["msg"] and "method='native'" in e["msg"]
    assert r["elapsed"] < 5 and r["children"] == [] and r["listing"] == []


def doctor(**kw) -> dict:
    r = scenario("doctor", **kw)
    r["by_name"] = {c["name"]: c for c in r["checks"]}
    return r


def test_doctor_all_ok(tmp_path):
    r = doctor(dir=str(tmp_path))
    assert r["rc"] == 0
    assert r["by_name"]["directory"]["level"] == "OK"
    assert r["by_name"]["dumpable"]["level"] == "OK"
    assert r["by_name"]["core_pattern"]["level"] == "OK"


def test_doctor_reports_an_unwritable_directory(tmp_path, mount_tmpfs):
    ro = mount_tmpfs("1m", "ro")
    r = doctor(dir=str(ro))
    assert r["rc"] == 1
    c = r["by_name"]["directory"]
    assert c["level"] == "FAIL" and str(ro) in c["message"] and "--directory" in c["advice"]
    r = doctor(dir=str(tmp_path / "missing"))
    assert r["by_name"]["directory"]["level"] == "FAIL"


def test_doctor_reports_rlimit_core_zero(tmp_path):
    r = doctor(dir=str(tmp_path), core0=True)
    c = r["by_name"]["RLIMIT_CORE"]
    assert c["level"] == "WARN" and "method='kernel'" in c["message"] and "ulimit" in c["advice"]
    assert r["rc"] == 0  # native cores still work


def test_doctor_reports_non_dumpable(tmp_path):
    r = doctor(dir=str(tmp_path), dumpable0=True)
    c = r["by_name"]["dumpable"]
    assert c["level"] == "FAIL" and "force=True" in c["advice"]
    assert r["rc"] == 1
