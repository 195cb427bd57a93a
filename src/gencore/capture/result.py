"""What taking a core returns: the path of the finished core with the snapshot's report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PosixPath
from typing import Optional

__all__ = ["CorePath", "SnapshotReport", "ThreadReport"]


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
