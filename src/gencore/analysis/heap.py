"""Heap census from a core alone: which types hold the memory (``gencore heap``).

The walk needs no interpreter attached and no debug symbols. The GENCORE note records where
the garbage collector's lists start and the object and type offsets, found and checked inside
the process (:mod:`gencore.capture.heaplayout`). Offline, this module:

1. walks every GC list (all generations and the permanent one), which yields each tracked
   object exactly once;
2. follows references out of the containers it knows (lists, tuples, dicts, including split and
   inline attribute values, sets, instances' ``__dict__``, functions' code) to find the objects
   the collector does not track (``str``, ``int``, ``float``, ``bytes``, atomic tuples and
   dicts), each counted once;
3. sizes every object the way ``sys.getsizeof`` does, from its type and header fields.

Memory is read from an ``mmap`` of the core; every pointer is checked against the core's
segments first. A damaged GC list raises :class:`~gencore.CoreFormatError`; a stray reference
is counted in :attr:`Census.unreadable` and skipped.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import CoreFormatError, HeapUnavailableError
from .memory import BLOCK as _BLOCK
from .memory import MAX_ITEMS as _MAX_ITEMS
from .memory import CoreMemory
from .memory import Unreadable as _Unreadable
from .memory import unpack_q as _unpack_q

if TYPE_CHECKING:
    from .reader import ElfCore as CoreFile

__all__ = [
    "Census",
    "HeapObject",
    "HeapUnavailableError",
    "Referrers",
    "TypeDiff",
    "TypeStat",
    "census",
    "referrers",
]


@dataclass(frozen=True)
class TypeStat:
    """Objects of one type: how many, and their bytes as ``sys.getsizeof`` counts them."""

    type: str
    count: int
    bytes: int


@dataclass(frozen=True)
class TypeDiff:
    """One type's change between an older census and a newer one."""

    type: str
    count: int
    bytes: int
    old_count: int
    old_bytes: int

    @property
    def status(self) -> str:
        """``new`` (absent before), ``vanished`` (absent now) or ``changed``."""
        if self.old_count == 0:
            return "new"
        if self.count + self.old_count == 0:
            return "vanished"
        return "changed"


@dataclass(frozen=True)
class HeapObject:
    """One object: its address, type, size and (when asked for) a short value."""

    address: int
    type: str
    bytes: int
    value: Optional[str] = None


