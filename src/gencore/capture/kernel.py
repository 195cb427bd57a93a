"""method="kernel": the original technique, a forked copy that the kernel dumps.

Only the calling thread is in such a core (fork copies one thread), and it depends on the
host's ``core_pattern``: a pipe handler (systemd-coredump, apport...) or an absolute path
sends the core elsewhere. It is the fallback where the native writer is not available.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from .._common import core_names, format_size
from ..errors import (
    ADVICE_NATIVE,
    CoreChildError,
    KernelCoreUnavailableError,
    exists_error,
    timeout_error,
)
from . import engine as _engine
from .options import CoreOptions
from .preflight import check_dumpable, make_stem, open_directory
from .result import CorePath, SnapshotReport, ThreadReport

CORE_PATTERN_FILE = "/proc/sys/kernel/core_pattern"  # a test seam: tests point it elsewhere

_HANDLERS = {
    "systemd-coredump": "systemd-coredump (see coredumpctl)",
    "apport": "apport (Ubuntu; see /var/crash)",
    "abrt": "ABRT (see abrt-cli list)",
    "kdumpctl": "kdump",
    "core_pipe": "a container runtime's core handler",
}

__all__ = [
    "KernelCoreUnavailableError",
    "core_pattern_problem",
    "kernel_core",
    "preflight",
    "read_core_pattern",
]

log = logging.getLogger("gencore")


def read_core_pattern() -> str:
    """The host's core_pattern (empty if it cannot be read)."""
    try:
        with open(CORE_PATTERN_FILE) as f:
            return f.read().strip()
    except OSError:
        return ""


def core_pattern_problem(pattern: str) -> Optional[str]:
    """Why method="kernel" cannot work with this core_pattern, or None."""
    if pattern.startswith("|"):
        prog = pattern[1:].split()[0] if pattern[1:].split() else "?"
        base = os.path.basename(prog)
        name = next((v for k, v in _HANDLERS.items() if k in base), prog)
        return f"core_pattern pipes kernel cores to {name} ({pattern!r})"
    if pattern.startswith("/"):
        return f"core_pattern writes kernel cores to the absolute path {pattern!r}"
    if "/" in pattern:
        return f"core_pattern writes kernel cores into a subdirectory ({pattern!r})"
    return None


def preflight() -> None:
    """Fail fast when the kernel's core would not land in our directory."""
    problem = core_pattern_problem(read_core_pattern())
    if problem:
        raise KernelCoreUnavailableError(
            problem + ": method='kernel' cannot collect it",
            errno=errno_mod.ENOTSUP,
            stage="preflight",
            advice=ADVICE_NATIVE,
        )
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        raise KernelCoreUnavailableError(
            "the hard RLIMIT_CORE is 0: the kernel will not write a core",
            errno=errno_mod.EPERM,
            stage="preflight",
            advice="raise it (ulimit -H -c unlimited, LimitCORE= in systemd) or use "
            "method='native'",
        )


WALL = 0x40000000  # __WALL: the child has exit signal 0


def reap(pid: int, block: bool) -> Optional[int]:
    """The child's wait status; None while it runs (``block=False``); -1 if someone else
    reaped it."""
    try:
        got, status = os.waitpid(pid, WALL | (0 if block else os.WNOHANG))
    except ChildProcessError:
        return -1
    return None if got == 0 else status


def _wait(pid: int, t0: float, timeout: Optional[float]) -> int:
    while True:
        status = reap(pid, block=False)
        if status is not None:
            return status
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise timeout_error("the kernel's core", timeout)
        time.sleep(0.002)


def create(
    directory: Path,
    dir_fd: int,
    final_name: str,
    force: bool,
    timeout: Optional[float],
) -> tuple[Path, int, float]:
    """Fork the dying copy, wait for the kernel's core, move it to ``final_name``."""
    preflight()
    tmp = tempfile.mkdtemp(prefix=".gencore-kernel-", dir=directory)  # 0700
    tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    pid = -1
    try:
        t0 = time.monotonic()
        try:
            pid = _engine.native.kernel_fork(dir_fd=tmp_fd, make_dumpable=force)
        except OSError as e:
            raise CoreChildError(
                f"cannot fork the copy to dump: {os.strerror(e.errno or 0)}",
                errno=e.errno,
                stage="fork",
                advice="the system is out of memory or processes",
            ) from None
        fork_s = time.monotonic() - t0
        child = pid
        status = _wait(pid, t0, timeout)
        pid = -1
        names = os.listdir(tmp)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV) or not names:
            raise CoreChildError(
                f"the kernel wrote no core (wait status {status:#x}, core_pattern "
                f"{read_core_pattern()!r})",
                stage="wait",
                advice="check RLIMIT_CORE, free space and the system log, or use method='native'",
            )
        src = os.path.join(tmp, max(names, key=lambda n: os.stat(os.path.join(tmp, n)).st_mtime))
        os.chmod(src, 0o600)
        target = directory / final_name
        try:
            os.link(src, target)
        except FileExistsError:
            raise exists_error(target, stage="publish") from None
        return target, child, fork_s
    finally:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
            reap(pid, block=True)
        os.close(tmp_fd)
        shutil.rmtree(tmp, ignore_errors=True)


def kernel_core(opts: CoreOptions) -> CorePath:
    """method="kernel": a forked copy of this thread crashes and the kernel writes its core."""
    _engine.require()
    t0 = time.monotonic()
    check_dumpable(opts.force)
    preflight()
    final, _ = core_names(opts.name or make_stem())
    d, dir_fd = open_directory(opts.directory)
    try:
        path, pid, fork_s = create(d, dir_fd, final, opts.force, opts.timeout)
    finally:
        os.close(dir_fd)
    size = os.stat(path)
    p = CorePath(path)
    p.report = SnapshotReport(
        path=path,
        child_pid=pid,
        threads=(ThreadReport(threading.get_native_id(), "caller"),),
        freeze_s=0.0,
        fork_s=fork_s,
        pause_s=fork_s,
        elapsed_s=time.monotonic() - t0,
        written=size.st_blocks * 512,
        file_size=size.st_size,
        segments=0,
    )
    log.info("kernel core %s written (%s)", path, format_size(size.st_size))
    return p
