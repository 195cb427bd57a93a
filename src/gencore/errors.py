"""The exception hierarchy: every failure of gencore is a :class:`GencoreError`."""

from __future__ import annotations

import errno as _errno
from typing import Optional


class GencoreError(Exception):
    """Base class of every gencore failure.

    Attributes:
        errno: the operating-system error number behind the failure, or ``None``.
        stage: where it failed: ``"preflight"``, ``"freeze"``, ``"fork"``, ``"setup"``,
            ``"maps"``, ``"notes"``, ``"memory"``, ``"publish"``, ``"wait"`` or ``"read"``.
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
    """This platform has no snapshot engine (only Linux on x86_64 is supported)."""


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

    def __init__(self, message: str, *, written: int = 0, total: int = 0, **kw: object) -> None:
        self.written = written
        self.total = total
        super().__init__(message, **kw)  # type: ignore[arg-type]


class CoreTimeoutError(GencoreError):
    """The core was not finished within the timeout; the snapshot child was killed."""


class CoreChildError(GencoreError):
    """The snapshot child died without reporting a result."""


class CoreFormatError(GencoreError):
    """A file given to the reader is not a core gencore can read."""


def describe_errno(code: Optional[int]) -> str:
    """Return ``"ENOSPC (No space left on device)"`` style text for an errno value."""
    if not code:
        return "unknown error"
    import os

    name = _errno.errorcode.get(code, str(code))
    return f"{name} ({os.strerror(code)})"
