"""``gencore trigger --inject PID``: a core of a Python 3.14+ process that never imported gencore.

PEP 768's ``sys.remote_exec`` makes the target's main thread run a small script at its next
safe point. The script makes this gencore importable for a moment, starts one core with
``start_core`` (the pause is the usual one fork; the wait happens in a short-lived thread),
reports through a result file this command watches, then takes back what it added: the
``sys.path`` entry and every module it imported except gencore's own.

The same permissions as ptrace apply (root, CAP_SYS_PTRACE, or the same user where Yama
allows it). A target that disabled remote debugging, runs another Python version, or whose
main thread never reaches a safe point within the timeout is refused or left untouched: on a
timeout the request is withdrawn, and the script, if it runs later, does nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import GencoreError

CAP_SYS_PTRACE = 19

# Runs in the target's main thread. Only the standard library, and nothing left behind.
_SCRIPT = """\
def _gencore_injected(work, gencore_path, directory, keep_work):
    import os
    import sys

    def done():
        if not keep_work:
            for name in os.listdir(work):
                os.unlink(os.path.join(work, name))
            os.rmdir(work)

    try:
        os.unlink(os.path.join(work, "request"))
    except FileNotFoundError:  # withdrawn: the command gave up waiting
        try:
            for name in os.listdir(work):
                os.unlink(os.path.join(work, name))
            os.rmdir(work)
        except OSError:
            pass
        return
    before = set(sys.modules)

    def report(doc):
        tmp = os.path.join(work, ".result")
        with open(tmp, "w") as f:
            f.write(repr(doc))
        os.replace(tmp, os.path.join(work, "result"))

    def forget():
        for name in set(sys.modules) - before:
            if name != "gencore" and not name.startswith("gencore."):
                sys.modules.pop(name, None)

    sys.path.insert(0, gencore_path)
    try:
        import gencore

        fut = gencore.start_core(directory)
    except BaseException as e:
        report({"error": f"{type(e).__name__}: {e}"})
        forget()
        return
    finally:
        sys.path.remove(gencore_path)
    report({"started": str(fut.path), "child": fut.child_pid})

    def finished(f):
        e = f.exception()
        if e is None:
            r = f.result().report
            doc = {"ok": str(f.result()), "pause_s": r.pause_s, "threads": len(r.threads)}
        else:
            doc = {"error": f"{type(e).__name__}: {e}"}
        forget()
        report(doc)
        done()

    fut.add_done_callback(finished)


