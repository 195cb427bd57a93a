"""One core in flight: preflight, the native freeze + fork, waiting, publishing.

The native engine freezes the threads, forks a snapshot child and returns at once; the child
writes ``.<stem>.core.partial`` and renames it to ``<stem>.core`` when it is complete,
reporting progress on a status pipe. A :class:`Job` owns the partial file, the pipe and the
child; :func:`run`, :func:`wait_blocking` and :func:`wait_async` turn its outcome into a
:class:`~gencore.CorePath` or a :class:`~gencore.GencoreError`. The public functions
(``snapshot.py``) and the triggers both go through here.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import json
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PosixPath
from typing import Any, Optional, TypeVar

from .._common import VERSION, PathLike, core_names, default_directory, format_size, tz_offset
from ..errors import (
    CoreChildError,
    CoreDirectoryError,
    GencoreError,
    UploadError,
    directory_error,
    exists_error,
    max_size_error,
    not_dumpable_error,
    signal_name,
    snapshot_error,
    timeout_error,
    write_error,
)
from . import caplayout as _caplayout
from . import engine as _engine
from . import metadata as _metadata
from .options import CoreOptions, check_max_size, freeze_signal

log = logging.getLogger("gencore")
_snapshot_lock = threading.Lock()


@dataclass(frozen=True)
class ThreadReport:
    """How one thread was captured: ``caller``, ``parked`` or ``incomplete``."""

    tid: int
    state: str


@dataclass(frozen=True)
class SnapshotReport:
    """What one snapshot did, attached to the returned path as ``path.report``.

    ``pause_s`` is the time the application's other threads were stopped (freeze + fork);
    ``file_size`` is the core's size, ``compressed_size`` the ``.core.zst`` file's (with
    ``compress="zstd"``);
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
    compressed_size: Optional[int] = None

    @property
    def incomplete(self) -> tuple[int, ...]:
        """Thread ids that were not parked by the freeze."""
        return tuple(t.tid for t in self.threads if t.state == "incomplete")


class CorePath(PosixPath):
    """A :class:`pathlib.Path` to a finished core, with the snapshot's :class:`SnapshotReport`.

    ``url`` is the object's URL when the core was uploaded (``upload=``); the local file is
    then gone unless ``keep_local=True``.
    """

    report: Optional[SnapshotReport] = None
    url: Optional[str] = None


def make_stem(pid: Optional[int] = None) -> str:
    """``core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>`` in local time, seq per process (named in C,
    where the signal handler names its cores too)."""
    _engine.require()
    native = _engine.native
    return native.core_stem(
        time=int(time.time()), tz_offset=tz_offset(), pid=pid or os.getpid(), seq=native.next_seq()
    )


def open_directory(directory: Optional[PathLike]) -> tuple[Path, int]:
    """The absolute core directory and an ``O_DIRECTORY`` descriptor of it.

    A symlink is followed only into a directory owned by us or root.
    """
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
        raise directory_error(d, e.errno) from None
    return d, fd


def check_dumpable(force: bool) -> None:
    """Refuse a non-dumpable process (it may hold secrets) unless forced."""
    if _engine.native.dumpable() == 0 and not force:
        raise not_dumpable_error()


def _warn_space(directory: Path, dir_fd: int) -> None:
    from .._common import resident_bytes

    try:
        vfs = os.statvfs(dir_fd)
    except OSError:
        return
    free, resident = vfs.f_bavail * vfs.f_frsize, resident_bytes()
    if free < resident:
        log.warning(
            "only %s free in %s for a process of %s resident: the core may not fit",
            format_size(free),
            directory,
            format_size(resident),
        )


ZSTD_LEVEL = 1


def compressor_argv() -> tuple[bytes, ...]:
    """The command line of the compressor the snapshot child starts for ``compress="zstd"``
    (:mod:`gencore.capture.zpipe`, zstd level 1 on every CPU): checked here, before any fork."""
    from ..ship.extract import import_zstandard

    import_zstandard("compress='zstd'")
    if not sys.executable or not os.access(sys.executable, os.X_OK):
        raise ValueError(
            "compress='zstd' runs the compressor with this Python, but sys.executable "
            f"({sys.executable!r}) is not an executable"
        )
    script = Path(__file__).with_name("zpipe.py")
    threads = max(1, min(os.cpu_count() or 1, 8))
    return tuple(os.fsencode(a) for a in (sys.executable, script, str(ZSTD_LEVEL), str(threads)))


