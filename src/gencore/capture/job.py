"""One core from Python: preflight, then the engine's job, then waiting and reporting.

The engine's job (``gc_job.c``, the same life as a triggered core's) names the core, creates
its partial file, freezes the threads, forks the snapshot child and returns at once; the
child writes ``.<stem>.core.partial``, renames it to ``<stem>.core`` when it is complete and
reports on a status pipe. A :class:`Job` waits on that pipe; :func:`run`,
:func:`wait_blocking` and :func:`wait_async` turn its outcome into a :class:`~gencore.CorePath`
or a :class:`~gencore.GencoreError`. The public functions (``snapshot.py``, bundles) and the
exception trigger go through here.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import logging
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .. import _procfs
from .._common import VERSION, core_names, format_size
from ..errors import (
    CoreChildError,
    GencoreError,
    directory_error,
    exists_error,
    max_size_error,
    signal_name,
    snapshot_error,
    timeout_error,
    write_error,
)
from . import caplayout, engine, metadata
from .kernel import WALL
from .options import CoreOptions, check_max_size, freeze_signal
from .preflight import check_dumpable, open_directory, warn_space
from .result import CorePath, SnapshotReport, ThreadReport

log = logging.getLogger("gencore")
_snapshot_lock = threading.Lock()


ZSTD_LEVEL = 1


def _filter_command(what: str, script: str, *args: str) -> tuple[bytes, ...]:
    """``python SCRIPT ARGS`` (a filter the snapshot child starts) with this interpreter,
    checked here, before any fork."""
    if not sys.executable or not os.access(sys.executable, os.X_OK):
        raise ValueError(
            f"{what} runs its filter with this Python, but sys.executable "
            f"({sys.executable!r}) is not an executable"
        )
    path = Path(__file__).with_name(script)
    return tuple(os.fsencode(a) for a in (sys.executable, str(path), *args))


def _threads() -> str:
    return str(max(1, min(os.cpu_count() or 1, 8)))


def compressor_argv() -> tuple[bytes, ...]:
    """The command line of the compressor the snapshot child starts for ``compress="zstd"``
    (:mod:`gencore.capture.zpipe`, zstd level 1 on every CPU): checked here, before any fork."""
    from ..ship.extract import import_zstandard

    import_zstandard("compress='zstd'")
    return _filter_command("compress='zstd'", "zpipe.py", str(ZSTD_LEVEL), _threads())


def encryptor_argv(recipients: tuple[str, ...], compress: Optional[str]) -> tuple[bytes, ...]:
    """The command line of the encrypting filter the snapshot child starts for
    ``encrypt_to=`` (:mod:`gencore.capture.agepipe`; zstd first with ``compress="zstd"``)."""
    from ..ship.crypt import import_pyrage

    import_pyrage()
    if compress:
        compressor_argv()  # the same checks
    level = str(ZSTD_LEVEL) if compress else "-"
    return _filter_command("encrypt_to", "agepipe.py", level, _threads(), *recipients)


def filter_argv(opts: CoreOptions) -> Optional[tuple[bytes, ...]]:
    """The filter the snapshot child writes the core through, if any."""
    if opts.encrypt_to:
        return encryptor_argv(opts.encrypt_to, opts.compress)
    return compressor_argv() if opts.compress else None


def wants_pylayout(opts: CoreOptions) -> bool:
    """Whether the child may cap the core: ``max_size``, or a memory cgroup's limit (the child
    caps it when the headroom is short)."""
    return bool(opts.max_size) or _procfs.cgroup_memory() is not None


def native_options(opts: CoreOptions, note: bytes) -> tuple[bytes, bytes]:
    """The engine's ``core`` record and data blob for ``opts`` (checked: the cap fits)."""
    check_max_size(opts.max_size, len(note))
    pipe = filter_argv(opts)
    fields, data = opts.record(note, pipe, caplayout.layout() if wants_pylayout(opts) else None)
    return engine.record("core").pack(**fields), data


def _start_error(err: int, stage: str, directory: Path, name: str, sig: int) -> GencoreError:
    if stage == "name" and err == errno_mod.EEXIST:
        return exists_error(directory / name)
    if stage == "open" and err == errno_mod.EEXIST:
        return exists_error(directory / f".{name}.partial")
    if stage in ("name", "open"):
        return directory_error(directory, err)
    return snapshot_error(err, sig)


