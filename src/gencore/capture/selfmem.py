"""Reading this process's own memory, every address checked against its maps first.

The in-process layouts (:mod:`.heaplayout`, :mod:`.caplayout`) find where the interpreter keeps
things by reading live objects' memory; a wrong guess must give no layout, never a fault in
the application, so nothing is read that :class:`Maps` does not show readable.
"""

from __future__ import annotations

import ctypes
import struct

from .. import _procfs

__all__ = ["Maps", "i32", "scan_for", "u64"]


class Maps:
    """Readable ranges of this process, from /proc/self/maps (read once)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        for row in _procfs.maps():
            if not row.readable:
                continue
            lo, hi = row.start, row.end
            if self.ranges and self.ranges[-1][1] == lo:  # adjacent: .data then .bss
                lo = self.ranges.pop()[0]
            self.ranges.append((lo, hi))

    def readable(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr+size)`` lies in one readable range."""
        return any(lo <= addr and addr + size <= hi for lo, hi in self.ranges)


def u64(addr: int) -> int:
    """The unsigned 64-bit word at ``addr`` (checked by the caller)."""
    return int(ctypes.c_uint64.from_address(addr).value)


def i32(addr: int) -> int:
    """The signed 32-bit word at ``addr`` (checked by the caller)."""
    return int(ctypes.c_int32.from_address(addr).value)


def scan_for(maps: Maps, base: int, size: int, target: int) -> int:
    """Offset of the first pointer-sized field in ``[base, base+size)`` equal to ``target``.

    Raises:
        LookupError: the memory is not readable, or no field holds ``target``.
    """
    if not maps.readable(base, size):
        raise LookupError("object memory not readable")
    raw = ctypes.string_at(base, size)
    for off in range(0, size - 7, 8):
        if struct.unpack_from("<Q", raw, off)[0] == target:
            return off
    raise LookupError("field not found")
