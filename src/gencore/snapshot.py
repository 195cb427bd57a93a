"""Snapshot orchestration: preflight, the native freeze + fork, waiting, publishing.

The native engine (``gencore._native``) freezes the threads, forks a snapshot child and
returns at once; the child writes ``.<stem>.core.partial`` and renames it to ``<stem>.core``
when it is complete, reporting progress on a status pipe. This module prepares all that, waits
for the result with the GIL released (or through the event loop), reaps the child and turns
every failure into a :class:`~gencore.errors.GencoreError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno as errno_mod
import itertools
import logging
import os
import select
import signal
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any, Callable, Optional, TypeVar, Union

from . import _metadata
from .errors import (
    CoreChildError,
    CoreDirectoryError,
    CoreForkError,
    CoreTimeoutError,
    CoreWriteError,
    FreezeError,
    GencoreError,
    NotDumpableError,
    UnsupportedPlatformError,
    describe_errno,
)

log = logging.getLogger("gencore")

_IMPORT_ERROR: Optional[BaseException] = None
_native: Any
try:
    from . import _native
except ImportError as _e:  # pragma: no cover - exercised on unsupported platforms only
    _native = None
    _IMPORT_ERROR = _e
else:
    if not hasattr(_native, "snapshot"):  # the C sources' folder, not a built extension
        _native = None

VERSION = "0.1.0"
DEFAULT_FILTER = 0xFF
DEFAULT_FREEZE_TIMEOUT = 0.25
DEFAULT_TIMEOUT = 600.0

_STATUS = struct.Struct("<IIiIQQQQ")
_ST_PROGRESS, _ST_DONE, _ST_ERROR = 1, 2, 3
_STAGES = {1: "setup", 2: "maps", 3: "notes", 4: "memory", 5: "publish"}

_seq = itertools.count(1)
_seq_lock = threading.Lock()
_snapshot_lock = threading.Lock()

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ThreadReport:
    """How one thread was captured: ``caller``, ``parked`` or ``incomplete``."""

    tid: int
    state: str


@dataclass(frozen=True)
class SnapshotReport:
    """What one snapshot did, attached to the returned path as ``path.report``.

    ``pause_s`` is the time the application's other threads were stopped (freeze + fork);
    ``incomplete`` lists threads that did not park in time (signal blocked, uninterruptible
    sleep): they are in the core with the stack pointer and program counter the kernel
    reported, but no other registers.
    """

    path: Path
    child_pid: int
    threads: tuple[ThreadReport, ...]
    freeze_s: float
    fork_s: float
    pause_s: float
    elapsed_s: float
    written: int
    file_size: int
    segments: int

    @property
    def incomplete(self) -> tuple[int, ...]:
        """Thread ids that were not parked by the freeze."""
        return tuple(t.tid for t in self.threads if t.state == "incomplete")


class CorePath(PosixPath):
    """A :class:`pathlib.Path` to a finished core, with the snapshot's :class:`SnapshotReport`."""

    report: Optional[SnapshotReport] = None


def supported() -> bool:
    """True when this platform has the native snapshot engine (Linux x86_64)."""
    return _native is not None


def _require_native() -> Any:
    if _native is None:
        raise UnsupportedPlatformError(
            "gencore's snapshot engine supports Linux on x86_64 only",
            advice=f"this is {os.uname().sysname} {os.uname().machine}"
            + (f" ({_IMPORT_ERROR})" if _IMPORT_ERROR else ""),
            stage="preflight",
        )
    return _native


def default_directory() -> Path:
    """``$GENCORE_DIR`` if set, else the current working directory."""
    env = os.environ.get("GENCORE_DIR")
    return Path(env) if env else Path.cwd()


def make_stem(pid: Optional[int] = None) -> str:
    """``core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>`` in local time, seq per process."""
    if _native is not None:
        n = _native.next_seq()  # shared with the signal trigger, which names cores in C
    else:
        with _seq_lock:
            n = next(_seq)
    return f"core_{time.strftime('%Y%m%d.%H%M%S')}.{pid or os.getpid()}.{n:03d}"


