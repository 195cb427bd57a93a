"""The exception hierarchy and the advice it carries: every failure is a :class:`GencoreError`.

The sentences that tell a person what to do live here, next to the classes, so that each
raise site names what failed and picks its advice from one place.
"""

from __future__ import annotations

import errno as _errno
import os
import signal
from pathlib import Path
from typing import Optional

from ._common import format_size

__all__ = [
    "BundleError",
    "CoreChildError",
    "CoreDirectoryError",
    "CoreForkError",
    "CoreFormatError",
    "CoreTimeoutError",
    "CoreWriteError",
    "DecryptionError",
    "FreezeError",
    "GencoreError",
    "HeapUnavailableError",
    "KernelCoreUnavailableError",
    "NotDumpableError",
    "PythonUnavailableError",
    "UnsupportedPlatformError",
    "describe_errno",
]


class GencoreError(Exception):
    """Base class of every gencore failure.

    Attributes:
        errno: the operating-system error number behind the failure, or ``None``.
        stage: where it failed: ``"preflight"``, ``"freeze"``, ``"fork"``, ``"setup"``,
            ``"maps"``, ``"notes"``, ``"memory"``, ``"publish"``, ``"wait"``, ``"read"``,
            ``"bundle"``, ``"install"`` or ``"trigger"``.
        advice: what a person can do about it (also part of ``str(error)``).
    """

    def __init__(
        self,
        message: str,
        *,
        errno: Optional[int] = None,
        stage: str = "",
        advice: str = "",
    ) -> None:
        self.errno = errno
        self.stage = stage
        self.advice = advice
        self.message = message
        text = message if not advice else f"{message}; {advice}"
        super().__init__(text)


class UnsupportedPlatformError(GencoreError):
    """This platform has no snapshot engine (Linux on x86_64 and aarch64 is supported)."""


class CoreDirectoryError(GencoreError):
    """The target directory is missing, not a directory, or not writable."""


class NotDumpableError(GencoreError):
    """The process is marked non-dumpable (it may hold secrets); pass ``force=True``."""


class FreezeError(GencoreError):
    """The threads could not be frozen (freeze signal in use, or another snapshot running)."""


class CoreForkError(GencoreError):
    """The snapshot child could not be created (out of memory or process limit)."""


class CoreWriteError(GencoreError):
    """The snapshot child failed while writing the core (disk full, quota, I/O error...).

    Attributes:
        written: bytes of memory written before the failure.
        total: bytes of memory the core would have held (an upper bound).
    """

    def __init__(
        self,
        message: str,
        *,
        written: int = 0,
        total: int = 0,
        errno: Optional[int] = None,
        stage: str = "",
        advice: str = "",
    ) -> None:
        self.written = written
        self.total = total
        super().__init__(message, errno=errno, stage=stage, advice=advice)


class CoreTimeoutError(GencoreError):
    """The core was not finished within the timeout; the snapshot child was killed."""


class CoreChildError(GencoreError):
    """The snapshot child died without reporting a result."""


class CoreFormatError(GencoreError):
    """A file given to the reader is not a core gencore can read."""


class DecryptionError(GencoreError):
    """An encrypted (age) core or bundle could not be opened: no identity was given, or none
    of them is one of the file's recipients."""


class MemoryUnavailableError(GencoreError, LookupError):
    """The address is not in the core (unmapped, or mapped but not dumped, or left out by a
    ``max_size`` cap)."""


class HeapUnavailableError(GencoreError):
    """The core does not say how to walk its Python heap (kernel cores, cores of free-threaded
    or debug interpreters): ``gencore heap`` cannot census it."""


class PythonUnavailableError(GencoreError):
    """The core's Python interpreter state cannot be read from its memory (no CPython found,
    an unknown version or build, or its runtime state not in the core): ``gencore stacks``
    and ``gencore tasks`` say why."""


class KernelCoreUnavailableError(GencoreError):
    """The kernel would not write the core where method="kernel" can find it."""


class BundleError(GencoreError):
    """Building or reading a bundle failed."""


class UploadError(GencoreError):
    """An upload to object storage failed; the local file is kept (``path``, when the
    failure followed a core written with ``upload=``)."""

    path: Optional[Path] = None


def describe_errno(code: Optional[int]) -> str:
    """Return ``"ENOSPC (No space left on device)"`` style text for an errno value."""
    if not code:
        return "unknown error"
    name = _errno.errorcode.get(code, str(code))
    return f"{name} ({os.strerror(code)})"


def signal_name(sig: int) -> str:
    """``"SIGKILL"`` for 9, the number itself for an unknown signal."""
    return signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)


# -- advice shared by several raise sites ------------------------------------------------------

