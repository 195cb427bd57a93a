"""What an offline reader needs to walk this interpreter's heap, found and checked in-process.

``gencore heap`` reads a core with no interpreter attached, so the GENCORE note carries the
addresses of the garbage collector's list heads, the offsets of the object and type fields the
walker follows, and the addresses of the builtin types. Everything here is found from live
objects and confirmed against values Python reports itself (``gc.get_threshold()``,
``__basicsize__``, ``__flags__``...), and every address is checked against ``/proc/self/maps``
before it is read: a wrong guess gives no layout, never a fault in the application.

The heads are static for the life of the interpreter, so the layout is found once (at the first
core or at :func:`gencore.install`) and reused; it costs well under a millisecond.
"""

from __future__ import annotations

import gc
import struct
import sys
import sysconfig
import types
from typing import Any, Optional

from . import heapcalib
from .selfmem import Maps, c_string, i32, i64, read, scan_for, u64

_cache: Optional[dict[str, Any]] = None

# CPython's type flags the walker needs (stable since 3.0 unless noted).
TPFLAGS_INLINE_VALUES = 1 << 2  # 3.13+
TPFLAGS_MANAGED_WEAKREF = 1 << 3  # 3.12+
TPFLAGS_MANAGED_DICT = 1 << 4  # 3.11+
TPFLAGS_HEAPTYPE = 1 << 9
TPFLAGS_HAVE_GC = 1 << 14

# PyTypeObject field offsets on 64-bit builds without Py_TRACE_REFS (3.9-3.15); each is
# confirmed below before it is recorded.
_TYPE_OFFSETS = {
    "tp_name": 24,
    "tp_basicsize": 32,
    "tp_itemsize": 40,
    "tp_flags": 168,
    "tp_base": 256,
    "tp_dict": 264,
    "tp_dictoffset": 288,
    "tp_as_async": 80,
    "tp_methods": 232,
    "tp_members": 240,
    "tp_bases": 336,
    "tp_mro": 344,
}

_BUILTINS: dict[str, type] = {
    "object": object,
    "type": type,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "set": set,
    "frozenset": frozenset,
    "str": str,
    "int": int,
    "bool": bool,
    "float": float,
    "complex": complex,
    "bytes": bytes,
    "bytearray": bytearray,
    "module": types.ModuleType,
    "function": types.FunctionType,
    "code": types.CodeType,
    "frame": types.FrameType,
    "generator": types.GeneratorType,
    "coroutine": types.CoroutineType,
    "async_generator": types.AsyncGeneratorType,
    "cell": types.CellType,
    "method": types.MethodType,
    "NoneType": type(None),
}


def _find_head(maps: Maps) -> int:
    """The youngest GC list's head, from a list object tracked just now (in C: nothing runs
    between its allocation and the read), confirmed by the thresholds its generation record
    holds, which must be those ``gc.get_threshold()`` reports."""
    from . import engine as _engine

    if not _engine.available():
        raise LookupError("the native engine is not available")
    head = _engine.native.gc_list_tail()
    thresholds = gc.get_threshold()
    if not maps.readable(head, 3 * 24 + 16):
        raise LookupError("the GC list head is not in readable memory")
    if tuple(i32(head + 16 + 24 * i) for i in range(len(thresholds))) != thresholds:
        raise LookupError("the GC list head does not hold the collector's thresholds")
    return head


def _check_list(maps: Maps, head: int) -> None:
    """A list head is sane if its neighbours point back at it."""
    nxt, prv = u64(head) & ~7, u64(head + 8) & ~7
    if not (maps.readable(nxt, 16) and maps.readable(prv, 16)):
        raise LookupError(f"GC list at {head:#x} has unreadable neighbours")
    if u64(prv) & ~7 != head or u64(nxt + 8) & ~7 != head:
        raise LookupError(f"GC list at {head:#x} is not a consistent ring")


class _Probe:
    """A heap type whose qualname differs from its name, for the heap-type offsets."""


