"""The heap walk in pure Python: every object of a core once, its size and its references.

This is the reference the native walker (``gencore._native``, ``gc_heapwalk.c``) follows step
for step and the fallback of the pure wheel; tests compare the two on every core. The walk:

1. every GC list of the interpreter (all generations and the permanent one) yields each
   tracked object exactly once;
2. references are followed out of every object whose type can hold some (see
   :mod:`gencore.analysis.heaptypes`) to find the objects the collector does not track
   (``str``, ``int``, ``float``, ``bytes``, atomic tuples and dicts), each counted once; a
   tracked object met through a reference is left to its list;
3. every object is sized the way ``sys.getsizeof`` sizes it, or counted as of unknown size.

The work is bounded by the core's size: a GC list longer than the dumped memory could hold, or
more references than it has pointer slots, is a damaged core (:class:`CoreFormatError`).
A reference to memory the core does not hold is counted, in ``omitted`` when a ``max_size``
cap left it out and in ``unreadable`` otherwise, and skipped.
"""

from __future__ import annotations

import heapq
import struct
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Optional

from ..errors import CoreFormatError
from . import heaptypes as T
from .heaptypes import HeapLayout, ObjectReader, TypeInfo, TypeModel
from .memory import MAX_ITEMS, Unreadable

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = ["Walker", "omitted_ranges"]

_BAD = (Unreadable, struct.error, IndexError, ValueError, OverflowError)
_Q = struct.Struct("<Q").unpack_from


def omitted_ranges(core: ElfCore) -> list[tuple[int, int]]:
    """The address ranges a ``max_size`` cap left out of the core, sorted."""
    budget = core.capture.get("budget")
    out: list[tuple[int, int]] = []
    if isinstance(budget, dict):
        for r in budget.get("omitted_ranges") or []:
            if isinstance(r, list) and len(r) == 2:
                out.append((int(r[0]), int(r[1])))
    return sorted(out)