ADVICE_DIRECTORY = "fix its permissions, or pass another directory= / set GENCORE_DIR"
ADVICE_NAME = "pass another name="
ADVICE_FORCE = "pass force=True if a core of it is really wanted"
ADVICE_SPACE = "free space, or pass directory= / set GENCORE_DIR to a larger filesystem"
ADVICE_FORK = (
    "the system is out of memory or processes (check vm.overcommit_memory, ulimit -u, "
    "cgroup pids.max)"
)
ADVICE_TIMEOUT = "pass a larger timeout="
ADVICE_FREEZE_SIGNAL = (
    "pass freeze_signal= or set GENCORE_FREEZE_SIGNAL to an unused real-time signal"
)
ADVICE_NATIVE = "use method='native' (the default), which writes the core itself"


def directory_error(d: Path, err: Optional[int]) -> CoreDirectoryError:
    """The directory ``d`` cannot be opened (``err`` from ``open``)."""
    if err == _errno.ENOENT:
        what, advice = (
            f"core directory {d} does not exist",
            ("create it, or pass directory= / set GENCORE_DIR"),
        )
    elif err == _errno.ENOTDIR:
        what, advice = f"{d} is not a directory", "pass a directory as directory="
    else:
        what, advice = f"cannot open core directory {d}: {describe_errno(err)}", ADVICE_DIRECTORY
    return CoreDirectoryError(what, errno=err, stage="preflight", advice=advice)


def exists_error(path: Path, stage: str = "preflight") -> CoreDirectoryError:
    """A file we must create exists already."""
    return CoreDirectoryError(
        f"{path} already exists", errno=_errno.EEXIST, stage=stage, advice=ADVICE_NAME
    )


def not_dumpable_error() -> NotDumpableError:
    """The process is non-dumpable and ``force`` was not given."""
    return NotDumpableError(
        "this process is marked non-dumpable (prctl PR_SET_DUMPABLE 0): it may hold secrets",
        stage="preflight",
        advice=ADVICE_FORCE,
    )


def snapshot_error(err: Optional[int], sig: int) -> GencoreError:
    """The native freeze + fork failed with ``err``."""
    if err == _errno.EEXIST:
        return FreezeError(
            f"the freeze signal {sig} already has a handler in this process",
            errno=err,
            stage="freeze",
            advice=ADVICE_FREEZE_SIGNAL,
        )
    if err == _errno.EBUSY:
        return FreezeError(
            "another snapshot kept the threads frozen for too long",
            errno=err,
            stage="freeze",
            advice="retry",
        )
    if err in (_errno.ENOMEM, _errno.EAGAIN):
        return CoreForkError(
            f"cannot create the snapshot child: {describe_errno(err)}",
            errno=err,
            stage="fork",
            advice=ADVICE_FORK,
        )
    return CoreForkError(f"snapshot failed: {describe_errno(err)}", errno=err, stage="fork")


_SPACE_ERRORS = {
    _errno.ENOSPC: "no space left on",
    _errno.EDQUOT: "disk quota exceeded on",
    _errno.EFBIG: "file too large for",
}


def write_error(
    directory: Path, err: int, stage: str, written: int, total: int, compressed: bool = False
) -> CoreWriteError:
    """The snapshot child reported ``err`` at ``stage`` after writing ``written`` bytes
    (into the compressor when ``compressed``)."""
    progress = f"{format_size(written)} of {format_size(total)}"
    if compressed and err in (_errno.EPIPE, _errno.ENOEXEC, _errno.EIO):
        return CoreWriteError(
            f"the zstd compressor of the core in {directory} "
            + ("could not start" if err == _errno.ENOEXEC else "failed")
            + f" at stage {stage} (wrote {progress})",
            written=written,
            total=total,
            errno=err,
            stage=stage,
            advice="check that this Python can import zstandard and that the system has "
            "memory to spare, or retry without compress=",
        )
    if err in _SPACE_ERRORS:
        return CoreWriteError(
            f"{_SPACE_ERRORS[err]} {directory}: wrote {progress}",
            written=written,
            total=total,
            errno=err,
            stage=stage,
            advice=ADVICE_SPACE,
        )
    return CoreWriteError(
        f"writing the core in {directory} failed at stage {stage}: {describe_errno(err)} "
        f"(wrote {progress})",
        written=written,
        total=total,
        errno=err,
        stage=stage,
        advice="check the filesystem and retry",
    )


def max_size_error(max_size: int, need: int) -> CoreWriteError:
    """The snapshot child found that even the headers and notes exceed ``max_size``."""
    return CoreWriteError(
        f"max_size {format_size(max_size)} is below the {format_size(need)} ({need} bytes) "
        "this core's headers and notes need (threads were added since it was checked?)",
        errno=_errno.EFBIG,
        stage="notes",
        advice=f"pass max_size of at least {need} bytes",
    )


def timeout_error(
    what: str,
    timeout: Optional[float],
    detail: str = "",
    advice: str = ADVICE_TIMEOUT,
    stage: str = "wait",
) -> CoreTimeoutError:
    """``what`` was not finished within ``timeout`` seconds (``detail`` follows)."""
    return CoreTimeoutError(
        f"{what} was not finished within {timeout or 0:g} s{detail}",
        errno=_errno.ETIMEDOUT,
        stage=stage,
        advice=advice,
    )