@dataclass(frozen=True)
class Referrers:
    """Which types hold references to objects of ``type``, with the number of references."""

    type: str
    referrers: list[tuple[str, int]]
    targets: int

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``gencore heap --referrers``."""
        return {
            "type": self.type,
            "objects": self.targets,
            "referrers": [{"type": t, "count": c} for t, c in self.referrers],
        }


@dataclass
class Census:
    """Count and bytes per type of every object found in the core's heap.

    Iterating yields ``(type, count, bytes)``, largest bytes first.
    """

    python: str
    objects: int
    bytes: int
    anon_bytes: int
    types: list[TypeStat]
    tracked: int = 0
    unreadable: int = 0
    largest: list[HeapObject] = field(default_factory=list)
    core: Optional[CoreFile] = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return ((t.type, t.count, t.bytes) for t in self.types)

    def __len__(self) -> int:
        return len(self.types)

    def get(self, type_name: str) -> Optional[TypeStat]:
        """The entry for ``type_name`` (``dict``, ``__main__.Order``), if present."""
        return next((t for t in self.types if t.type == type_name), None)

    def to_json(self, top: Optional[int] = None) -> dict[str, Any]:
        """The documented JSON shape of ``gencore heap --json``."""
        doc: dict[str, Any] = {
            "python": self.python,
            "objects": self.objects,
            "bytes": self.bytes,
            "anon_bytes": self.anon_bytes,
            "tracked": self.tracked,
            "unreadable": self.unreadable,
            "types": [
                {"type": t.type, "count": t.count, "bytes": t.bytes} for t in self.types[:top]
            ],
        }
        if self.largest:
            doc["largest"] = [
                {"address": o.address, "type": o.type, "bytes": o.bytes}
                | ({"value": o.value} if o.value is not None else {})
                for o in self.largest
            ]
        return doc

    def since(self, old: Census) -> list[TypeDiff]:
        """What changed since ``old`` (an earlier core of the same process), largest growth
        in bytes first; types that appeared or vanished are included."""
        before = {t.type: t for t in old.types}
        now = {t.type: t for t in self.types}
        out = []
        for name in before.keys() | now.keys():
            b, n = before.get(name), now.get(name)
            bc, bb = (b.count, b.bytes) if b else (0, 0)
            nc, nb = (n.count, n.bytes) if n else (0, 0)
            if (bc, bb) != (nc, nb):
                out.append(TypeDiff(name, nc - bc, nb - bb, bc, bb))
        out.sort(key=lambda d: (-d.bytes, -d.count, d.type))
        return out

    def referrers(self, type_name: str) -> Referrers:
        """Which types refer to objects of ``type_name`` (walks the heap again)."""
        if self.core is None:
            raise ValueError("this census is not attached to an open core")
        return referrers(self.core, type_name)


# Object kinds the walker treats specially.
_OTHER, _LIST, _TUPLE, _DICT, _SET, _STR, _INT, _BYTES, _BYTEARRAY, _FLOAT, _FUNC = range(11)
_INLINE_VALUES, _MANAGED_WEAKREF, _MANAGED_DICT = 1 << 2, 1 << 3, 1 << 4
_HEAPTYPE, _HAVE_GC = 1 << 9, 1 << 14


def _no_size(obj: int, info: _TypeInfo, ob_size: int) -> int:
    raise _Unreadable


def _no_kids(obj: int, info: _TypeInfo, ob_size: int) -> list[Sequence[int]]:
    return []


class _TypeInfo:
    __slots__ = (
        "addr",
        "name",
        "kind",
        "basic",
        "item",
        "flags",
        "gc",
        "pre",
        "dictoffset",
        "cached_keys",
        "fixed",
        "follow",
        "count",
        "nbytes",
        "managed",
        "sizer",
        "kids",
        "slots",
    )

    def __init__(self, addr: int, name: str, kind: int, basic: int, item: int, flags: int) -> None:
        self.addr, self.name, self.kind = addr, name, kind
        self.basic, self.item, self.flags = basic, item, flags
        self.gc = bool(flags & _HAVE_GC)
        self.pre = 0
        self.dictoffset = 0
        self.cached_keys = 0
        self.fixed = 0  # the size of every instance, when it does not depend on the object
        self.follow = False  # whether the walker reads references out of instances
        self.count = 0
        self.nbytes = 0
        self.managed = False  # attributes in a managed dict or values array (3.11+)
        self.sizer: Callable[[int, _TypeInfo, int], int] = _no_size
        self.kids: Callable[[int, _TypeInfo, int], list[Sequence[int]]] = _no_kids
        self.slots: list[tuple[int, int]] = []  # __slots__ values: (offset, count) per class


class _Walker(CoreMemory):
    """One pass over the heap of one core."""

    def __init__(self, core: CoreFile) -> None:
        meta = core.metadata.get("heap")
        if not isinstance(meta, dict) or "gc_heads" not in meta:
            why = (meta or {}).get("unsupported") or (meta or {}).get("error")
            if why:
                raise HeapUnavailableError(
                    f"{core.path}: the process could not describe its heap ({why})"
                )
            raise HeapUnavailableError(
                f"{core.path} has no heap layout in its GENCORE note: cores written by the "
                "kernel (method='kernel') or by gencore before heap support cannot be "
                "censused; take one with this gencore (create_core, the signal trigger, "
                "gencore run)"
            )
        try:
            self.hexversion = int(core.metadata["python"]["hexversion"])
            self.heads = [int(h) for h in meta["gc_heads"]]
            self.t = {k: int(v) for k, v in meta["type"].items()}
            self.s = {k: int(v) for k, v in meta["str"].items()}
            self.builtins = {k: int(v) for k, v in meta["builtins"].items()}
            self.func_code = int(meta.get("func_code", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise CoreFormatError(
                f"{core.path}: malformed heap layout in GENCORE note: {e}"
            ) from None
        self.python = str(core.metadata.get("python", {}).get("version", "?"))
        self.core = core
        super().__init__(core)
        self.types: dict[int, Optional[_TypeInfo]] = {}
        v = self.hexversion >> 16
        self.v = (v >> 8, v & 0xFF)
        self.by_addr = {a: k for k, a in self.builtins.items()}
        self._kinds = {
            "list": _LIST,
            "tuple": _TUPLE,
            "dict": _DICT,
            "set": _SET,
            "frozenset": _SET,
            "str": _STR,
            "int": _INT,
            "bytes": _BYTES,
            "bytearray": _BYTEARRAY,
            "float": _FLOAT,
            "function": _FUNC,
        }
        self.tuple_items = 24
        self.unreadable = 0
        self.shared_entries: dict[int, int] = {}
        self.shared_keys: dict[int, tuple[int, int, int, int]] = {}
        self.type_type = self.builtins.get("type", 0)
        # tuple items follow the header, whose size changed in 3.14 (the cached hash)
        tuple_type = self.type_info(self.builtins.get("tuple", 0))
        if tuple_type is not None:
            self.tuple_items = tuple_type.basic

    # -- types ------------------------------------------------------------------------------

    def type_info(self, addr: int) -> Optional[_TypeInfo]:
        """What the walker knows of the type object at ``addr`` (None: not a type)."""
        try:
            return self.types[addr]
        except KeyError:
            pass
        info = None
        try:
            info = self._load_type(addr)
        except (_Unreadable, UnicodeDecodeError, struct.error):
            info = None
        self.types[addr] = info
        return info

    def _load_type(self, addr: int) -> Optional[_TypeInfo]:
        t = self.t
        meta = self.u64(addr + 8)  # a type's type is type, or a metaclass whose type is type
        if meta != self.type_type and self.u64(meta + 8) != self.type_type:
            return None
        flags = self.u64(addr + t["tp_flags"])
        basic = self.u64(addr + t["tp_basicsize"])
        item = self.u64(addr + t["tp_itemsize"])
        if basic > 1 << 24 or item > 1 << 16:
            return None
        name = self.c_string(self.u64(addr + t["tp_name"]))
        if flags & _HEAPTYPE:
            try:
                qual = self.str_value(self.u64(addr + t["ht_qualname"])) or name
                module = self.dict_get_str(self.u64(addr + t["tp_dict"]), "__module__")
            except (_Unreadable, struct.error, UnicodeDecodeError):
                qual, module = name, None
            name = f"{module}.{qual}" if module and module != "builtins" else qual
        kind, base, hops = _OTHER, addr, 0
        while base and hops < 64:
            k = self.by_addr.get(base)
            if k in self._kinds:
                kind = self._kinds[k]
                break
            base = self.u64(base + t["tp_base"])
            hops += 1
        info = _TypeInfo(addr, name, kind, basic, item, flags)
        pre = 16 if info.gc else 0
        if self.v >= (3, 11) and flags & (
            _MANAGED_DICT | (_MANAGED_WEAKREF if self.v >= (3, 12) else 0)
        ):
            pre += 16
        info.pre = pre
        info.dictoffset = struct.unpack("<q", self.raw(addr + t["tp_dictoffset"], 8))[0]
        if flags & _HEAPTYPE:
            info.cached_keys = self.u64(addr + t["ht_cached_keys"])
        info.managed = bool(self.v >= (3, 11) and flags & _MANAGED_DICT)
        if flags & _HEAPTYPE:
            info.slots = self._slot_regions(addr)
        info.follow = bool(
            info.slots
            or kind in (_LIST, _TUPLE, _DICT, _SET, _FUNC)
            or info.dictoffset > 0
            or (self.v >= (3, 11) and flags & _MANAGED_DICT)
        )
        if kind in (_OTHER, _FLOAT, _FUNC) and not item:
            info.fixed = basic + pre
        info.sizer = self._size_int if kind == _INT and self.v >= (3, 12) else self.size_of
        plain = info.dictoffset <= 0 and not info.managed and not info.slots
        if kind == _LIST and plain:
            info.kids = self._kids_list
        elif kind == _OTHER and info.managed and info.dictoffset <= 0 and not info.slots:
            info.kids = self._kids_managed
        else:
            info.kids = self.children
        return info

    def _slot_regions(self, addr: int) -> list[tuple[int, int]]:
        """Where a class statement's ``__slots__`` keep their values: right after the base
        class's fields, one pointer per name in ``ht_slots`` (which leaves out ``__dict__``
        and ``__weakref__``), for this class and each slotted class it derives from. Types made
        by C extensions have no ``ht_slots``: their fields are not read as references."""
        t = self.t
        if t["ht_qualname"] - t["ht_name"] != 16:  # ht_name, ht_slots, ht_qualname
            return []
        out: list[tuple[int, int]] = []
        tb, hops = addr, 0
        while tb and hops < 64 and self.u64(tb + t["tp_flags"]) & _HEAPTYPE:
            names = self.u64(tb + t["ht_name"] + 8)
            base = self.u64(tb + t["tp_base"])
            if names and base:
                n = self.u64(names + 16)
                if 0 < n <= 4096:
                    out.append((self.u64(base + t["tp_basicsize"]), n))
            tb, hops = base, hops + 1
        return out

    # -- values -----------------------------------------------------------------------------

    def str_value(self, addr: int, limit: int = 1 << 16) -> Optional[str]:
        """A str object's text (compact strings; None otherwise)."""
        if not addr:
            return None
        length = self.u64(addr + 16)
        state = self.u64(addr + self.s["state"]) & 0xFFFFFFFF
        kind, compact, ascii_ = (state >> 2) & 7, state & 32, state & 64
        if not compact or kind not in (1, 2, 4) or length > limit:
            return None
        if ascii_:
            return self.raw(addr + self.s["ascii_header"], length).decode("ascii", "replace")
        data = self.raw(addr + self.s["compact_header"], length * kind)
        enc = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        return data.decode(enc, "replace")

    def dict_get_str(self, d: int, key: str) -> Optional[str]:
        if not d:
            return None
        keys, values = self.dict_entries(d)
        for k, v in zip(list(keys), list(values)):
            if k and v and self.str_value(k, 256) == key:
                return self.str_value(v, 4096)
        return None

    # -- dicts ------------------------------------------------------------------------------

    def _keys_table(self, keys: int) -> tuple[int, int, int, int]:
        """(entries address, entry size, number of entries, bytes of the keys object)."""
        if self.v >= (3, 11):
            hdr = self.raw(keys, 32)
            log2_size, log2_index, kind = hdr[8], hdr[9], hdr[10]
            usable_total = ((1 << log2_size) << 1) // 3
            (nentries,) = struct.unpack_from("<q", hdr, 24)
            esize = 24 if kind == 0 else 16
            entries = keys + 32 + (1 << log2_index)
            nbytes = 32 + (1 << log2_index) + usable_total * esize
        else:
            size, _, _, nentries = struct.unpack("<qqqq", self.raw(keys + 8, 32))
            if not 0 < size <= _MAX_ITEMS:
                raise _Unreadable
            ib = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
            esize = 24
            entries = keys + 40 + size * ib
            nbytes = 40 + size * ib + 24 * ((size << 1) // 3)
        if not 0 <= nentries <= _MAX_ITEMS:
            raise _Unreadable
        return entries, esize, nentries, nbytes

    def _keys(self, keys: int, shared: bool) -> tuple[int, int, int, int]:
        """:meth:`_keys_table`, remembered for the shared keys of split tables."""
        if not shared:
            return self._keys_table(keys)
        t = self.shared_keys.get(keys)
        if t is None:
            t = self.shared_keys[keys] = self._keys_table(keys)
        return t

    def dict_entries(self, d: int) -> tuple[Sequence[int], Sequence[int]]:
        """Key and value pointers of a dict (split tables read from their values array)."""
        keys, values = struct.unpack("<QQ", self.raw(d + 32, 16))
        entries, esize, n, _ = self._keys(keys, bool(values))
        w = self.words(entries, n * esize // 8)
        step = esize // 8
        ks: Sequence[int] = w[step - 2 :: step]
        if values:
            if self.v >= (3, 13):
                n = min(n, self.raw(values, 2)[1])
                vs: Sequence[int] = self.words(values + 8, n)
            else:
                vs = self.words(values, n)
            ks = ks[: len(vs)]
        else:
            vs = w[step - 1 :: step]
        return ks, vs

    def dict_size(self, d: int, info: _TypeInfo) -> int:
        keys, values = struct.unpack("<QQ", self.raw(d + 32, 16))
        size = info.basic
        _, _, n, nbytes = self._keys(keys, bool(values))
        if self.u64(keys) == 1:
            size += nbytes
        if values:
            size += 8 * n
        return size

    # -- the walk ---------------------------------------------------------------------------

    def children(self, obj: int, info: _TypeInfo, ob_size: int) -> list[Sequence[int]]:
        """The references out of an object, as sequences of addresses (views of the core's
        memory where they are stored contiguously: a list of a million items costs nothing)."""
        kind = info.kind
        if kind == _LIST:
            return [self.words(self.u64(obj + 24), ob_size)]
        out: list[Sequence[int]] = []
        if kind == _TUPLE:
            out.append(self.words(obj + self.tuple_items, ob_size))
        elif kind == _DICT:
            out.extend(self.dict_entries(obj))
        elif kind == _SET:
            mask, table = struct.unpack("<qQ", self.raw(obj + 32, 16))
            if not 0 <= mask < _MAX_ITEMS:
                raise _Unreadable
            w = self.words(table, 2 * (mask + 1))
            out.append([k for k, h in zip(w[0::2], w[1::2]) if k and h != 0xFFFFFFFFFFFFFFFF])
        elif kind == _FUNC and self.func_code:
            out.append([self.u64(obj + self.func_code)])
        if info.dictoffset > 0:
            out.append([self.u64(obj + info.dictoffset)])
        if info.managed:
            out.append(self._managed_values(obj, info))
        for off, n in info.slots:
            out.append(self.words(obj + off, n))
        return out

    def _managed_values(self, obj: int, info: _TypeInfo) -> Sequence[int]:
        if self.v >= (3, 13):
            out = [self.u64(obj - 24)]
            if info.flags & _INLINE_VALUES:
                hdr = self.raw(obj + info.basic, 4)
                if hdr[3]:  # valid
                    out.extend(self.words(obj + info.basic + 8, hdr[1]))
            return out
        if self.v >= (3, 12):
            dorv = _unpack_q(self.mm, self.offset(obj - 24, 8))[0]
            if not dorv & 1:
                return [dorv]
            values = dorv + 1  # stored as the address minus one
        else:
            values = self.u64(obj - 32)
            dict_ptr = self.u64(obj - 24)
            if dict_ptr or not values:
                return [dict_ptr]
        if not values or not info.cached_keys:
            return []
        n = self.shared_entries.get(info.cached_keys)
        if n is None:
            n = self.shared_entries[info.cached_keys] = self._keys_table(info.cached_keys)[2]
        if not n:
            return []
        fo = self.offset(values, 8 * n)
        return memoryview(self.mm)[fo : fo + 8 * n].cast("Q")

    def _size_int(self, obj: int, info: _TypeInfo, ob_size: int) -> int:
        """3.12+ ints: the digit count is the tag word's high bits."""
        return info.basic + max(ob_size >> 3, 1) * info.item + info.pre

    def _kids_list(self, obj: int, info: _TypeInfo, ob_size: int) -> list[Sequence[int]]:
        return [self.words(self.u64(obj + 24), ob_size)]

    def _kids_managed(self, obj: int, info: _TypeInfo, ob_size: int) -> list[Sequence[int]]:
        return [self._managed_values(obj, info)]

    def size_of(self, obj: int, info: _TypeInfo, ob_size: int) -> int:
        kind = info.kind
        if kind == _LIST:
            size = info.basic + 8 * self.u64(obj + 32)
        elif kind == _DICT:
            size = self.dict_size(obj, info)
        elif kind == _STR:
            length = ob_size
            state = self.u64(obj + self.s["state"]) & 0xFFFFFFFF
            ckind = (state >> 2) & 7 or 1
            if state & 64:
                size = self.s["ascii_header"] + length + 1
            else:
                size = self.s["compact_header"] + (length + 1) * ckind
        elif kind == _INT and self.v >= (3, 12):
            size = info.basic + max(ob_size >> 3, 1) * info.item
        elif kind == _SET:
            mask, table = struct.unpack("<qQ", self.raw(obj + 32, 16))
            size = info.basic + (16 * (mask + 1) if table != obj + 64 else 0)
        elif kind == _BYTEARRAY:
            size = info.basic + self.u64(obj + 24)
        elif info.item:
            size = info.basic + info.item * abs(struct.unpack("<q", struct.pack("<Q", ob_size))[0])
        else:
            size = info.basic
        return size + info.pre  # like sys.getsizeof: 3.13+ inline values are left out

    def walk(
        self,
        visit: Optional[Callable[[int, _TypeInfo, int], None]] = None,
        edge: Optional[Callable[[_TypeInfo, int], None]] = None,
    ) -> int:
        """Visit every object once, adding it to its type's ``count`` and ``nbytes`` (and
        calling ``visit(address, type, bytes)`` if given). ``edge(holder, child_type)`` sees
        every reference out of the containers followed. Returns the GC-tracked objects.

        The work is bounded by the core's size: a GC list longer than the dumped memory could
        hold, or more references than it has pointer slots, is a damaged core.
        """
        mm = self.mm
        unpack5 = struct.Struct("<QQQQQ").unpack_from
        type_info = self.type_info
        known = self.types
        # one mark per 16 bytes of the file: objects are at least 16 bytes long, so two never
        # share a mark (6.25% of the core's size, against ~50 bytes per object for a set)
        seen = bytearray(self.size // 16 + 1)
        stack: list[tuple[int, _TypeInfo, int]] = []
        tracked = 0
        max_steps = self.dumped // 16 + 1
        budget = self.dumped // 8 + 1
        bad = (_Unreadable, struct.error, IndexError, ValueError)
        blocks, offset = self.blocks, self.offset
        for head in self.heads:
            try:
                node = self.u64(head) & ~7
            except _Unreadable:
                raise CoreFormatError(
                    f"{self.core.path}: the GC list head {head:#x} is not in the core"
                ) from None
            steps = 0
            while node != head:
                steps += 1
                d = blocks.get(node >> _BLOCK)
                if d is not None and (node + 39) >> _BLOCK == node >> _BLOCK:
                    fo = node + d
                else:
                    try:
                        fo = offset(node, 40)
                    except _Unreadable:
                        raise CoreFormatError(
                            f"{self.core.path}: a GC list runs to {node:#x}, outside the core "
                            "(damaged, or taken while a collection was moving objects)"
                        ) from None
                if steps > max_steps:
                    raise CoreFormatError(
                        f"{self.core.path}: a GC list does not return to its head"
                    )
                obj = node + 16
                nxt, _, _, tp, ob_size = unpack5(mm, fo)
                node = nxt & ~7
                try:
                    info = known[tp]
                except KeyError:
                    info = type_info(tp)
                if info is None:
                    self.unreadable += 1
                    continue
                tracked += 1
                # Counting is written out here and for referenced objects below rather than
                # shared in a function: this loop runs once per object, and a call per object
                # costs a tenth of the census.
                try:
                    nbytes = info.fixed or info.sizer(obj, info, ob_size)
                except bad:
                    self.unreadable += 1
                    continue
                info.count += 1
                info.nbytes += nbytes
                if visit is not None:
                    visit(obj, info, nbytes)
                if not info.follow:
                    continue
                # Follow references out of this object now, while its pages are warm.
                stack.append((obj, info, ob_size))
                while stack:
                    o, oi, osz = stack.pop()
                    try:
                        kids = oi.kids(o, oi, osz)
                    except bad:
                        self.unreadable += 1
                        continue
                    for part in kids:
                        budget -= len(part)
                        if budget < 0:
                            raise CoreFormatError(
                                f"{self.core.path}: the heap holds more references than its "
                                "memory has room for (damaged core)"
                            )
                        for c in part:
                            if not c:
                                continue
                            d = blocks.get((c - 16) >> _BLOCK)
                            if d is not None and (c + 23) >> _BLOCK == (c - 16) >> _BLOCK:
                                fo = c - 16 + d
                            else:
                                try:
                                    fo = offset(c - 16, 40)
                                except _Unreadable:
                                    self.unreadable += 1
                                    continue
                            mark = (fo + 16) >> 4
                            if seen[mark]:
                                continue
                            cnext, _, _, ctp, csz = unpack5(mm, fo)
                            try:
                                ci = known[ctp]
                            except KeyError:
                                ci = type_info(ctp)
                            if ci is None:
                                self.unreadable += 1
                                continue
                            if edge is not None:
                                edge(oi, ctp)
                            if ci.gc and cnext:
                                continue  # tracked: the GC walk counts it
                            seen[mark] = 1
                            try:
                                nbytes = ci.fixed or ci.sizer(c, ci, csz)
                            except bad:
                                self.unreadable += 1
                                continue
                            ci.count += 1
                            ci.nbytes += nbytes
                            if visit is not None:
                                visit(c, ci, nbytes)
                            if ci.follow:
                                stack.append((c, ci, csz))
        return tracked

    def counts(self) -> dict[str, tuple[int, int]]:
        """Objects and bytes per type name after :meth:`walk`."""
        out: dict[str, tuple[int, int]] = {}
        for info in self.types.values():
            if info is not None and info.count:
                c, b = out.get(info.name, (0, 0))
                out[info.name] = (c + info.count, b + info.nbytes)
        return out

    def value_of(self, obj: int, info: _TypeInfo) -> Optional[str]:
        """A short text for values of simple types (``--show-values``); ``<redacted>`` for
        the text a redacted core's snapshot child scrubbed."""
        redacted = self.core.metadata.get("redact") == "values"
        try:
            if info.kind == _STR:
                s = self.str_value(obj, 1 << 20)
                if s and redacted and not s.strip("\0"):
                    return "<redacted>"
                return None if s is None else repr(s[:80])
            if info.kind == _BYTES:
                n = self.u64(obj + 16)
                b = self.raw(obj + self.builtin_basic("bytes") - 1, min(n, 60))
                return "<redacted>" if b and redacted and not b.strip(b"\0") else repr(b)
            if info.kind == _FLOAT:
                return repr(struct.unpack("<d", self.raw(obj + 16, 8))[0])
        except (_Unreadable, KeyError):
            return None
        return None

    def builtin_basic(self, name: str) -> int:
        info = self.type_info(self.builtins[name])
        if info is None:
            raise KeyError(name)
        return info.basic


def _anon_bytes(core: CoreFile) -> int:
    return sum(m.filesz for m in core.mappings if not m.path)


def _walker(core: CoreFile) -> _Walker:
    return _Walker(core)


def census(core: CoreFile, largest: int = 0, show_values: bool = False) -> Census:
    """Count and size every object in ``core``'s heap, by type.

    ``largest`` also keeps the N biggest single objects; ``show_values`` adds a short value
    (for ``str``, ``bytes`` and ``float``) to them: off by default, a core's values may be
    private.

    Raises:
        HeapUnavailableError: the core has no heap layout (kernel cores, old versions,
            free-threaded or debug interpreters).
        CoreFormatError: the core's GC lists are damaged.
    """
    w = _walker(core)
    top: list[tuple[int, int, str, _TypeInfo]] = []

    def visit(obj: int, info: _TypeInfo, nbytes: int) -> None:
        if len(top) < largest:
            heapq.heappush(top, (nbytes, obj, info.name, info))
        elif nbytes > top[0][0]:
            heapq.heapreplace(top, (nbytes, obj, info.name, info))

    try:
        tracked = w.walk(visit if largest > 0 else None)
        big = [
            HeapObject(a, n, b, w.value_of(a, i) if show_values else None)
            for b, a, n, i in sorted(top, key=lambda x: (-x[0], x[1]))
        ]
    finally:
        w.close()
    counts = w.counts()
    types = sorted(
        (TypeStat(n, c, b) for n, (c, b) in counts.items()), key=lambda t: (-t.bytes, t.type)
    )
    return Census(
        python=w.python,
        objects=sum(t.count for t in types),
        bytes=sum(t.bytes for t in types),
        anon_bytes=_anon_bytes(core),
        types=types,
        tracked=tracked,
        unreadable=w.unreadable,
        largest=big,
        core=core,
    )


def referrers(core: CoreFile, type_name: str) -> Referrers:
    """Which types hold references to objects of ``type_name``, with counts.

    Counted from the references the census follows (container items, dict keys and values,
    instance attributes); the edges are built on demand, one walk.
    """
    w = _walker(core)
    holders: dict[str, int] = {}
    wanted: dict[int, bool] = {}

    def is_target(tp: int) -> bool:
        r = wanted.get(tp)
        if r is None:
            info = w.type_info(tp)
            r = wanted[tp] = info is not None and info.name == type_name
        return r

    def edge(holder: _TypeInfo, child_type: int) -> None:
        if is_target(child_type):
            holders[holder.name] = holders.get(holder.name, 0) + 1

    try:
        w.walk(edge=edge)
    finally:
        w.close()
    targets = w.counts().get(type_name, (0, 0))[0]
    return Referrers(type_name, sorted(holders.items(), key=lambda kv: (-kv[1], kv[0])), targets)