class Job:
    """One core in flight: the engine's job, its status records, its outcome."""

    def __init__(self, opts: CoreOptions) -> None:
        engine.require()
        if opts.method != "native":
            raise ValueError(
                f"method={opts.method!r} cannot be waited for this way; use create_core"
            )
        self.opts = opts
        self.t0 = time.monotonic()
        self.written = self.total = 0
        self.done: Optional[dict[str, Any]] = None
        self.buf = b""
        self.status = engine.record("status")
        check_dumpable(opts.force)
        sig = freeze_signal(opts.freeze_signal)
        name = core_names(opts.name, opts.compress, bool(opts.encrypt_to))[0] if opts.name else None
        self.directory, self.dir_fd = open_directory(opts.directory)
        try:
            warn_space(self.directory, self.dir_fd)
            note = metadata.build_note(
                reason=opts.reason,
                version=VERSION,
                with_stacks=opts.python_stacks,
                extra=opts.extra,
                redact=opts.redact,
            )
            options, data = native_options(opts, note)
            with _snapshot_lock:
                r = engine.native.job_start(
                    options=options, data=data, dir_fd=self.dir_fd, name=name
                )
            if "error" in r:
                raise _start_error(r["error"], r["stage"], self.directory, name or "core", sig)
        except BaseException:
            os.close(self.dir_fd)
            raise
        self.result = r
        self.job: Optional[bytes] = r["job"]
        self.rfd: int = r["rfd"]
        self.child_pid: int = r["pid"]
        self.path = self.directory / r["final"]
        log.info(
            "snapshot child %d writing %s (pause %.3f ms, %d threads, %d incomplete)",
            self.child_pid,
            self.path,
            (r["freeze_ns"] + r["fork_ns"]) / 1e6,
            len(r["threads"]),
            r["timed_out"],
        )

    # -- status records -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume bytes from the status pipe."""
        self.buf += data
        size = self.status.size
        while len(self.buf) >= size:
            rec = self.status.unpack(self.buf[:size])
            self.buf = self.buf[size:]
            if rec["magic"] != engine.native.STATUS_MAGIC:
                continue
            self.written, self.total = rec["written"], rec["total"]
            if rec["kind"] != engine.ST_PROGRESS:
                self.done = rec
            elif self.opts.on_progress is not None:
                try:
                    self.opts.on_progress(self.written, self.total)
                except Exception:  # a progress callback must not break the snapshot
                    log.exception("progress callback failed")

    def remaining(self) -> Optional[float]:
        """Seconds left before the timeout, or None without one."""
        if self.opts.timeout is None:
            return None
        return self.opts.timeout - (time.monotonic() - self.t0)

    # -- completion -----------------------------------------------------------------

    @property
    def published(self) -> bool:
        """Whether the child reported the core complete under its final name."""
        return self.done is not None and self.done["kind"] == engine.ST_DONE

    def end(self, block: bool = True) -> Optional[int]:
        """Reap the child, close the pipe, remove the partial file unless published; the wait
        status (None while it runs, with ``block=False``)."""
        if self.job is None:
            return -1
        if not block and self.running():
            return None
        status = engine.native.job_end(job=self.job, published=self.published)
        self.job = None
        os.close(self.dir_fd)  # the job's partial file was removed through it
        return int(status)

    def running(self) -> bool:
        """Whether the snapshot child is still running (its exit not reaped: a peek)."""
        try:
            info = os.waitid(os.P_PID, self.child_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT | WALL)
        except ChildProcessError:
            return False  # an application reaper took it
        return info is None

    def finish(self, wait_status: int) -> CorePath:
        """Turn the child's last record and exit status into a path or an exception."""
        if self.published:
            return self._success()
        if self.done is not None and self.done["kind"] == engine.ST_ERROR:
            d = self.done
            stage_name = engine.STAGES.get(d["stage"], str(d["stage"]))
            if d["err"] == errno_mod.EFBIG and self.opts.max_size and d["file_size"]:
                raise max_size_error(self.opts.max_size, d["file_size"])
            raise write_error(
                self.directory,
                d["err"],
                stage_name,
                d["written"],
                d["total"],
                bool(self.opts.compress),
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

    def _success(self) -> CorePath:
        assert self.done is not None
        r = self.result
        report = SnapshotReport(
            path=self.path,
            child_pid=r["pid"],
            threads=tuple(ThreadReport(tid, st) for tid, st in r["threads"] if st != "gone"),
            freeze_s=r["freeze_ns"] / 1e9,
            fork_s=r["fork_ns"] / 1e9,
            pause_s=(r["freeze_ns"] + r["fork_ns"]) / 1e9,
            elapsed_s=time.monotonic() - self.t0,
            written=self.done["written"],
            file_size=self.done["file_size"],
            segments=self.done["nsegments"],
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
            format_size(report.file_size),
            ""
            if report.compressed_size is None
            else f", {format_size(report.compressed_size)} compressed",
            report.elapsed_s,
        )
        return p

    def abort(self) -> None:
        """Kill the child (if any), reap it, remove the partial file."""
        if self.job is not None:
            try:
                os.kill(self.child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.done = None
            self.end(block=True)

    def timeout_error(self) -> GencoreError:
        """The error for a core not finished in time (the child is killed by abort)."""
        return timeout_error(
            "the core",
            self.opts.timeout,
            f" (wrote {format_size(self.written)} of {format_size(self.total)}); the snapshot "
            "child was killed",
            advice="pass a larger timeout=, or a faster directory=",
        )


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
        status = job.end(block=True)
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


async def _reap_async(job: Job, loop: asyncio.AbstractEventLoop) -> int:
    status = job.end(block=False)
    if status is not None:
        return status
    try:
        pidfd = os.pidfd_open(job.child_pid)  # type: ignore[attr-defined,unused-ignore]
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
            status = job.end(block=False)
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
        return job.finish(await _reap_async(job, loop))
    except BaseException:
        job.abort()
        raise