class Walker:
    """One interpreter's heap in one core: the census walk, sizes and references."""

    def __init__(self, core: ElfCore, heads: Optional[list[int]] = None) -> None:
        self.core = core
        self.layout = HeapLayout.from_core(core)
        self.rd = ObjectReader(core, self.layout)
        self.model = TypeModel(self.rd)
        self.heads = heads if heads is not None else self.layout.heads
        self.minor = self.layout.minor
        self.omitted = omitted_ranges(core)
        self._omitted_starts = [a for a, _ in self.omitted]
        self.nodes: dict[int, TypeInfo] = {}
        self.count: dict[int, list[int]] = {}  # type index: [count, bytes, unsized]
        self.tracked = self.unreadable = self.omitted_refs = self.lists_cut = 0
        fr = self.layout.frames
        self.iframe: dict[str, int] = dict(fr.get("iframe", {}))
        self.code39: dict[str, int] = dict(fr.get("code", {}))
        self.frame39: dict[str, int] = dict(fr.get("frame", {}))
        self.sizes = self.layout.sizes
        self.cont = self.layout.containers

    def close(self) -> None:
        """Unmap the core."""
        self.rd.close()

    # -- classification of a reference ------------------------------------------------------

    def _failed(self, e: Exception) -> None:
        """An object whose references could not all be read: in memory a cap left out, or
        not in the core at all."""
        if isinstance(e, Unreadable) and e.args and self._omitted_at(int(e.args[0])):
            self.omitted_refs += 1
        else:
            self.unreadable += 1

    def _skip(self, addr: int) -> None:
        if self._omitted_at(addr):
            self.omitted_refs += 1
        else:
            self.unreadable += 1

    # -- sizes ------------------------------------------------------------------------------

    def size_of(self, obj: int, info: TypeInfo, ob_size: int) -> Optional[int]:
        """``sys.getsizeof(obj)``, or None when it cannot be known."""
        if info.fixed:
            return info.fixed
        try:
            n = self._size(obj, info, ob_size)
        except _BAD:
            return None
        if n is None or n < 16 or n > self.rd.dumped:
            return None
        return n

    def _size(self, obj: int, info: TypeInfo, ob_size: int) -> Optional[int]:
        rd, s = self.rd, info.sizer
        if s == T.S_DEFAULT:
            signed = ob_size - (1 << 64) if ob_size >> 63 else ob_size
            if info.item and not 0 <= signed <= MAX_ITEMS:
                return None
            return info.basic + info.item * signed + info.pre
        if s == T.S_INT:
            if self.sizes.get("int_tag"):
                digits = ob_size >> 3
            else:
                digits = (1 << 64) - ob_size if ob_size >> 63 else ob_size
            if self.sizes.get("int_min_digit"):
                digits = max(digits, 1)
            if digits > MAX_ITEMS:
                return None
            return info.param + info.item * digits + info.pre
        if s == T.S_STR:
            return self._size_str(obj, info)
        if s == T.S_BYTEARRAY:
            alloc = rd.u64(obj + 24)
            return info.basic + alloc + (info.param if alloc else 0) + info.pre
        if s == T.S_LIST:
            return info.basic + 8 * rd.u64(obj + 32) + info.pre
        if s == T.S_DICT:
            return rd.dict_bytes(obj, info.basic) + info.pre
        if s == T.S_ODICT:
            od = self.cont["odict"]
            n = rd.dict_bytes(obj, info.basic) + 8 * rd.u64(obj + od["fast_nodes_size"])
            if rd.u64(obj + od["first"]):
                n += od["node"] * rd.u64(obj + 16)
            return n + info.pre
        if s == T.S_SET:
            mask, table = rd.u64(obj + 32), rd.u64(obj + 40)
            return info.basic + (16 * (mask + 1) if table != obj + 64 else 0) + info.pre
        return self._size_more(obj, info, ob_size)

    def _size_more(self, obj: int, info: TypeInfo, ob_size: int) -> Optional[int]:
        rd, s = self.rd, info.sizer
        if s == T.S_CODE:
            return self._size_code(obj, info, ob_size)
        if s == T.S_TYPE:
            if rd.u64(obj + self.model.t["tp_flags"]) & T.HEAPTYPE:
                keys = rd.u64(obj + self.model.t["ht_cached_keys"])
                return self.sizes["heap_type"] + (rd.keys_bytes(keys) if keys else 0) + info.pre
            return self.sizes["static_type"]
        if s == T.S_FRAME:
            if self.minor >= 11:
                code = rd.u64(rd.u64(obj + 24) + self.iframe["code"]) & T.TAG_MASK
                return info.param + 8 * self._slots(code)
            code = rd.u64(obj + self.frame39["code"])
            c = self.code39
            ncells = rd.u64(rd.u64(code + c["cellvars"]) + 16)
            nfrees = rd.u64(rd.u64(code + c["freevars"]) + 16)
            if ncells > MAX_ITEMS or nfrees > MAX_ITEMS:
                return None
            extras = rd.u32(code + c["nlocals"]) + rd.u32(code + c["stacksize"]) + ncells + nfrees
            return info.basic + 8 * (extras - 1) + info.pre
        if s == T.S_GEN:
            code = rd.u64(obj + info.frame_off + self.iframe["code"]) & T.TAG_MASK
            return info.param + 8 * self._slots(code)
        if s == T.S_ARRAY:
            a = self.cont["array"]
            itemsize = rd.u32(rd.u64(obj + a["descr"]) + a["descr_itemsize"])
            return info.basic + rd.u64(obj + a["allocated"]) * itemsize + info.pre
        if s == T.S_DEQUE:
            d = self.cont["deque"]
            if rd.u64(obj + d["leftindex"]) > MAX_ITEMS or ob_size > MAX_ITEMS:
                return None
            blocks = (rd.u64(obj + d["leftindex"]) + ob_size + d["blocklen"]) // d["blocklen"]
            return info.basic + blocks * d["block"] + info.pre
        return None

    def _slots(self, code: int) -> int:
        n = sum(self.rd.u32(code + off) for off in self.layout.frames["code_slots"])
        if n > MAX_ITEMS:
            raise Unreadable
        return n

    def _size_str(self, obj: int, info: TypeInfo) -> int:
        rd, s = self.rd, self.rd.s
        state = rd.u32(obj + s["state"])
        kind, compact, ascii_ = (state >> 2) & 7, state & 32, state & 64
        length = rd.u64(obj + 16)
        if kind not in (1, 2, 4) or length > MAX_ITEMS:
            raise Unreadable
        if compact and ascii_:
            size, data = s["ascii_header"] + length + 1, obj + s["ascii_header"]
        elif compact:
            size, data = s["compact_header"] + (length + 1) * kind, obj + s["compact_header"]
        else:  # a legacy string (str subclasses): the characters in a block of their own
            size, data = s["compact_header"] + 8, rd.u64(obj + s["compact_header"])
            if data:
                size += (length + 1) * kind
        if "wstr" in s:  # up to 3.11: a wchar_t copy unless it shares the characters
            wstr = rd.u64(obj + s["wstr"])
            if wstr and (not state & 128 or wstr != data):
                wlen = length if compact and ascii_ else rd.u64(obj + s["wstr_length"])
                size += (wlen + 1) * 4
        if not (compact and ascii_) and "utf8" in s:
            utf8 = rd.u64(obj + s["utf8"])
            if utf8 and utf8 != data:
                size += rd.u64(obj + s["utf8_length"]) + 1
        return size + info.pre

    def _size_code(self, obj: int, info: TypeInfo, ob_size: int) -> int:
        rd = self.rd
        if self.minor >= 11:
            if ob_size > MAX_ITEMS:
                raise Unreadable
            size = (info.basic + info.item * ob_size + 7) // 8 * 8
            extra = rd.u64(obj + int(self.layout.frames["code_extra"]))
        else:
            c = self.code39
            size = info.basic
            cell2arg, cellvars = rd.u64(obj + c["cell2arg"]), rd.u64(obj + c["cellvars"])
            if cell2arg and cellvars:
                ncells = rd.u64(cellvars + 16)
                if ncells > MAX_ITEMS:
                    raise Unreadable
                size += 8 * ncells
            if rd.u64(obj + c["opcache"]):
                co_code = rd.u64(obj + c["code"])
                size += rd.u64(co_code + 16) // 2
                size += self.sizes["opcache_item"] * rd.raw(obj + c["opcache_size"], 1)[0]
            extra = rd.u64(obj + c["extra"])
        if extra:
            size += 8 + 8 * rd.u64(extra)
        return size + info.pre

    # -- references -------------------------------------------------------------------------

    def referents(self, obj: int, info: TypeInfo, ob_size: int, soft: bool = False) -> list[int]:
        """The references out of ``obj``, in the walkers' one order: fixed fields by offset,
        a type's heap-type fields, the ``__dict__`` (or managed dict and values), then the
        variable part (items; a dict's key and value per entry), then (``soft``) the members
        of extension types. Raises :class:`Unreadable` if any of it is not in the core."""
        rd = self.rd
        out: list[int] = []
        for off in info.refs:
            p = rd.u64(obj + off)
            if p:
                out.append(p)
        if info.walk == T.W_TYPE and info.heap_refs:
            if rd.u64(obj + self.model.t["tp_flags"]) & T.HEAPTYPE:
                for off in info.heap_refs:
                    p = rd.u64(obj + off)
                    if p:
                        out.append(p)
        if info.dictoffset:
            n = ob_size if info.sizer != T.S_INT or not self.sizes.get("int_tag") else 0
            n = (1 << 64) - n if n >> 63 else n
            if n > MAX_ITEMS:
                raise Unreadable
            p = rd.u64(obj + (info.basic + n * info.item + 7) // 8 * 8 + info.dictoffset)
            if p:
                out.append(p)
        if info.managed:
            out.extend(self._managed(obj, info))
        w = info.walk
        if w == T.W_LIST:
            out.extend(rd.words(rd.u64(obj + 24), ob_size))
        elif w == T.W_TUPLE:
            out.extend(rd.words(obj + rd.tuple_items, ob_size))
        elif w == T.W_DICT:
            out.extend(self._dict_refs(obj))
        elif w == T.W_SET:
            mask, table = rd.u64(obj + 32), rd.u64(obj + 40)
            if mask >= MAX_ITEMS:
                raise Unreadable
            tw = rd.words(table, 2 * (mask + 1))
            out.extend(k for k, h in zip(tw[0::2], tw[1::2]) if k and h != 0xFFFFFFFFFFFFFFFF)
        elif w != T.W_NONE and w != T.W_TYPE:
            out.extend(self._frame_refs(obj, info, ob_size))
        if soft:
            out.extend(rd.u64(obj + off) for off in info.soft)
        return [p for p in out if p]

    def _dict_refs(self, d: int) -> list[int]:
        rd = self.rd
        keys, values = struct.unpack("<QQ", rd.raw(d + 32, 16))
        ks, vs = rd.dict_entries(d)
        out: list[int] = []
        if values:  # split: the keys belong to the shared keys object
            out.extend(v for v in vs if v)
            return out
        for k, v in zip(ks, vs):
            if k and v:
                out.append(k)
                out.append(v)
        return out

    def _managed(self, obj: int, info: TypeInfo) -> Sequence[int]:
        rd = self.rd
        if info.managed == T.M_313:
            out = [rd.u64(obj - 24)]
            if info.flags & T.INLINE_VALUES:
                hdr = rd.raw(obj + info.basic, 4)
                if hdr[3]:  # valid
                    out.extend(rd.words(obj + info.basic + 8, hdr[1]))
            return out
        if info.managed == T.M_312:
            dorv = rd.u64(obj - 24)
            if not dorv & 1:
                return [dorv]
            values = dorv + 1  # stored as the address minus one
        else:
            values, dict_ptr = rd.u64(obj - 32), rd.u64(obj - 24)
            if dict_ptr or not values:
                return [dict_ptr]
        if not values or not info.cached_keys:
            return []
        n = rd.keys(info.cached_keys, True)[2]
        return rd.words(values, n)

    def _frame_refs(self, obj: int, info: TypeInfo, ob_size: int) -> list[int]:
        rd, w = self.rd, info.walk
        if w == T.W_DEQUE:
            d = self.cont["deque"]
            if ob_size > MAX_ITEMS:
                raise Unreadable
            out, block, i = [], rd.u64(obj + d["leftblock"]), rd.u64(obj + d["leftindex"])
            for _ in range(ob_size):
                if i == d["blocklen"]:
                    block, i = rd.u64(block + 8 + 8 * d["blocklen"]), 0
                out.append(rd.u64(block + 8 + 8 * i))
                i += 1
            return out
        if w == T.W_FRAME39:
            c, f = self.code39, self.frame39
            code = rd.u64(obj + f["code"])
            nfast = (
                rd.u32(code + c["nlocals"])
                + rd.u64(rd.u64(code + c["cellvars"]) + 16)
                + rd.u64(rd.u64(code + c["freevars"]) + 16)
            )
            base = obj + int(self.layout.frames["frame_localsplus"])
            out = list(rd.words(base, nfast))
            stack = rd.u64(obj + f["valuestack"])
            if "stacktop" in f:
                top = rd.u64(obj + f["stacktop"])
                depth = (top - stack) // 8 if top else 0
            else:  # -1 while the frame runs: its stack is not in the frame then
                depth = max(struct.unpack("<i", rd.raw(obj + f["stackdepth"], 4))[0], 0)
            if not 0 <= depth <= rd.u32(code + c["stacksize"]):
                raise Unreadable
            out.extend(rd.words(stack, depth))
            return out
        if w == T.W_FRAME:
            iframe = rd.u64(obj + 24)
            if iframe != obj + int(self.layout.frames["frame_data"]):
                return []  # the frame belongs to a thread or a generator
            return self.iframe_refs(iframe)
        # W_GEN: the inline frame, unless the generator has finished
        fr = self.layout.frames
        if rd.raw(obj + int(fr["frame_state"]), 1)[0] in range(fr.get("frame_cleared", 4), 128):
            return []
        return self.iframe_refs(obj + info.frame_off)

    def iframe_refs(self, iframe: int) -> list[int]:
        """3.11+: what an interpreter frame holds: its frame object, locals dict, function,
        code, then its local variables, cells and value stack (to the stack top)."""
        rd, f = self.rd, self.iframe
        out = [rd.u64(iframe + f["frame_obj"]), rd.u64(iframe + f["locals"])]
        code = rd.u64(iframe + f["code"]) & T.TAG_MASK
        out.append(rd.u64(iframe + f["func"]) & T.TAG_MASK)
        out.append(code)
        base = iframe + f["localsplus"]
        if "stackpointer" in f:
            top = rd.u64(iframe + f["stackpointer"])
            n = (top - base) // 8 if top >= base else -1
        else:
            n = struct.unpack("<i", rd.raw(iframe + f["stacktop"], 4))[0]
        if not 0 <= n <= self._slots(code):
            raise Unreadable
        out.extend(p & T.TAG_MASK for p in rd.words(base, n))
        return out

    # -- the census walk --------------------------------------------------------------------

    def header(self, obj: int) -> tuple[int, int, int]:
        """(reference count, type address, ob_size) of the object at ``obj``."""
        fo = self.rd.offset(obj, 24)
        rc, tp, size = struct.unpack_from("<QQQ", self.rd.mm, fo)
        return rc, tp, size

    def _visit(self, obj: int, info: TypeInfo, ob_size: int, stack: list[int]) -> None:
        self.nodes[obj] = info
        c = self.count.get(info.index)
        if c is None:
            c = self.count[info.index] = [0, 0, 0]
        c[0] += 1
        n = self.size_of(obj, info, ob_size)
        if n is None:
            c[2] += 1
        else:
            c[1] += n
            if self._top is not None:
                self._keep_top(obj, n)
        if not info.leaf:
            stack.append(obj)

    def _keep_top(self, obj: int, n: int) -> None:
        top, want = self._top, self._top_n
        assert top is not None
        if len(top) < want:
            heapq.heappush(top, (n, -obj))
        elif (n, -obj) > top[0]:
            heapq.heapreplace(top, (n, -obj))

    def walk(self, largest: int = 0, roots: Sequence[int] = ()) -> None:
        """Find, count and size every object (see the module's description). When a list
        ran into memory a ``max_size`` cap left out, the objects in the gap are found from
        ``roots`` too (and tracked objects met through references are then counted where
        they are met: their lists cannot be walked whole)."""
        self._top: Optional[list[tuple[int, int]]] = [] if largest > 0 else None
        self._top_n = largest
        rd = self.rd
        max_steps = rd.dumped // 16 + 1
        self._budget = rd.dumped // 8 + 1
        stack: list[int] = []
        self._cut = False
        for head in self.heads:
            self._walk_list(head, max_steps, stack)
        if self.lists_cut:
            self._cut = True
            for r in roots:
                self._reach(r, stack)
                self._drain(stack)

    def _omitted_at(self, addr: int) -> bool:
        i = bisect_right(self._omitted_starts, addr) - 1
        return i >= 0 and addr < self.omitted[i][1]

    def _walk_list(self, head: int, max_steps: int, stack: list[int]) -> None:
        """One GC list from its head. A list that runs into memory a ``max_size`` cap left
        out is walked again backwards from its head, to the other side of the gap."""
        rd = self.rd
        try:
            node = rd.u64(head) & ~7
        except Unreadable:
            raise CoreFormatError(
                f"{self.core.path}: the GC list head {head:#x} is not in the core"
            ) from None
        steps, link = 0, 0  # link: 0 follows _gc_next, 8 _gc_prev
        while node != head:
            steps += 1
            if steps > max_steps:
                raise CoreFormatError(f"{self.core.path}: a GC list does not return to its head")
            try:
                nxt = rd.u64(node + link)
                _, tp, ob_size = self.header(node + 16)
            except Unreadable:
                if self._omitted_at(node) and link == 0:
                    self.lists_cut += 1
                    node, link = rd.u64(head + 8) & ~7, 8
                    continue
                if self._omitted_at(node):
                    break
                raise CoreFormatError(
                    f"{self.core.path}: a GC list runs to {node:#x}, outside the core "
                    "(damaged, or taken while a collection was moving objects)"
                ) from None
            obj, node = node + 16, nxt & ~7
            info = self.model.resolve(tp)
            if info is None or obj in self.nodes:
                self.unreadable += 1
                continue
            self.tracked += 1
            self._visit(obj, info, ob_size, stack)
            self._drain(stack)

    def _drain(self, stack: list[int]) -> None:
        nodes = self.nodes
        while stack:
            o = stack.pop()
            oi = nodes[o]
            try:
                kids = self.referents(o, oi, self.header(o)[2], soft=True)
            except _BAD as e:
                self._failed(e)
                continue
            self._budget -= len(kids)
            if self._budget < 0:
                raise CoreFormatError(
                    f"{self.core.path}: the heap holds more references than its memory has "
                    "room for (damaged core)"
                )
            for c in kids:
                if c not in nodes:
                    self._reach(c, stack)

    def _reach(self, c: int, stack: list[int]) -> None:
        """An object met through a reference (or a root, after a cut list)."""
        if c in self.nodes:
            return
        if c & 7:  # objects are 8-byte aligned: a damaged reference
            self.unreadable += 1
            return
        if not self.rd.readable(c, 24):
            self._skip(c)
            return
        _, ctp, csz = self.header(c)
        ci = self.model.resolve(ctp)
        if ci is None:
            self.unreadable += 1
            return
        if ci.gc and not self._cut and self._tracked(c):
            return  # on a GC list: counted there
        self._visit(c, ci, csz, stack)

    def _tracked(self, obj: int) -> bool:
        try:
            return self.rd.u64(obj - 16) != 0
        except Unreadable:
            return False

    # -- results ----------------------------------------------------------------------------

    def largest(self) -> list[tuple[int, int]]:
        """(address, bytes) of the biggest objects, biggest first (ties: lower address)."""
        top = self._top or []
        return [(-a, n) for n, a in sorted(top, key=lambda x: (-x[0], -x[1]))]

    def by_offset(self) -> Iterator[int]:
        """Every object found, in the order of its place in the core file."""
        off = self.rd.offset
        return iter(sorted(self.nodes, key=lambda a: off(a, 16)))