def _freeze_signal(value: Optional[int]) -> int:
    if value is None:
        env = os.environ.get("GENCORE_FREEZE_SIGNAL")
        value = int(env) if env else _require_native().DEFAULT_FREEZE_SIGNAL
    sig = int(value)
    if not (_native.SIGRTMIN <= sig <= _native.SIGRTMAX):
        raise FreezeError(
            f"freeze signal {sig} is not a real-time signal",
            advice=f"choose one in {_native.SIGRTMIN}..{_native.SIGRTMAX}",
            stage="preflight",
        )
    return sig


def _open_directory(directory: Optional[PathLike]) -> tuple[Path, int]:
    d = Path(directory) if directory is not None else default_directory()
    d = d if d.is_absolute() else Path.cwd() / d
    try:
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode):
            target = os.stat(d)
            if target.st_uid not in (os.geteuid(), 0):
                raise CoreDirectoryError(
                    f"{d} is a symlink into a directory owned by uid {target.st_uid}",
                    errno=errno_mod.EPERM,
                    stage="preflight",
                    advice="pass the real directory, owned by you, as directory=",
                )
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        what, advice = {
            errno_mod.ENOENT: (
                f"core directory {d} does not exist",
                "create it, or pass directory= / set GENCORE_DIR",
            ),
            errno_mod.ENOTDIR: (f"{d} is not a directory", "pass a directory as directory="),
        }.get(
            e.errno or 0,
            (
                f"cannot open core directory {d}: {describe_errno(e.errno)}",
                "fix its permissions, or pass another directory= / set GENCORE_DIR",
            ),
        )
        raise CoreDirectoryError(what, errno=e.errno, stage="preflight", advice=advice) from None
    return d, fd


def _check_space(directory: Path, dir_fd: int) -> None:
    try:
        vfs = os.statvfs(dir_fd)
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    free = vfs.f_bavail * vfs.f_frsize
    if free < resident:
        log.warning(
            "only %d MiB free in %s for a process of %d MiB resident: the core may not fit",
            free >> 20,
            directory,
            resident >> 20,
        )


