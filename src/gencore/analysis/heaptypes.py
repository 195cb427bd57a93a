"""Objects in a core as the heap walkers see them: the layout from the GENCORE note, readers
of ``str`` and ``dict`` objects, and what each type's instances hold and weigh.

Both walkers (the native one in ``gencore._native`` and :mod:`gencore.analysis.heapwalk`)
take their knowledge of types from :class:`TypeModel`: for every type object met in the heap
it decides once

- which references an instance holds: the fixed fields of its type and its bases (the
  ``T_OBJECT`` members, ``__slots__`` included, and the fields the process found for builtin
  types), its ``__dict__``, and the variable part of lists, tuples, dicts, sets, deques,
  frames and generators (:data:`W_NAMES`);
- which formula ``sys.getsizeof`` applies: the ``__sizeof__`` of the first class in the MRO
  that defines one. A formula the walker knows gives the size; any other (a class's own
  ``__sizeof__``, an extension type's) makes the size unknown, never a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..errors import CoreFormatError, HeapUnavailableError
from .memory import MAX_ITEMS, CoreMemory, Unreadable

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = ["HeapLayout", "ObjectReader", "TypeInfo", "TypeModel"]

# What an instance holds besides its fixed fields (the walk kind).
W_NONE, W_LIST, W_TUPLE, W_DICT, W_SET, W_DEQUE, W_FRAME39, W_FRAME, W_GEN, W_TYPE = range(10)
W_NAMES = {
    "list": W_LIST,
    "tuple": W_TUPLE,
    "dict": W_DICT,
    "set": W_SET,
    "frozenset": W_SET,
    "type": W_TYPE,
}
# The size formula (sys.getsizeof's, per the __sizeof__ that applies).
(S_UNKNOWN, S_DEFAULT, S_INT, S_STR, S_BYTEARRAY, S_LIST, S_DICT, S_ODICT, S_SET, S_CODE,
 S_TYPE, S_FRAME, S_GEN, S_ARRAY, S_DEQUE) = range(15)  # fmt: skip
S_NAMES = {
    "default": S_DEFAULT,
    "int": S_INT,
    "str": S_STR,
    "bytearray": S_BYTEARRAY,
    "list": S_LIST,
    "dict": S_DICT,
    "odict": S_ODICT,
    "set": S_SET,
    "code": S_CODE,
    "type": S_TYPE,
    "frame": S_FRAME,
    "gen": S_GEN,
    "coro": S_GEN,
    "agen": S_GEN,
    "array": S_ARRAY,
    "deque": S_DEQUE,
}
# Managed attributes (3.11+): none, 3.11's values/dict pair, 3.12's tagged word, 3.13+'s
# dict pointer and inline values.
M_NONE, M_311, M_312, M_313 = range(4)

INLINE_VALUES, MANAGED_WEAKREF, MANAGED_DICT = 1 << 2, 1 << 3, 1 << 4
HEAPTYPE, HAVE_GC = 1 << 9, 1 << 14
T_OBJECT, T_OBJECT_EX = 6, 16
TAG_MASK = (1 << 64) - 8


@dataclass
class TypeInfo:
    """What the walkers know of one type object."""

    addr: int
    name: str
    flags: int
    basic: int
    item: int
    walk: int = W_NONE
    sizer: int = S_UNKNOWN
    pre: int = 0
    param: int = 0  # the sizer's constant (a generator kind's base size)
    gc: bool = False
    refs: tuple[int, ...] = ()
    soft: tuple[int, ...] = ()  # T_OBJECT members of other types: followed to find objects,
    # not counted as owning references (an extension type may keep borrowed ones there)
    heap_refs: tuple[int, ...] = ()  # type objects: fields only heap types have
    dictoffset: int = 0  # negative: counted from the end of a variable-size object
    managed: int = M_NONE
    cached_keys: int = 0
    frame_off: int = 0  # generators (3.11+): where their frame is inline
    index: int = 0
    leaf: bool = False  # instances never hold references

    @property
    def fixed(self) -> int:
        """The size of every instance when it does not depend on the object (else 0)."""
        if self.sizer == S_DEFAULT and not self.item:
            return self.basic + self.pre
        return 0


def _ints(d: Any, what: str) -> dict[str, int]:
    if not isinstance(d, dict):
        raise TypeError(f"{what} is not a table")
    return {str(k): int(v) for k, v in d.items() if not isinstance(v, (dict, list))}


def _frames(d: Any) -> dict[str, Any]:
    """The frames part: numbers, lists of numbers and tables of numbers, checked."""
    if not isinstance(d, dict):
        raise TypeError("frames is not a table")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[str(k)] = _ints(v, str(k))
        elif isinstance(v, list):
            out[str(k)] = [int(x) for x in v]
        elif isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"frames: {k} is not a number")
        else:
            out[str(k)] = v
    return out


@dataclass
class HeapLayout:
    """The heap part of the GENCORE note, checked and typed."""

    minor: int
    heads: list[int]
    type: dict[str, int]
    strings: dict[str, int]
    builtins: dict[str, int]
    func_code: int = 0
    version: int = 1
    sizes: dict[str, int] = field(default_factory=dict)
    roots: dict[str, int] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)
    containers: dict[str, dict[str, int]] = field(default_factory=dict)
    follow: dict[int, tuple[int, ...]] = field(default_factory=dict)
    names: dict[tuple[int, int], str] = field(default_factory=dict)  # (type, offset): field
    sizers: dict[int, str] = field(default_factory=dict)
    static: dict[int, tuple[str, bool]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_core(cls, core: ElfCore) -> HeapLayout:
        """The layout of ``core``'s note; :class:`HeapUnavailableError` if it has none."""
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
            hexversion = int(core.metadata["python"]["hexversion"])
            out = cls(
                minor=(hexversion >> 16) & 0xFF,
                heads=[int(h) for h in meta["gc_heads"]],
                type=_ints(meta["type"], "type"),
                strings=_ints(meta["str"], "str"),
                builtins=_ints(meta["builtins"], "builtins"),
                func_code=int(meta.get("func_code", 0)),
                version=int(meta.get("version", 1)),
                sizes=_ints(meta.get("sizes", {}), "sizes"),
                roots=_ints(meta.get("roots", {}), "roots"),
                frames=_frames(meta.get("frames", {})),
                containers={k: _ints(v, k) for k, v in dict(meta.get("containers", {})).items()},
                follow={
                    int(k): tuple(int(o[0] if isinstance(o, list) else o) for o in v)
                    for k, v in meta.get("follow", {}).items()
                },
                names={
                    (int(k), int(o[0])): str(o[1])
                    for k, v in meta.get("follow", {}).items()
                    for o in v
                    if isinstance(o, list) and len(o) == 2
                },
                sizers={int(k): str(v) for k, v in meta.get("sizers", {}).items()},
                static={
                    int(k): (str(v[0]), bool(v[1]))
                    for k, v in dict(meta.get("static", {})).items()
                    if isinstance(v, list) and len(v) == 2
                },
                missing={str(k): str(v) for k, v in dict(meta.get("missing", {})).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CoreFormatError(
                f"{core.path}: malformed heap layout in GENCORE note: {e}"
            ) from None
        if (hexversion >> 24) != 3 or not 9 <= out.minor <= 30 or not out.heads:
            raise CoreFormatError(f"{core.path}: malformed heap layout in GENCORE note")
        return out


class ObjectReader(CoreMemory):
    """Reads objects of the core: ``str`` text, ``dict`` entries and sizes, type names."""

    def __init__(self, core: ElfCore, layout: HeapLayout) -> None:
        super().__init__(core)
        self.core = core
        self.layout = layout
        self.minor = layout.minor
        self.s = layout.strings
        self.shared_keys: dict[int, tuple[int, int, int, int]] = {}
        self.tuple_items = 24

    def offset(self, addr: int, n: int) -> int:
        """:meth:`CoreMemory.offset`; an :class:`Unreadable` says the address it missed."""
        try:
            return super().offset(addr, n)
        except Unreadable:
            raise Unreadable(addr) from None

    # -- str --------------------------------------------------------------------------------

    def str_value(self, addr: int, limit: int = 1 << 16) -> Optional[str]:
        """A compact str object's text (None if it is not one, or longer than ``limit``)."""
        if not addr:
            return None
        length = self.u64(addr + 16)
        state = self.u32(addr + self.s["state"])
        kind, compact, ascii_ = (state >> 2) & 7, state & 32, state & 64
        if not compact or kind not in (1, 2, 4) or length > limit:
            return None
        if ascii_:
            return self.raw(addr + self.s["ascii_header"], length).decode("ascii", "replace")
        data = self.raw(addr + self.s["compact_header"], length * kind)
        enc = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        return data.decode(enc, "replace")

    def str_data(self, addr: int) -> tuple[int, int, int]:
        """(address of the characters, length, bytes per character) of a str object."""
        length = self.u64(addr + 16)
        state = self.u32(addr + self.s["state"])
        kind = (state >> 2) & 7
        if kind not in (1, 2, 4) or length > MAX_ITEMS:
            raise Unreadable
        if not state & 32:  # a legacy string (str subclasses): its data is elsewhere
            data = self.u64(addr + self.s["compact_header"])
        elif state & 64:
            data = addr + self.s["ascii_header"]
        else:
            data = addr + self.s["compact_header"]
        return data, length, kind

    # -- dicts ------------------------------------------------------------------------------

    def keys_table(self, keys: int) -> tuple[int, int, int, int]:
        """(entries address, entry size, number of entries, bytes of the keys object)."""
        if self.minor >= 11:
            hdr = self.raw(keys, 32)
            log2_size, log2_index, kind = hdr[8], hdr[9], hdr[10]
            if log2_size > 40 or log2_index > 43:
                raise Unreadable
            usable_total = ((1 << log2_size) << 1) // 3
            (nentries,) = struct.unpack_from("<q", hdr, 24)
            esize = 24 if kind == 0 else 16
            entries = keys + 32 + (1 << log2_index)
            nbytes = 32 + (1 << log2_index) + usable_total * esize
        else:
            size, _, _, nentries = struct.unpack("<qqqq", self.raw(keys + 8, 32))
            if not 0 < size <= MAX_ITEMS:
                raise Unreadable
            ib = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
            esize = 24
            entries = keys + 40 + size * ib
            nbytes = 40 + size * ib + 24 * ((size << 1) // 3)
        if not 0 <= nentries <= MAX_ITEMS:
            raise Unreadable
        return entries, esize, nentries, nbytes

    def keys(self, keys: int, shared: bool) -> tuple[int, int, int, int]:
        """:meth:`keys_table`, remembered for the shared keys of split tables."""
        if not shared:
            return self.keys_table(keys)
        t = self.shared_keys.get(keys)
        if t is None:
            t = self.shared_keys[keys] = self.keys_table(keys)
        return t

    def dict_entries(self, d: int) -> tuple[Sequence[int], Sequence[int]]:
        """Key and value pointers of a dict (split tables read from their values array)."""
        keys, values = struct.unpack("<QQ", self.raw(d + 32, 16))
        entries, esize, n, _ = self.keys(keys, bool(values))
        if n:
            fo = self.offset(entries, n * esize)
            w = memoryview(self.mm)[fo : fo + n * esize].cast("Q")
        else:
            w = memoryview(b"").cast("Q")
        step = esize // 8
        ks: Sequence[int] = w[step - 2 :: step]
        if values:
            if self.minor >= 13:
                n = min(n, self.raw(values, 2)[1])
                vs: Sequence[int] = self.words(values + 8, n)
            else:
                vs = self.words(values, n)
            ks = ks[: len(vs)]
        else:
            vs = w[step - 1 :: step]
        return ks, vs

    def dict_get_str(self, d: int, key: str) -> Optional[int]:
        """The value (an address) of ``d[key]`` for a str key, or None."""
        if not d:
            return None
        ks, vs = self.dict_entries(d)
        for k, v in zip(list(ks), list(vs)):
            if k and v and self.str_value(k, 256) == key:
                return int(v)
        return None

    def dict_bytes(self, d: int, basic: int) -> int:
        """``sys.getsizeof`` of a dict (without the GC header), ``basic`` its type's size."""
        keys, values = struct.unpack("<QQ", self.raw(d + 32, 16))
        size = basic
        _, _, nentries, nbytes = self.keys(keys, bool(values))
        if self.u64(keys) == 1:  # dk_refcnt: the keys are the dict's own
            size += nbytes
        if values:
            if self.minor >= 11:  # the shared keys' usable size, values embedded or not
                usable = self.u64(keys + 16)  # dk_usable (after refcnt, log2s, kind, version)
                size += 8 * (nentries + usable)
            else:
                size += 8 * ((self.u64(keys + 8) << 1) // 3)
        return size

    def keys_bytes(self, keys: int) -> int:
        """``_PyDict_KeysSize``."""
        return self.keys_table(keys)[3]


_PART = (Unreadable, UnicodeDecodeError, struct.error, IndexError, ValueError)


class TypeModel:
    """Decides, once per type object, how the walkers read and size its instances."""

    def __init__(self, rd: ObjectReader) -> None:
        self.rd = rd
        self.L = rd.layout
        self.minor = rd.minor
        self.types: dict[int, Optional[TypeInfo]] = {}
        self.order: list[TypeInfo] = []
        self.by_addr = {a: k for k, a in self.L.builtins.items()}
        self.type_type = self.L.builtins.get("type", 0)
        self.object_type = self.L.builtins.get("object", 0)
        t = self.L.type
        self.t = t
        # tuple items follow the header, whose size changed in 3.14 (the cached hash): known
        # before any type is read (an MRO is a tuple)
        try:
            basic = rd.u64(self.L.builtins.get("tuple", 0) + t["tp_basicsize"])
            if 24 <= basic <= 64:
                rd.tuple_items = basic
        except (Unreadable, KeyError):
            pass

    def resolve(self, addr: int) -> Optional[TypeInfo]:
        """The :class:`TypeInfo` of the type object at ``addr`` (None: not a type)."""
        try:
            return self.types[addr]
        except KeyError:
            pass
        info: Optional[TypeInfo]
        try:
            info = self._load(addr)
        except (Unreadable, UnicodeDecodeError, struct.error, IndexError, ValueError):
            info = None
        self.types[addr] = info
        if info is not None:
            info.index = len(self.order)
            self.order.append(info)
        return info

    # -- reading a type ---------------------------------------------------------------------

    def _is_type(self, addr: int) -> bool:
        rd = self.rd
        meta = rd.u64(addr + 8)  # a type's type is type, or a metaclass whose type is type
        return bool(meta == self.type_type or rd.u64(meta + 8) == self.type_type)

    def name_of(self, addr: int) -> str:
        """``module.QualName`` of a class, the C name of a builtin (``dict``)."""
        rd, t = self.rd, self.t
        name = rd.c_string(rd.u64(addr + t["tp_name"]))
        if rd.u64(addr + t["tp_flags"]) & HEAPTYPE:
            try:
                qual = rd.str_value(rd.u64(addr + t["ht_qualname"])) or name
                mod = rd.dict_get_str(rd.u64(addr + t["tp_dict"]), "__module__")
                module = rd.str_value(mod) if mod else None
            except (Unreadable, struct.error, UnicodeDecodeError):
                qual, module = name, None
            return f"{module}.{qual}" if module and module != "builtins" else qual
        return name

    def _mro(self, addr: int) -> list[int]:
        rd = self.rd
        mro = rd.u64(addr + self.t["tp_mro"]) if "tp_mro" in self.t else 0
        if mro:
            n = rd.u64(mro + 16)
            if 0 < n <= 4096:
                return [int(x) for x in rd.words(mro + rd.tuple_items, n)]
        out, base, hops = [], addr, 0  # no MRO tuple (not ready): the base chain
        while base and hops < 64:
            out.append(base)
            base, hops = rd.u64(base + self.t["tp_base"]), hops + 1
        return out

    def _defines(self, addr: int, name: str) -> bool:
        """Whether the class at ``addr`` defines attribute ``name`` itself (its dict, or
        the C methods of a builtin or extension type)."""
        rd, t = self.rd, self.t
        if name == "__sizeof__" and addr in self.L.static:
            return self.L.static[addr][1]
        d = rd.u64(addr + t["tp_dict"])
        if d and rd.u64(addr + t["tp_flags"]) & HEAPTYPE:
            return rd.dict_get_str(d, name) is not None
        methods = rd.u64(addr + t["tp_methods"]) if "tp_methods" in t else 0
        for i in range(512 if methods else 0):
            ml = rd.u64(methods + 32 * i)
            if not ml:
                break
            if rd.c_string(ml, 64) == name:
                return True
        return False

    def _members(self, addr: int) -> list[int]:
        """Offsets of a class's own object members (T_OBJECT, T_OBJECT_EX), ``__slots__``
        included; ``__weakref__`` (not a strong reference) left out."""
        rd, t = self.rd, self.t
        p = rd.u64(addr + t["tp_members"]) if "tp_members" in t else 0
        out = []
        for i in range(4096 if p else 0):
            m = p + 40 * i
            name = rd.u64(m)
            if not name:
                break
            kind, off, flags = rd.u32(m + 8), rd.i64(m + 16), rd.u32(m + 24)
            if kind in (T_OBJECT, T_OBJECT_EX) and not flags & 8 and 16 <= off < 1 << 20:
                if rd.c_string(name, 64) != "__weakref__":
                    out.append(off)
        return out

    def _load(self, addr: int) -> Optional[TypeInfo]:
        if not addr or not self._is_type(addr):
            return None
        rd, t = self.rd, self.t
        flags = rd.u64(addr + t["tp_flags"])
        basic = rd.u64(addr + t["tp_basicsize"])
        item = rd.u64(addr + t["tp_itemsize"])
        if basic > 1 << 24 or item > 1 << 16 or basic < 16:
            return None
        # what a capped core left out (a name or a method table in read-only data) makes
        # that part unknown, not the type
        try:
            name = self.name_of(addr)
        except _PART:
            known = self.L.static.get(addr)
            name = known[0] if known else f"<type at {addr:#x}: its name is not in the core>"
        info = TypeInfo(addr, name, flags, basic, item)
        info.gc = bool(flags & HAVE_GC)
        try:
            mro = self._mro(addr)
        except _PART:
            mro = [addr]
        self._walk_kind(info, mro)
        try:
            self._sizer(info, mro)
        except _PART:
            info.sizer = S_UNKNOWN
        self._pre(info)
        self._refs(info, mro)
        return info

    def _walk_kind(self, info: TypeInfo, mro: list[int]) -> None:
        fr = self.L.frames
        special = {
            self.L.builtins.get("frame", -1): W_FRAME39 if self.minor < 11 else W_FRAME,
        }
        gens = {}
        for key, short in (
            ("generator", "gen"),
            ("coroutine", "coro"),
            ("async_generator", "agen"),
        ):
            if self.minor >= 11 and f"{short}_iframe" in fr:
                special[self.L.builtins.get(key, -1)] = W_GEN
                gens[self.L.builtins.get(key, -1)] = int(fr[f"{short}_iframe"])
        deque = self._sizer_addr("deque")
        if deque and "deque" in self.L.containers:
            special[deque] = W_DEQUE
        for b in mro:
            if b in special:
                info.walk = special[b]
                info.frame_off = gens.get(b, 0)
                return
            name = self.by_addr.get(b, "")
            if name in W_NAMES:
                info.walk = W_NAMES[name]
                return

    def _sizer_addr(self, name: str) -> int:
        return next((a for a, n in self.L.sizers.items() if n == name), 0)

    def _sizer(self, info: TypeInfo, mro: list[int]) -> None:
        if not self.L.sizers:  # a first-version note: builtins' formulas, else the default's
            name = self.by_addr.get(next((b for b in mro if b in self.by_addr), 0), "")
            simple = {"list": S_LIST, "dict": S_DICT, "set": S_SET, "frozenset": S_SET,
                      "bytearray": S_BYTEARRAY, "str": S_STR, "int": S_INT}  # fmt: skip
            info.sizer = simple.get(
                name, S_DEFAULT if not info.item or name in ("tuple", "bytes") else S_UNKNOWN
            )
            if info.sizer == S_INT:
                info.param = self._basic(self.L.builtins["int"])
            return
        for b in mro:
            if b in self.L.sizers or self._defines(b, "__sizeof__"):
                owner = self.L.sizers.get(b, "")
                info.sizer = S_NAMES.get(owner, S_UNKNOWN)
                if owner in ("gen", "coro", "agen"):
                    info.param = int(self.L.frames.get(f"{owner}_base", 0))
                    if not info.param:
                        info.sizer = S_UNKNOWN
                elif owner == "frame" and self.minor >= 11:
                    info.param = int(self.L.frames.get("frame_base", 0))
                    if not info.param:
                        info.sizer = S_UNKNOWN
                elif owner in ("array", "deque", "odict") and owner not in self.L.containers:
                    info.sizer = S_UNKNOWN
                elif owner == "int":  # digits follow int's own header, in subclasses too
                    base = self.L.builtins.get("int", 0)
                    info.param = info.basic if base in (0, info.addr) else self._basic(base)
                elif owner == "bytearray":  # 3.15: plus a bytes object's header once allocated
                    info.param = int(self.L.sizes.get("bytearray_extra", 0))
                elif owner == "type" and "static_type" not in self.L.sizes:
                    info.sizer = S_UNKNOWN
                return
        info.sizer = S_UNKNOWN

    def _basic(self, addr: int) -> int:
        return int(self.rd.u64(addr + self.t["tp_basicsize"]))

    def _pre(self, info: TypeInfo) -> None:
        """What getsizeof adds before an instance: the GC header (up to 3.10 only for
        objects the collector can track), and 3.11+'s pre-header pointers."""
        pre = 16 if info.gc else 0
        if self.minor >= 11:
            mask = MANAGED_DICT | (MANAGED_WEAKREF if self.minor >= 12 else 0)
            if info.flags & mask:
                pre += 16
        info.pre = pre
        if self.minor >= 11 and info.flags & MANAGED_DICT:
            info.managed = M_311 if self.minor == 11 else M_312 if self.minor == 12 else M_313
        if info.flags & HEAPTYPE:
            info.cached_keys = self.rd.u64(info.addr + self.t["ht_cached_keys"])

    def _slotted(self, b: int) -> bool:
        """Whether ``b`` is a class with ``__slots__`` (its members are its slots)."""
        rd, t = self.rd, self.t
        return bool(rd.u64(b + t["tp_flags"]) & HEAPTYPE and rd.u64(b + t["ht_name"] + 8))

    def _refs(self, info: TypeInfo, mro: list[int]) -> None:
        rd, t = self.rd, self.t
        offs: set[int] = set()
        soft: set[int] = set()
        for b in mro:
            offs.update(self.L.follow.get(b, ()))
            try:
                members = self._members(b)
                (offs if self._slotted(b) else soft).update(members)
            except Unreadable:
                pass  # a capped core without the type's static data: its fields unknown
        dictoffset = rd.i64(info.addr + t["tp_dictoffset"])
        if dictoffset > 0:
            offs.add(dictoffset)
        elif dictoffset < 0 and not info.managed:
            info.dictoffset = dictoffset
        limit = info.basic
        if info.walk == W_TYPE:
            struct_end = self.L.sizes.get("type_struct", 0)
            info.heap_refs = tuple(sorted(o for o in offs if struct_end and o >= struct_end))
            offs = {o for o in offs if not struct_end or o < struct_end}
            soft = {o for o in soft if not struct_end or o < struct_end}
        info.refs = tuple(sorted(o for o in offs if 16 <= o and o + 8 <= limit))
        info.soft = tuple(sorted(o for o in soft - offs if 16 <= o and o + 8 <= limit))
        info.leaf = (
            not info.refs
            and not info.soft
            and not info.heap_refs
            and not info.dictoffset
            and not info.managed
            and info.walk == W_NONE
        )
