"""The process's memory as a core holds it: an ``mmap`` of the core file, read by address.

Every analysis of Python objects (stacks, tasks, the heap) reads memory through
:class:`CoreMemory`, built on the segments :mod:`gencore.analysis.reader` parsed. Reads are
views of the mapped file where possible (a list of a million pointers costs nothing); an
address the core does not hold raises :class:`Unreadable`, which callers count or turn into
an honest "unknown", never into a guess.
"""

from __future__ import annotations

import mmap
import struct
from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = ["BLOCK", "MAX_ITEMS", "CoreMemory", "Unreadable", "unpack_q"]

MAX_ITEMS = 1 << 28
"""More items than any container in a core can hold: a count past it is a misread field."""
BLOCK = 16
"""Address blocks of 64 KiB map to file offsets with one dict lookup."""
unpack_q = struct.Struct("<Q").unpack_from


class Unreadable(Exception):
    """An address (or a field read from it) that the core does not hold."""


class CoreMemory:
    """Read-only access to the memory of one core, by virtual address."""

    def __init__(self, core: ElfCore) -> None:
        segs = sorted(
            (m.start, m.start + m.filesz, m.offset) for m in core.mappings if m.filesz > 0
        )
        self.starts = [s for s, _, _ in segs]
        self.segs = segs
        if core._f is None:
            raise ValueError("the core file is closed")
        self.mm = mmap.mmap(core._f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = len(self.mm)
        self.dumped = sum(e - s for s, e, _ in segs)
        self.blocks: dict[int, int] = {}

    def close(self) -> None:
        """Unmap the core (a view still held, e.g. by a traceback, unmaps it when it goes)."""
        try:
            self.mm.close()
        except BufferError:
            pass

    def offset(self, addr: int, n: int) -> int:
        """File offset of ``[addr, addr+n)``; raises :class:`Unreadable` if the core lacks it."""
        blk = addr >> BLOCK
        d = self.blocks.get(blk)
        if d is not None and (addr + n - 1) >> BLOCK == blk and n > 0:
            return addr + d
        i = bisect_right(self.starts, addr) - 1
        if i < 0:
            raise Unreadable
        s, e, off = self.segs[i]
        if addr + n > e or n < 0:
            raise Unreadable
        fo = off + addr - s
        if fo + n > self.size:
            raise Unreadable
        # remember the block if the segment and the file hold all of it
        b0 = blk << BLOCK
        if s <= b0 and b0 + (1 << BLOCK) <= min(e, s + self.size - off):
            self.blocks[blk] = off - s
        return fo

    def readable(self, addr: int, n: int = 8) -> bool:
        """Whether the core holds ``[addr, addr+n)``."""
        try:
            self.offset(addr, n)
        except Unreadable:
            return False
        return True

    def words(self, addr: int, n: int) -> memoryview:
        """``n`` 64-bit words at ``addr``, as a view of the core."""
        if n <= 0:
            return memoryview(b"").cast("Q")
        if n > MAX_ITEMS:
            raise Unreadable
        fo = self.offset(addr, 8 * n)
        return memoryview(self.mm)[fo : fo + 8 * n].cast("Q")

    def u64(self, addr: int) -> int:
        """The unsigned 64-bit word at ``addr``."""
        return int(unpack_q(self.mm, self.offset(addr, 8))[0])

    def i64(self, addr: int) -> int:
        """The signed 64-bit word at ``addr``."""
        return int(struct.unpack_from("<q", self.mm, self.offset(addr, 8))[0])

    def u32(self, addr: int) -> int:
        """The unsigned 32-bit word at ``addr``."""
        return int(struct.unpack_from("<I", self.mm, self.offset(addr, 4))[0])

    def raw(self, addr: int, n: int) -> bytes:
        """``n`` bytes at ``addr``."""
        fo = self.offset(addr, n)
        return self.mm[fo : fo + n]

    def c_string(self, addr: int, limit: int = 256) -> str:
        """The NUL-terminated string at ``addr`` (within one segment, at most ``limit``)."""
        i = bisect_right(self.starts, addr) - 1
        if i < 0:
            raise Unreadable
        s, e, off = self.segs[i]
        n = min(limit, e - addr)
        b = self.raw(addr, n)
        end = b.find(b"\0")
        if end < 0:
            raise Unreadable
        return b[:end].decode("utf-8", "replace")