class _Job:
    """One snapshot in flight: owns the partial file, the status pipe and the child."""

    def __init__(
        self,
        *,
        directory: Optional[PathLike],
        name: Optional[str],
        threads: bool,
        python_stacks: bool,
        filter: int,
        freeze_timeout: float,
        timeout: Optional[float],
        freeze_signal: Optional[int],
        force: bool,
        reason: str,
        extra: Optional[dict[str, Any]],
        siginfo: tuple[int, int, int, int],
        on_progress: Optional[ProgressCallback],
    ) -> None:
        native = _require_native()
        self.t0 = time.monotonic()
        self.threads = threads
        self.timeout = timeout
        self.on_progress = on_progress
        self.written = 0
        self.total = 0
        self.child_pid = -1
        self.rfd = -1
        self.core_fd = -1
        self.dir_fd = -1
        self.done: Optional[tuple[int, ...]] = None
        self.buf = b""

        if native.dumpable() == 0 and not force:
            raise NotDumpableError(
                "this process is marked non-dumpable (prctl PR_SET_DUMPABLE 0): it may hold "
                "secrets",
                stage="preflight",
                advice="pass force=True if a core of it is really wanted",
            )
        sig = _freeze_signal(freeze_signal)
        if not 0 <= filter <= 0x1FF:
            raise ValueError(f"filter must be coredump_filter bits 0..0x1ff, got {filter:#x}")
        stem = name if name is not None else make_stem()
        if "/" in stem or stem in ("", ".", "..") or "\0" in stem:
            raise ValueError(f"name must be a plain file name, got {stem!r}")
        final = stem if stem.endswith(".core") else stem + ".core"
        partial = f".{final}.partial"
        self.directory, self.dir_fd = _open_directory(directory)
        self.final_name, self.partial_name = final, partial
        self.path = self.directory / final
        try:
            try:
                self.core_fd = os.open(
                    partial,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=self.dir_fd,
                )
            except FileExistsError as e:
                raise CoreDirectoryError(
                    f"{self.directory / partial} already exists",
                    errno=e.errno,
                    stage="preflight",
                    advice="another snapshot uses this name; pass another name=",
                ) from None
            except OSError as e:
                raise CoreDirectoryError(
                    f"cannot create a file in {self.directory}: {describe_errno(e.errno)}",
                    errno=e.errno,
                    stage="preflight",
                    advice="make it writable, or pass another directory= / set GENCORE_DIR",
                ) from None
            if os.path.lexists(self.path):
                raise CoreDirectoryError(
                    f"{self.path} already exists",
                    errno=errno_mod.EEXIST,
                    stage="preflight",
                    advice="pass another name=",
                )
            _check_space(self.directory, self.dir_fd)
            note = _metadata.build_note(
                reason=reason, version=VERSION, with_stacks=python_stacks, extra=extra
            )
            self.rfd, wfd = os.pipe2(os.O_CLOEXEC)
            try:
                self.result = self._fork(
                    native, wfd, note, threads, filter, freeze_timeout, sig, siginfo
                )
            finally:
                os.close(wfd)
            self.child_pid = self.result["pid"]
        except BaseException:
            self._cleanup_files()
            self._close()
            raise
        log.info(
            "snapshot child %d writing %s (pause %.3f ms, %d threads, %d incomplete)",
            self.child_pid,
            self.path,
            (self.result["freeze_ns"] + self.result["fork_ns"]) / 1e6,
            len(self.result["threads"]),
            self.result["timed_out"],
        )

    def _fork(
        self,
        native: Any,
        wfd: int,
        note: bytes,
        threads: bool,
        filter: int,
        freeze_timeout: float,
        sig: int,
        siginfo: tuple[int, int, int, int],
    ) -> dict[str, Any]:
        deadline = time.monotonic() + max(freeze_timeout, 0.0) + 5.0
        while True:
            try:
                with _snapshot_lock:
                    return native.snapshot(
                        self.core_fd,
                        self.dir_fd,
                        wfd,
                        os.fsencode(self.partial_name),
                        os.fsencode(self.final_name),
                        note,
                        threads,
                        filter,
                        freeze_timeout,
                        sig,
                        *siginfo,
                    )
            except OSError as e:
                if e.errno == errno_mod.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.005)  # a signal-triggered snapshot is in flight
                    continue
                raise self._fork_error(e, sig) from None

    @staticmethod
    def _fork_error(e: OSError, sig: int) -> GencoreError:
        if e.errno == errno_mod.EEXIST:
            return FreezeError(
                f"the freeze signal {sig} already has a handler in this process",
                errno=e.errno,
                stage="freeze",
                advice="pass freeze_signal= or set GENCORE_FREEZE_SIGNAL to an unused "
                "real-time signal",
            )
        if e.errno == errno_mod.EBUSY:
            return FreezeError(
                "another snapshot kept the threads frozen for too long",
                errno=e.errno,
                stage="freeze",
                advice="retry",
            )
        if e.errno in (errno_mod.ENOMEM, errno_mod.EAGAIN):
            return CoreForkError(
                f"cannot create the snapshot child: {describe_errno(e.errno)}",
                errno=e.errno,
                stage="fork",
                advice="the system is out of memory or processes (check vm.overcommit_memory, "
                "ulimit -u, cgroup pids.max)",
            )
        return CoreForkError(
            f"snapshot failed: {describe_errno(e.errno)}", errno=e.errno, stage="fork"
        )

    # -- status records -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume bytes from the status pipe."""
        self.buf += data
        size = _STATUS.size
        while len(self.buf) >= size:
            rec = _STATUS.unpack(self.buf[:size])
            self.buf = self.buf[size:]
            magic, kind, err, stage, written, total, file_size, nseg = rec
            if magic != _native.STATUS_MAGIC:
                continue
            self.written, self.total = written, total
            if kind == _ST_PROGRESS:
                if self.on_progress is not None:
                    try:
                        self.on_progress(written, total)
                    except Exception:  # a progress callback must not break the snapshot
                        log.exception("progress callback failed")
            else:
                self.done = rec

    def remaining(self) -> Optional[float]:
        if self.timeout is None:
            return None
        return self.timeout - (time.monotonic() - self.t0)

    # -- completion -----------------------------------------------------------------

    def finish(self, wait_status: int) -> CorePath:
        """Turn the child's last record and exit status into a path or an exception."""
        try:
            if self.done is not None and self.done[1] == _ST_DONE:
                return self._success()
            if self.done is not None and self.done[1] == _ST_ERROR:
                raise self._write_error(self.done)
            self._cleanup_files()
            if wait_status >= 0 and os.WIFSIGNALED(wait_status):
                sig = os.WTERMSIG(wait_status)
                raise CoreChildError(
                    f"the snapshot child {self.child_pid} was killed by signal "
                    f"{signal.Signals(sig).name if sig in signal.valid_signals() else sig} "
                    f"after writing {_size(self.written)} of {_size(self.total)}",
                    stage="memory",
                    advice="see the system log (OOM killer?) and retry",
                )
            raise CoreChildError(
                f"the snapshot child {self.child_pid} exited without a result "
                f"(wait status {wait_status})",
                stage="wait",
                advice="retry; if it persists, report it with `gencore doctor` output",
            )
        finally:
            self._close()

    def _success(self) -> CorePath:
        _, _, _, _, written, _, file_size, nseg = self.done  # type: ignore[misc]
        r = self.result
        report = SnapshotReport(
            path=self.path,
            child_pid=self.result["pid"],
            threads=tuple(ThreadReport(tid, st) for tid, st in r["threads"] if st != "gone"),
            freeze_s=r["freeze_ns"] / 1e9,
            fork_s=r["fork_ns"] / 1e9,
            pause_s=(r["freeze_ns"] + r["fork_ns"]) / 1e9,
            elapsed_s=time.monotonic() - self.t0,
            written=written,
            file_size=file_size,
            segments=nseg,
        )
        p = CorePath(self.path)
        p.report = report
        if report.incomplete and self.threads:
            log.warning(
                "core %s: threads %s did not stop for the snapshot (signal blocked or "
                "uninterruptible); only their stack and instruction pointers are in the core",
                self.path,
                ", ".join(map(str, report.incomplete)),
            )
        log.info("core %s written (%s) in %.2f s", self.path, _size(file_size), report.elapsed_s)
        return p

    def _write_error(self, rec: tuple[int, ...]) -> GencoreError:
        _, _, err, stage, written, total, _, _ = rec
        self._cleanup_files()
        stage_name = _STAGES.get(stage, str(stage))
        if err in (errno_mod.ENOSPC, errno_mod.EDQUOT, errno_mod.EFBIG):
            what = {
                errno_mod.ENOSPC: "no space left on",
                errno_mod.EDQUOT: "disk quota exceeded on",
                errno_mod.EFBIG: "file too large for",
            }[err]
            return CoreWriteError(
                f"{what} {self.directory}: wrote {_size(written)} of {_size(total)}",
                written=written,
                total=total,
                errno=err,
                stage=stage_name,
                advice="free space, or pass directory= / set GENCORE_DIR to a larger filesystem",
            )
        return CoreWriteError(
            f"writing the core in {self.directory} failed at stage {stage_name}: "
            f"{describe_errno(err)} (wrote {_size(written)} of {_size(total)})",
            written=written,
            total=total,
            errno=err,
            stage=stage_name,
            advice="check the filesystem and retry",
        )

    def abort(self) -> None:
        """Kill the child (if any), reap it, remove the partial file."""
        if self.child_pid > 0:
            try:
                os.kill(self.child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _native.reap(self.child_pid, True)
            self.child_pid = -1
        self._cleanup_files()
        self._close()

    def timeout_error(self) -> CoreTimeoutError:
        return CoreTimeoutError(
            f"the core was not finished within {self.timeout:g} s "
            f"(wrote {_size(self.written)} of {_size(self.total)}); the snapshot child was killed",
            errno=errno_mod.ETIMEDOUT,
            stage="wait",
            advice="pass a larger timeout=, or a faster directory=",
        )

    def _cleanup_files(self) -> None:
        if self.dir_fd >= 0 and self.core_fd >= 0:
            try:
                os.unlink(self.partial_name, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove %s: %s", self.directory / self.partial_name, e)

    def _close(self) -> None:
        for attr in ("rfd", "core_fd", "dir_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _wait_blocking(job: _Job) -> CorePath:
    try:
        while job.done is None:
            left = job.remaining()
            if left is not None and left <= 0:
                raise job.timeout_error()
            r, _, _ = select.select([job.rfd], [], [], left)
            if not r:
                continue
            data = os.read(job.rfd, 4096)
            if not data:
                break
            job.feed(data)
        status = _native.reap(job.child_pid, True)
        job.child_pid = -1
        return job.finish(status)
    except BaseException:
        job.abort()
        raise


@dataclass
class _Options:
    directory: Optional[PathLike] = None
    name: Optional[str] = None
    threads: bool = True
    python_stacks: bool = True
    filter: int = DEFAULT_FILTER
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    timeout: Optional[float] = DEFAULT_TIMEOUT
    freeze_signal: Optional[int] = None
    force: bool = False
    reason: str = "api"
    extra: Optional[dict[str, Any]] = None
    siginfo: tuple[int, int, int, int] = (0, 0, 0, 0)
    on_progress: Optional[ProgressCallback] = field(default=None)


def _kernel_core(
    directory: Optional[PathLike], name: Optional[str], force: bool, timeout: Optional[float]
) -> CorePath:
    from . import _kernel

    native = _require_native()
    t0 = time.monotonic()
    if native.dumpable() == 0 and not force:
        raise NotDumpableError(
            "this process is marked non-dumpable (prctl PR_SET_DUMPABLE 0): it may hold secrets",
            stage="preflight",
            advice="pass force=True if a core of it is really wanted",
        )
    _kernel.preflight()
    stem = name if name is not None else make_stem()
    final = stem if stem.endswith(".core") else stem + ".core"
    d, dir_fd = _open_directory(directory)
    try:
        path, pid, fork_s = _kernel.create(native, d, dir_fd, final, force, timeout)
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
    log.info("kernel core %s written (%s)", path, _size(size.st_size))
    return p


def _start(opts: _Options) -> _Job:
    return _Job(**opts.__dict__)


def create_core(
    directory: Optional[PathLike] = None,
    *,
    name: Optional[str] = None,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
    on_progress: Optional[ProgressCallback] = None,
    method: str = "native",
) -> CorePath:
    """Write a core dump of this process and return its path once it is complete.

    Every thread is parked for a moment with a private real-time signal so its registers
    can be saved, then one ``fork()`` creates a snapshot child and the threads run again. The
    child writes a kernel-compatible ELF core (readable by pystack, py-spy, gdb and elfutils)
    while the application carries on; this call blocks only the calling thread, with the GIL
    released, until the core is published.

    Args:
        directory: where to write; default ``$GENCORE_DIR``, else the current directory.
        name: file name stem; default ``core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>``. ``.core`` is
            appended.
        threads: freeze and capture every thread. ``False``: only the calling thread is
            captured (the original behaviour); the others are listed as incomplete, with the
            stack and instruction pointers the kernel reports, and are never stopped.
        python_stacks: store every Python thread's stack in the core's GENCORE note.
        filter: ``/proc/PID/coredump_filter`` bits choosing which memory is written
            (default ``0xff``: all anonymous and file-backed memory and ELF headers).
            ``MADV_DONTDUMP`` memory is never written.
        freeze_timeout: seconds to wait for each thread to park; a thread that does not
            (signal blocked, uninterruptible sleep) is still listed, as incomplete.
        timeout: seconds until the core must be finished, else the child is killed and
            :class:`~gencore.CoreTimeoutError` raised. ``None``: no limit.
        freeze_signal: real-time signal used to park threads (default ``SIGRTMAX-3`` or
            ``$GENCORE_FREEZE_SIGNAL``).
        force: write a core even if the process is marked non-dumpable.
        on_progress: called as ``on_progress(written, total)`` while the core is written.
        method: ``"native"`` (default): the snapshot child writes the core itself.
            ``"kernel"``: the original technique, a forked copy of this thread crashes with
            SIGSEGV in a private directory and the kernel writes its core; only the calling
            thread is in it, and it needs a ``core_pattern`` that writes a plain file
            (a pipe to systemd-coredump or apport raises
            :class:`~gencore.KernelCoreUnavailableError` right away).

    Returns:
        A :class:`CorePath` (a :class:`pathlib.Path`) whose ``report`` attribute holds the
        :class:`SnapshotReport` (pause, incomplete threads, sizes).

    Raises:
        GencoreError: a subclass saying what failed, with ``errno``, ``stage`` and advice.
    """
    if method == "kernel":
        return _kernel_core(directory, name, force, timeout)
    if method != "native":
        raise ValueError(f"method must be 'native' or 'kernel', got {method!r}")
    opts = _Options(
        directory,
        name,
        threads,
        python_stacks,
        filter,
        freeze_timeout,
        timeout,
        freeze_signal,
        force,
        on_progress=on_progress,
    )
    return _wait_blocking(_start(opts))


async def create_core_async(
    directory: Optional[PathLike] = None,
    *,
    name: Optional[str] = None,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
    on_progress: Optional[ProgressCallback] = None,
) -> CorePath:
    """Like :func:`create_core`, as a coroutine: the wait goes through the event loop.

    The snapshot itself (freeze and fork) happens when the coroutine starts; the status pipe
    and a pidfd are then watched by the loop, so no helper thread is used. Cancelling the
    task kills the snapshot child and removes the partial file.
    """
    opts = _Options(
        directory,
        name,
        threads,
        python_stacks,
        filter,
        freeze_timeout,
        timeout,
        freeze_signal,
        force,
        on_progress=on_progress,
    )
    job = _start(opts)
    loop = asyncio.get_running_loop()
    pidfd = -1
    try:
        eof = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(job.rfd, 4096)
            except BlockingIOError:
                return
            if data:
                job.feed(data)
            if not data or job.done is not None:
                loop.remove_reader(job.rfd)
                if not eof.done():
                    eof.set_result(None)

        loop.add_reader(job.rfd, readable)
        try:
            await asyncio.wait_for(asyncio.shield(eof), job.remaining())
        except asyncio.TimeoutError:
            raise job.timeout_error() from None
        finally:
            loop.remove_reader(job.rfd)
        status = _native.reap(job.child_pid, False)
        if status is None:
            exited = loop.create_future()
            try:
                pidfd = os.pidfd_open(job.child_pid)  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pidfd = -1
            if pidfd >= 0:

                def on_exit() -> None:
                    if not exited.done():
                        exited.set_result(None)

                loop.add_reader(pidfd, on_exit)
                try:
                    await exited
                finally:
                    loop.remove_reader(pidfd)
            while status is None:
                status = _native.reap(job.child_pid, False)
                if status is None:
                    await asyncio.sleep(0.001)
        job.child_pid = -1
        return job.finish(status)
    except BaseException:
        job.abort()
        raise
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def start_core(
    directory: Optional[PathLike] = None,
    *,
    callback: Optional[Callable[[Optional[BaseException], Optional[CorePath]], None]] = None,
    name: Optional[str] = None,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
) -> concurrent.futures.Future[CorePath]:
    """Take the snapshot now and return a Future of its path, the callback form.

    The freeze and fork happen before this returns, so the core shows the process as it was
    at the call. A daemon thread waits for the child. ``callback(error, path)`` is called
    from that thread when the core is done (``error`` is ``None`` on success), the order of
    the original module's ``createCore(callback)``.

    Preflight errors (bad directory, non-dumpable process...) are raised right away. The
    future's ``child_pid`` attribute is the snapshot child's pid.
    """
    opts = _Options(
        directory,
        name,
        threads,
        python_stacks,
        filter,
        freeze_timeout,
        timeout,
        freeze_signal,
        force,
    )
    job = _start(opts)
    fut = in_thread(lambda: _wait_blocking(job), callback, "gencore-wait")
    fut.child_pid = job.child_pid  # type: ignore[attr-defined]
    return fut


T = TypeVar("T")


def in_thread(
    work: Callable[[], T],
    callback: Optional[Callable[[Optional[BaseException], Optional[T]], None]],
    name: str,
) -> concurrent.futures.Future[T]:
    """Run ``work`` in a daemon thread; deliver its result through a Future and
    ``callback(error, result)`` (the original module's callback order)."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()
    fut.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = work()
        except BaseException as e:  # delivered through the future
            fut.set_exception(e)
            if callback is not None:
                callback(e, None)
            return
        fut.set_result(result)
        if callback is not None:
            callback(None, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
