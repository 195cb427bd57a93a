"""The public functions that take a core: blocking, asyncio and callback forms.

Each builds one :class:`~gencore.capture.options.CoreOptions` (every argument is checked before
anything is forked) and hands it to the internal job module, which freezes, forks, waits and
publishes.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Callable, Optional

from .._common import PathLike, default_directory, in_thread
from ..ship.client import upload, upload_async
from . import engine
from . import job as _job
from .kernel import kernel_core
from .options import CoreOptions
from .result import CorePath, SnapshotReport, ThreadReport

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import CoreOptionArgs

__all__ = [
    "CorePath",
    "SnapshotReport",
    "ThreadReport",
    "create_core",
    "create_core_async",
    "default_directory",
    "run_core",
    "start_core",
    "supported",
]


def supported() -> bool:
    """True when this platform has the native snapshot engine (Linux on x86_64 or aarch64,
    CPython's default build)."""
    return engine.available()


def run_core(opts: CoreOptions) -> CorePath:
    """Take one core with these options and wait for it (the calling thread blocks)."""
    if opts.method == "kernel":
        return kernel_core(opts)
    return _job.wait_blocking(_job.Job(opts))


def create_core(
    directory: Optional[PathLike] = None, **options: Unpack[CoreOptionArgs]
) -> CorePath:
    """Write a core dump of this process and return its path once it is complete.

    Every thread is parked for a moment with a private real-time signal so its registers
    can be saved, then one ``fork()`` creates a snapshot child and the threads run again. The
    child writes a kernel-compatible ELF core (readable by pystack, py-spy, gdb and elfutils)
    while the application carries on; this call blocks only the calling thread, with the GIL
    released, until the core is published.

    Args:
        directory: where to write; default ``$GENCORE_DIR``, else the current directory.

    Keyword options (the same for every function that takes a core):
        name: file name stem; default ``core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>``. ``.core`` is
            appended.
        threads: freeze and capture every thread (default). ``False``: only the calling
            thread is captured (the original behaviour); the others are listed as incomplete,
            with the stack and instruction pointers the kernel reports, and are never stopped.
        python_stacks: store every Python thread's stack in the core's GENCORE note
            (default ``True``).
        filter: ``/proc/PID/coredump_filter`` bits choosing which memory is written
            (default ``0xff``: all anonymous and file-backed memory and ELF headers).
            ``MADV_DONTDUMP`` memory is never written.
        freeze_timeout: seconds to wait for each thread to park (default 0.25); a thread that
            does not (signal blocked, uninterruptible sleep) is still listed, as incomplete.
        timeout: seconds until the core must be finished (default 600), else the child is
            killed and :class:`~gencore.CoreTimeoutError` raised. ``None``: no limit.
        freeze_signal: real-time signal used to park threads (default ``SIGRTMAX-3`` or
            ``$GENCORE_FREEZE_SIGNAL``).
        force: write a core even if the process is marked non-dumpable.
        on_progress: called as ``on_progress(written, total)`` while the core is written.
        upload: an fsspec URL (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``, with
            ``gencore[s3]`` & co. installed): once complete, the core is uploaded by a helper
            process to ``URL/<hostname>/<name>`` with a JSON manifest, and the local file is
            removed; the returned path's ``url`` is the object's URL. A failed upload raises
            ``UploadError`` (a :class:`GencoreError`) whose ``path`` is the kept local file.
        keep_local: keep the local file after the upload.
        compress: ``"zstd"`` writes ``<stem>.core.zst``, one standard zstd stream that
            ``zstd -d`` turns into the core (every gencore command and :func:`open_core`
            read it directly). The snapshot child writes the core in file order into a
            compressor process (this Python, ``zstandard``, level 1, one thread per CPU up
            to 8) at the child's lower priority: the application still pauses for one
            fork only. Needs ``gencore[zstd]``.
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
        ValueError: an option has an impossible value (nothing was forked).
    """
    opts = CoreOptions.build(directory, options)
    return upload(run_core(opts), opts)


async def create_core_async(
    directory: Optional[PathLike] = None, **options: Unpack[CoreOptionArgs]
) -> CorePath:
    """Like :func:`create_core` (same options), as a coroutine: the wait goes through the loop.

    The snapshot itself (freeze and fork) happens when the coroutine starts; the status pipe
    and a pidfd are then watched by the loop, so no helper thread is used. Cancelling the
    task kills the snapshot child and removes the partial file. ``method="kernel"`` is not
    available here.
    """
    opts = CoreOptions.build(directory, options)
    return await upload_async(await _job.wait_async(_job.Job(opts)), opts)


def start_core(
    directory: Optional[PathLike] = None,
    *,
    callback: Optional[Callable[[Optional[BaseException], Optional[CorePath]], None]] = None,
    **options: Unpack[CoreOptionArgs],
) -> concurrent.futures.Future[CorePath]:
    """Take the snapshot now and return a Future of its path, the callback form.

    The options are those of :func:`create_core`. The freeze and fork happen before this
    returns, so the core shows the process as it was at the call. A daemon thread waits for
    the child. ``callback(error, path)`` is called from that thread when the core is done
    (``error`` is ``None`` on success), the order of the original module's
    ``createCore(callback)``.

    Preflight errors (bad directory, non-dumpable process...) are raised right away. The
    future's ``child_pid`` attribute is the snapshot child's pid, ``path`` the core's path
    once it is published.
    """
    opts = CoreOptions.build(directory, options)
    job = _job.Job(opts)
    fut = in_thread(lambda: upload(_job.wait_blocking(job), opts), callback, "gencore-wait")
    fut.child_pid = job.child_pid  # type: ignore[attr-defined]
    fut.path = job.path  # type: ignore[attr-defined]
    return fut