_gencore_injected(WORK, PATH, DIRECTORY, KEEP)
del _gencore_injected
"""


def _refuse(message: str, advice: str = "") -> GencoreError:
    return GencoreError(message, stage="inject", advice=advice)


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def permission_problem(pid: int) -> Optional[str]:
    """Why this process may not inject into ``pid`` (ptrace's rules), or None."""
    if os.geteuid() == 0:
        return None
    if int(_status(os.getpid()).get("CapEff", "0"), 16) & (1 << CAP_SYS_PTRACE):
        return None
    uid = os.stat(f"/proc/{pid}").st_uid
    if uid != os.geteuid():
        return (
            f"process {pid} belongs to uid {uid}, this command runs as uid {os.geteuid()}: "
            "injecting needs root or CAP_SYS_PTRACE"
        )
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except (OSError, ValueError):
        scope = 0
    if scope >= 2:
        return f"kernel.yama.ptrace_scope is {scope}: only CAP_SYS_PTRACE may attach"
    if scope == 1:
        return (
            "kernel.yama.ptrace_scope is 1: only a parent process may attach; "
            "run as root or with CAP_SYS_PTRACE, or set it to 0"
        )
    return None


def remote_debug_disabled(pid: int) -> Optional[str]:
    """How the target switched remote debugging off, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    if env.get(b"PYTHON_DISABLE_REMOTE_DEBUG"):
        return "its environment sets PYTHON_DISABLE_REMOTE_DEBUG"
    for i, a in enumerate(argv[:-1]):
        if a == b"-X" and argv[i + 1] == b"disable_remote_debug" or a == b"-Xdisable_remote_debug":
            return "it runs with -X disable_remote_debug"
    return None


def target_python(pid: int) -> tuple[tuple[int, int], str]:
    """The target's (major, minor) and ABI flags, asked of its own executable."""
    r = subprocess.run(
        [
            f"/proc/{pid}/exe",
            "-I",
            "-S",
            "-c",
            "import sys; print(*sys.version_info[:2], sys.abiflags)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    parts = r.stdout.split()
    if r.returncode != 0 or len(parts) < 2:
        raise _refuse(
            f"process {pid} does not look like a Python interpreter ({r.stderr.strip()[-200:]})"
        )
    return (int(parts[0]), int(parts[1])), parts[2] if len(parts) > 2 else ""


def _preflight(pid: int) -> None:
    here = sys.version_info[:2]
    if here < (3, 14) or not hasattr(sys, "remote_exec"):
        raise _refuse(
            f"--inject needs Python 3.14 or newer (sys.remote_exec, PEP 768); this gencore "
            f"runs on {here[0]}.{here[1]}",
            "run the gencore of a 3.14+ environment, or call gencore.install() in the target",
        )
    if not os.path.exists(f"/proc/{pid}"):
        raise _refuse(f"no process {pid}", "check the pid")
    problem = permission_problem(pid)
    if problem:
        raise _refuse(problem)
    version, abi = target_python(pid)
    if (version, abi) != (here, sys.abiflags):
        raise _refuse(
            f"process {pid} runs Python {version[0]}.{version[1]}{abi}, this gencore is "
            f"installed for {here[0]}.{here[1]}{sys.abiflags}",
            f"run the gencore installed for Python {version[0]}.{version[1]}{abi}",
        )
    disabled = remote_debug_disabled(pid)
    if disabled:
        raise _refuse(
            f"process {pid} refuses remote debugging: {disabled}",
            "start it without that setting, or call gencore.install() in it",
        )


def _work_dir(pid: int, directory: Path, keep: bool) -> Path:
    work = Path(tempfile.mkdtemp(prefix="gencore-inject-"))
    st = os.stat(f"/proc/{pid}")
    gencore_path = str(Path(__file__).resolve().parents[2])
    script = _SCRIPT.replace(
        "WORK, PATH, DIRECTORY, KEEP",
        ", ".join(repr(v) for v in (str(work), gencore_path, str(directory), keep)),
    )
    (work / "script.py").write_text(script)
    (work / "request").write_text("")
    if st.st_uid != os.geteuid():  # root injecting into another user's process
        for p in (work, work / "script.py", work / "request"):
            os.chown(p, st.st_uid, st.st_gid)
    return work


def _read(work: Path) -> dict[str, Any]:
    try:
        import ast

        doc = ast.literal_eval((work / "result").read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError, SyntaxError):
        return {}


def inject(pid: int, directory: Optional[str], wait: bool, timeout: float) -> dict[str, Any]:
    """Make process ``pid`` take one core of itself; returns the result document.

    Raises:
        GencoreError: refused (permissions, version, remote debugging off), or the target's
            main thread did not reach a safe point in time (then nothing was done to it).
    """
    _preflight(pid)
    d = Path(directory) if directory else Path(os.readlink(f"/proc/{pid}/cwd"))
    if not d.is_dir():
        raise _refuse(f"core directory {d} does not exist", "pass --directory")
    work = _work_dir(pid, d.resolve(), keep=wait)
    try:
        sys.remote_exec(pid, str(work / "script.py"))  # type: ignore[attr-defined,unused-ignore]
    except (OSError, RuntimeError) as e:
        shutil.rmtree(work, ignore_errors=True)
        raise _refuse(f"sys.remote_exec into process {pid} failed: {e}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = _read(work)
        if "error" in doc or "ok" in doc or ("started" in doc and not wait):
            if wait:
                shutil.rmtree(work, ignore_errors=True)
            return doc
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.02)
    try:
        os.unlink(work / "request")  # withdraw it: a late run of the script does nothing
    except FileNotFoundError:
        doc = _read(work)
        raise _refuse(
            f"the core of process {pid} was not finished within {timeout:g} s"
            + (f" ({doc['started']} is being written)" if "started" in doc else ""),
            "pass a larger --timeout",
        ) from None
    raise _refuse(
        f"process {pid}'s main thread did not reach a safe point within {timeout:g} s (it may "
        "be blocked in C); the request was withdrawn and the process left untouched",
        "retry later, or use gcore / gencore.install() for a thread stuck in C",
    )


__all__ = ["inject", "permission_problem", "remote_debug_disabled", "target_python"]