class Job:
    """One snapshot in flight: owns the partial file, the status pipe and the child."""

    def __init__(self, opts: CoreOptions) -> None:
        _engine.require()
        if opts.method != "native":
            raise ValueError(
                f"method={opts.method!r} cannot be waited for this way; use create_core"
            )
        self.opts = opts
        self.t0 = time.monotonic()
        self.written = self.total = 0
        self.child_pid = self.rfd = self.core_fd = self.dir_fd = -1
        self.done: Optional[tuple[int, ...]] = None
        self.buf = b""
        self.result: dict[str, Any] = {}
        check_dumpable(opts.force)
        sig = freeze_signal(opts.freeze_signal)
        self.pipe_argv = compressor_argv() if opts.compress else None
        self.final_name, self.partial_name = core_names(opts.name or make_stem(), opts.compress)
        self.directory, self.dir_fd = open_directory(opts.directory)
        self.path = self.directory / self.final_name
        try:
            self._create_partial()
            _warn_space(self.directory, self.dir_fd)
            note = _metadata.build_note(
                reason=opts.reason,
                version=VERSION,
                with_stacks=opts.python_stacks,
                extra=opts.extra,
            )
            check_max_size(opts.max_size, len(note))
            self.rfd, wfd = os.pipe2(os.O_CLOEXEC)
            try:
                self.result = self._fork(wfd, note, sig)
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

    def _create_partial(self) -> None:
        try:
            self.core_fd = os.open(
                self.partial_name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.dir_fd,
            )
        except FileExistsError:
            raise exists_error(self.directory / self.partial_name) from None
        except OSError as e:
            raise directory_error(self.directory, e.errno) from None
        if os.path.lexists(self.path):
            raise exists_error(self.path)

    def _fork(self, wfd: int, note: bytes, sig: int) -> dict[str, Any]:
        native = _engine.native
        opts = self.opts
        signo, code, addr, sender = opts.siginfo
        deadline = time.monotonic() + max(opts.freeze_timeout, 0.0) + 5.0
        while True:
            try:
                with _snapshot_lock:
                    return native.snapshot(
                        core_fd=self.core_fd,
                        dir_fd=self.dir_fd,
                        status_fd=wfd,
                        partial_name=os.fsencode(self.partial_name),
                        final_name=os.fsencode(self.final_name),
                        note=note,
                        threads=opts.threads,
                        filter=opts.filter,
                        freeze_timeout=opts.freeze_timeout,
                        freeze_signal=sig,
                        signo=signo,
                        code=code,
                        addr=addr,
                        sender=sender,
                        pipe_argv=self.pipe_argv,
                        max_size=opts.max_size,
                        pylayout=_caplayout.layout() if opts.max_size else None,
                    )
            except OSError as e:
                if e.errno == errno_mod.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.005)  # a signal-triggered snapshot is in flight
                    continue
                raise snapshot_error(e.errno, sig) from None

    # -- status records -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume bytes from the status pipe."""
        self.buf += data
        size = _engine.STATUS.size
        while len(self.buf) >= size:
            rec = _engine.STATUS.unpack(self.buf[:size])
            self.buf = self.buf[size:]
            magic, kind, _err, _stage, written, total, _file_size, _nseg = rec
            if magic != _engine.native.STATUS_MAGIC:
                continue
            self.written, self.total = written, total
            if kind != _engine.ST_PROGRESS:
                self.done = rec
            elif self.opts.on_progress is not None:
                try:
                    self.opts.on_progress(written, total)
                except Exception:  # a progress callback must not break the snapshot
                    log.exception("progress callback failed")

    def remaining(self) -> Optional[float]:
        """Seconds left before the timeout, or None without one."""
        if self.opts.timeout is None:
            return None
        return self.opts.timeout - (time.monotonic() - self.t0)

    # -- completion -----------------------------------------------------------------

    def finish(self, wait_status: int) -> CorePath:
        """Turn the child's last record and exit status into a path or an exception."""
        try:
            if self.done is not None and self.done[1] == _engine.ST_DONE:
                return self._success()
            self._cleanup_files()
            if self.done is not None and self.done[1] == _engine.ST_ERROR:
                _, _, err, stage, written, total, need, _ = self.done
                stage_name = _engine.STAGES.get(stage, str(stage))
                if err == errno_mod.EFBIG and self.opts.max_size and need:
                    raise max_size_error(self.opts.max_size, need)
                raise write_error(
                    self.directory, err, stage_name, written, total, bool(self.opts.compress)
                )
            if wait_status >= 0 and os.WIFSIGNALED(wait_status):
                raise CoreChildError(
                    f"the snapshot child {self.child_pid} was killed by signal "
                    f"{signal_name(os.WTERMSIG(wait_status))} after writing "
                    f"{format_size(self.written)} of {format_size(self.total)}",
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
        assert self.done is not None
        _, _, _, _, written, _, file_size, nseg = self.done
        r = self.result
        report = SnapshotReport(
            path=self.path,
            child_pid=r["pid"],
            threads=tuple(ThreadReport(tid, st) for tid, st in r["threads"] if st != "gone"),
            freeze_s=r["freeze_ns"] / 1e9,
            fork_s=r["fork_ns"] / 1e9,
            pause_s=(r["freeze_ns"] + r["fork_ns"]) / 1e9,
            elapsed_s=time.monotonic() - self.t0,
            written=written,
            file_size=file_size,
            segments=nseg,
            compressed_size=os.stat(self.path).st_size if self.opts.compress else None,
        )
        p = CorePath(self.path)
        p.report = report
        if report.incomplete and self.opts.threads:
            log.warning(
                "core %s: threads %s did not stop for the snapshot (signal blocked or "
                "uninterruptible); only their stack and instruction pointers are in the core",
                self.path,
                ", ".join(map(str, report.incomplete)),
            )
        log.info(
            "core %s written (%s%s) in %.2f s",
            self.path,
            format_size(file_size),
            ""
            if report.compressed_size is None
            else f", {format_size(report.compressed_size)} compressed",
            report.elapsed_s,
        )
        return p

    def abort(self) -> None:
        """Kill the child (if any), reap it, remove the partial file."""
        if self.child_pid > 0:
            try:
                os.kill(self.child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _engine.native.reap(pid=self.child_pid, block=True)
            self.child_pid = -1
        self._cleanup_files()
        self._close()

    def timeout_error(self) -> GencoreError:
        """The error for a core not finished in time (the child is killed by abort)."""
        return timeout_error(
            "the core",
            self.opts.timeout,
            f" (wrote {format_size(self.written)} of {format_size(self.total)}); the snapshot "
            "child was killed",
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


def wait_blocking(job: Job) -> CorePath:
    """Wait for the job's child with the GIL released (in select and waitpid)."""
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
        status = _engine.native.reap(pid=job.child_pid, block=True)
        job.child_pid = -1
        return job.finish(-1 if status is None else status)
    except BaseException:
        job.abort()
        raise


async def _read_status(job: Job, loop: asyncio.AbstractEventLoop) -> None:
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


async def _reap_async(pid: int, loop: asyncio.AbstractEventLoop) -> int:
    native = _engine.native
    status = native.reap(pid=pid, block=False)
    if status is not None:
        return status
    try:
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        pidfd = -1
    try:
        if pidfd >= 0:
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        while True:
            status = native.reap(pid=pid, block=False)
            if status is not None:
                return status
            await asyncio.sleep(0.001)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


async def wait_async(job: Job) -> CorePath:
    """Wait for the job's child through the running event loop (status pipe and pidfd)."""
    loop = asyncio.get_running_loop()
    try:
        await _read_status(job, loop)
        status = await _reap_async(job.child_pid, loop)
        job.child_pid = -1
        return job.finish(status)
    except BaseException:
        job.abort()
        raise


def kernel_core(opts: CoreOptions) -> CorePath:
    """method="kernel": a forked copy of this thread crashes and the kernel writes its core."""
    from . import kernel as _kernel

    _engine.require()
    t0 = time.monotonic()
    check_dumpable(opts.force)
    _kernel.preflight()
    final, _ = core_names(opts.name or make_stem())
    d, dir_fd = open_directory(opts.directory)
    try:
        path, pid, fork_s = _kernel.create(d, dir_fd, final, opts.force, opts.timeout)
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


def run(opts: CoreOptions) -> CorePath:
    """Take one core with these options and wait for it (the calling thread blocks)."""
    if opts.method == "kernel":
        return kernel_core(opts)
    return wait_blocking(Job(opts))


# -- uploads (upload=URL) -------------------------------------------------------------------

_P = TypeVar("_P", bound=Path)


def _upload_argv(path: Path, opts: CoreOptions) -> list[str]:
    from ..ship.helper import finish_argv

    assert opts.upload is not None
    argv = finish_argv(
        sys.executable,
        path.parent,
        fmt=None,
        pid=None,
        events=None,
        upload=opts.upload,
        keep_local=opts.keep_local,
        max_total=0,
        keep_free=0,
    )
    return [*argv, path.name]


def _uploaded(path: _P, stdout: bytes) -> _P:
    """The helper's reply: the object's URL on ``path.url``, or the failure raised."""
    for raw in stdout.splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if doc.get("file") != path.name:
            continue  # an earlier pending file the helper uploaded on the way
        if "uploaded" in doc:
            path.url = doc["uploaded"]  # type: ignore[attr-defined]
            return path
        if "upload_error" in doc:
            raise _upload_error(path, doc["upload_error"])
    raise _upload_error(path, "the upload helper gave no result")


def _upload_error(path: Path, message: str) -> UploadError:
    err = UploadError(
        f"{path.name} was written but not uploaded: {message}",
        stage="upload",
        advice=f"the file stays in {path.parent}; gencore upload --pending {path.parent} URL "
        "tries again",
    )
    err.path = path
    return err


def upload(path: _P, opts: CoreOptions) -> _P:
    """Upload a finished core or bundle when ``opts.upload`` asks for it (helper process)."""
    if opts.upload is None:
        return path
    try:
        p = subprocess.run(
            _upload_argv(path, opts),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=opts.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _upload_error(path, f"no answer within {opts.timeout:g} s") from None
    return _uploaded(path, p.stdout)


async def upload_async(path: _P, opts: CoreOptions) -> _P:
    """:func:`upload` through the event loop."""
    if opts.upload is None:
        return path
    proc = await asyncio.create_subprocess_exec(
        *_upload_argv(path, opts),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), opts.timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return _uploaded(path, stdout)
