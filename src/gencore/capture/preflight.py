"""What is checked and prepared in the process before a core is started: its name, its
directory, the dumpable flag, free space. Shared by the native job and the kernel method."""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import stat
import time
from pathlib import Path
from typing import Optional

from .. import _procfs
from .._common import PathLike, default_directory, format_size, tz_offset
from ..errors import CoreDirectoryError, directory_error, not_dumpable_error
from . import engine

__all__ = ["check_dumpable", "make_stem", "open_directory", "warn_space"]

log = logging.getLogger("gencore")


def make_stem(pid: Optional[int] = None) -> str:
    """``core_<YYYYMMDD>.<HHMMSS>.<pid>.<seq>`` in local time, seq per process (named in C,
    where the signal handler names its cores too)."""
    engine.require()
    native = engine.native
    return str(
        native.core_stem(
            time=int(time.time()),
            tz_offset=tz_offset(),
            pid=pid or os.getpid(),
            seq=native.next_seq(),
        )
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
    if engine.native.dumpable() == 0 and not force:
        raise not_dumpable_error()


def warn_space(directory: Path, dir_fd: int) -> None:
    try:
        vfs = os.statvfs(dir_fd)
    except OSError:
        return
    free, resident = vfs.f_bavail * vfs.f_frsize, _procfs.resident_bytes()
    if free < resident:
        log.warning(
            "only %s free in %s for a process of %s resident: the core may not fit",
            format_size(free),
            directory,
            format_size(resident),
        )