def _heap_type_offsets(maps: Maps) -> dict[str, int]:
    def make() -> type:
        class Probe(_Probe):
            pass

        return Probe

    cls = make()
    size: int = type.__basicsize__  # type: ignore[assignment]  # typeshed: a method
    out = {
        "ht_name": scan_for(maps, id(cls), size, id(cls.__name__)),
        "ht_qualname": scan_for(maps, id(cls), size, id(cls.__qualname__)),
    }
    if out["ht_qualname"] < 300:
        raise LookupError("ht_qualname found inside PyTypeObject")
    # ht_cached_keys follows ht_qualname (3.9-3.15)
    out["ht_cached_keys"] = out["ht_qualname"] + 8
    tp_dict = u64(id(cls) + _TYPE_OFFSETS["tp_dict"])
    if not any(id(r) == tp_dict for r in gc.get_referents(cls) if isinstance(r, dict)):
        raise LookupError("tp_dict offset does not hold the type's dict")
    if u64(id(cls) + _TYPE_OFFSETS["tp_base"]) != id(_Probe):
        raise LookupError("tp_base offset does not hold the base type")
    if i64(id(cls) + _TYPE_OFFSETS["tp_dictoffset"]) != cls.__dictoffset__:
        raise LookupError("tp_dictoffset offset does not match __dictoffset__")
    return out


def _check_type_offsets(maps: Maps) -> None:
    o = _TYPE_OFFSETS
    for t in (int, list, tuple, dict, float, bytes, str, type):
        if not maps.readable(id(t), 300):
            raise LookupError("type object not readable")
        if u64(id(t) + 8) != id(type):
            raise LookupError("ob_type is not at offset 8")
        name_ptr = u64(id(t) + o["tp_name"])
        if not maps.readable(name_ptr, len(t.__name__) + 1):
            raise LookupError("tp_name not readable")
        if c_string(name_ptr) != t.__name__.encode():
            raise LookupError("tp_name offset does not hold the type name")
        if u64(id(t) + o["tp_basicsize"]) != t.__basicsize__:
            raise LookupError("tp_basicsize offset mismatch")
        if u64(id(t) + o["tp_itemsize"]) != t.__itemsize__:
            raise LookupError("tp_itemsize offset mismatch")
        if u64(id(t) + o["tp_flags"]) != t.__flags__:
            raise LookupError("tp_flags offset mismatch")
        if u64(id(t) + o["tp_mro"]) != id(t.__mro__):
            raise LookupError("tp_mro offset mismatch")
        if u64(id(t) + o["tp_bases"]) != id(t.__bases__):
            raise LookupError("tp_bases offset mismatch")
        methods = u64(id(t) + o["tp_methods"])
        if not maps.readable(methods, 32):
            raise LookupError("tp_methods not readable")
        name = c_string(u64(methods)).decode("ascii", "replace")
        if name not in t.__dict__:
            raise LookupError("tp_methods offset does not hold the type's methods")


