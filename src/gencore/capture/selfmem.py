"""Reading this process's own memory, every address checked against its maps first.

The in-process layouts (:mod:`.heaplayout`, :mod:`.caplayout`) find where the interpreter keeps
things by reading live objects' memory; a wrong guess must give no layout, never a fault in
the application, so nothing is read that :class:`Maps` does not show readable, and reads go
through ``/proc/self/mem`` (an unreadable address is an error, not a signal). No ctypes: a
process that never imported it (``gencore trigger --inject``) is left as it was, without
libffi's trampoline file.
"""

from __future__ import annotations

import os
import struct

from .. import _procfs
from ..analysis.memory import Unreadable
from ..analysis.pylayout import RawMemory
from . import engine

__all__ = ["LiveMemory", "Maps", "c_string", "i32", "i64", "read", "scan_for", "symbol", "u64"]


class LiveMemory(RawMemory):
    """This process's own memory as the offline readers read a core's, through an open
    ``/proc/self/mem``: an address that is not mapped gives
    :class:`~gencore.analysis.memory.Unreadable`, never a fault."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def raw(self, addr: int, n: int) -> bytes:
        try:
            data = os.pread(self.fd, n, addr) if 0 < addr < 1 << 63 and n >= 0 else b""
        except OSError:
            data = b""
        if len(data) != n:
            raise Unreadable
        return data


class Maps:
    """Readable ranges of this process, from /proc/self/maps (read again on a miss: a probe
    object made after the last reading may live in an arena mapped since)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self._load()

    def _load(self) -> None:
        self.ranges = []
        for row in _procfs.maps():
            if not row.readable:
                continue
            lo, hi = row.start, row.end
            if self.ranges and self.ranges[-1][1] == lo:  # adjacent: .data then .bss
                lo = self.ranges.pop()[0]
            self.ranges.append((lo, hi))

    def _within(self, addr: int, size: int) -> bool:
        return any(lo <= addr and addr + size <= hi for lo, hi in self.ranges)

    def readable(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr+size)`` lies in one readable range."""
        if self._within(addr, size):
            return True
        self._load()
        return self._within(addr, size)


def read(addr: int, size: int) -> bytes:
    """``size`` bytes of this process's memory at ``addr``.

    Raises:
        LookupError: the memory cannot be read.
    """
    fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, addr)
    except OSError as e:
        raise LookupError(f"memory at {addr:#x} is not readable: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise LookupError(f"memory at {addr:#x} is not readable")
    return data


def u64(addr: int) -> int:
    """The unsigned 64-bit word at ``addr``."""
    return int(struct.unpack("<Q", read(addr, 8))[0])


def i64(addr: int) -> int:
    """The signed 64-bit word at ``addr``."""
    return int(struct.unpack("<q", read(addr, 8))[0])


def i32(addr: int) -> int:
    """The signed 32-bit word at ``addr``."""
    return int(struct.unpack("<i", read(addr, 4))[0])


def c_string(addr: int, limit: int = 256) -> bytes:
    """The NUL-terminated bytes at ``addr`` (at most ``limit``, within one page's reach)."""
    out = b""
    while len(out) < limit:
        chunk = read(addr + len(out), min(64, 4096 - (addr + len(out)) % 4096))
        end = chunk.find(b"\0")
        if end >= 0:
            return out + chunk[:end]
        out += chunk
    return out


def symbol(name: str) -> int:
    """The address of one of this process's symbols (``_PyRuntime``, ``Py_Version``,
    ``_r_debug``), 0 if there is none."""
    engine.require()
    return int(engine.native.self_symbol(name=name))


def scan_for(maps: Maps, base: int, size: int, target: int) -> int:
    """Offset of the first pointer-sized field in ``[base, base+size)`` equal to ``target``.

    Raises:
        LookupError: the memory is not readable, or no field holds ``target``.
    """
    if not maps.readable(base, size):
        raise LookupError("object memory not readable")
    raw = read(base, size)
    for off in range(0, size - 7, 8):
        if struct.unpack_from("<Q", raw, off)[0] == target:
            return off
    raise LookupError("field not found")