def _str_layout(maps: Maps) -> dict[str, int]:
    """Header sizes of compact strings and the bit positions in their ``state`` word."""
    ascii_header = sys.getsizeof("") - 1
    latin1 = "\xe9" * 3
    compact_header = sys.getsizeof(latin1) - 4
    s = "gencore-heap-probe"
    if not maps.readable(id(s), ascii_header + len(s) + 1):
        raise LookupError("str not readable")
    if read(id(s) + ascii_header, len(s)) != s.encode():
        raise LookupError("ASCII str data is not after its header")
    if read(id(latin1) + compact_header, 3) != b"\xe9\xe9\xe9":
        raise LookupError("compact str data is not after its header")
    state = u64(id(s) + 32) & 0xFFFFFFFF
    state1 = u64(id(latin1) + 32) & 0xFFFFFFFF
    # kind bits 2-4 (1 = one byte), compact bit 5, ascii bit 6
    if (state >> 2) & 7 != 1 or not state & (1 << 5) or not state & (1 << 6):
        raise LookupError("str state bits are not where expected")
    if (state1 >> 2) & 7 != 1 or not state1 & (1 << 5) or state1 & (1 << 6):
        raise LookupError("str state bits are not where expected")
    out = {"ascii_header": ascii_header, "compact_header": compact_header, "state": 32}
    # PyCompactUnicodeObject: utf8_length and utf8 after the ASCII header (then, up to 3.11,
    # wstr_length; the ASCII header ends with wstr there)
    out["utf8_length"], out["utf8"] = ascii_header, ascii_header + 8
    if sys.version_info < (3, 12):
        out["wstr"], out["wstr_length"] = ascii_header - 8, ascii_header + 16
    # a fresh non-ASCII string whose UTF-8 copy the compiler caches (it reads its source so)
    cached = f"'\xe9t\xe9 {id(out)}'"
    compile(cached, "<gencore>", "eval")
    utf8 = u64(id(cached) + out["utf8"])
    if not maps.readable(utf8, len(cached.encode())) or read(utf8, 4) != cached.encode()[:4]:
        raise LookupError("the UTF-8 copy of a str is not where expected")
    if u64(id(cached) + ascii_header) != len(cached.encode()):
        raise LookupError("the UTF-8 length of a str is not where expected")
    if sys.getsizeof(cached) != compact_header + len(cached) + 1 + len(cached.encode()) + 1:
        raise LookupError("str sizes do not count their UTF-8 copy as expected")
    return out


def _fresh(maps: Maps) -> heapcalib.Readable:
    """``maps.readable``, reading the maps again when an address is not in them: the samples
    the calibration makes may live in memory mapped since."""

    def readable(addr: int, size: int) -> bool:
        if maps.readable(addr, size):
            return True
        maps.__init__()  # type: ignore[misc]
        return maps.readable(addr, size)

    return readable


def _discover() -> dict[str, Any]:
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return {"unsupported": "free-threaded builds keep objects in mimalloc heaps"}
    if hasattr(sys, "gettotalrefcount"):
        return {"unsupported": "debug builds of the interpreter use a different object layout"}
    if struct.calcsize("P") != 8 or sys.byteorder != "little":
        return {"unsupported": "only 64-bit little-endian interpreters"}
    maps = Maps()
    _check_type_offsets(maps)
    head = _find_head(maps)
    if u64(head + 72) == head:  # generations[3], then the generation0 pointer
        layout, permanent = "generations", head + 80
    else:  # 3.14: young, old[2], permanent
        layout, permanent = "incremental", head + 72
    heads = [head, head + 24, head + 48, permanent]
    for h in heads:
        if not maps.readable(h, 24):
            raise LookupError("GC list head not readable")
        _check_list(maps, h)
    if i32(permanent + 16) != 0:
        raise LookupError("the permanent generation's threshold is not 0")
    return {
        "pointer": 8,
        "gc_layout": layout,
        "gc_heads": heads,
        "type": dict(_TYPE_OFFSETS, **_heap_type_offsets(maps)),
        "str": _str_layout(maps),
        "func_code": scan_for(
            maps,
            id(_heap_type_offsets),
            types.FunctionType.__basicsize__,
            id(_heap_type_offsets.__code__),
        ),
        "builtins": {name: id(t) for name, t in _BUILTINS.items()},
        "version": 2,
        **heapcalib.calibrate(_fresh(maps)),
    }


def layout() -> dict[str, Any]:
    """The heap layout for the GENCORE note (cached), or ``{"error": ...}`` /
    ``{"unsupported": ...}`` saying why there is none."""
    global _cache
    if _cache is None:
        try:
            _cache = _discover()
        except (LookupError, OSError, ValueError, struct.error) as e:
            _cache = {"error": str(e)}
    return _cache


def counts() -> dict[str, Any]:
    """Cross-check figures taken with the note (cheap: no walk of the heap)."""
    return {
        "gc_count": list(gc.get_count()),
        "gc_freeze_count": gc.get_freeze_count(),
        "allocated_blocks": sys.getallocatedblocks(),
    }
