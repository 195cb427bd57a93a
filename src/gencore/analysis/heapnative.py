"""The native heap walker (``gencore._native``: ``gc_heap*.c``) driven from Python.

The walk, the sizes, the dominator tree and the graph questions run in C over the mapped core,
without the GIL; Python decides what each type's instances hold and weigh
(:class:`~gencore.analysis.heaptypes.TypeModel`) and passes its decisions as type records the
first time the walk meets a type. Requests and answers are arrays of 64-bit words.
"""

from __future__ import annotations

import os
import sysconfig
from array import array
from typing import Any, Optional

from ..errors import CoreFormatError, HeapUnavailableError
from .heaptypes import TypeInfo
from .heapwalk import Walker, omitted_ranges

__all__ = ["LAYOUT", "NativeWalk", "available"]

# gc_heap.h's requests
(TYPES, PRESCAN, CENSUS, RESULT, GRAPH, TYPERET, TOP, PATHS, SUSPECTS, RETAINED, DUPS, ROOTS,
 REFERRERS) = range(1, 14)  # fmt: skip
EFORMAT, ENOMEM, EINVAL, EIO, ELIMIT = -1, -2, -3, -4, -5

# gc_heap.h's HL_* fields, in order: (part of the layout, key)
LAYOUT: list[tuple[str, str]] = [
    ("", "minor"), ("", "tuple_items"), ("type", "tp_flags"), ("type", "ht_cached_keys"),
    ("str", "state"), ("str", "ascii_header"), ("str", "compact_header"),
    ("str", "utf8_length"), ("str", "utf8"), ("str", "wstr"), ("str", "wstr_length"),
    ("sizes", "int_min_digit"), ("sizes", "int_tag"), ("sizes", "static_type"),
    ("sizes", "heap_type"), ("sizes", "opcache_item"),
    ("code", "nlocals"), ("code", "stacksize"), ("code", "code"), ("code", "freevars"),
    ("code", "cellvars"), ("code", "cell2arg"), ("code", "extra"), ("code", "opcache"),
    ("code", "opcache_size"),
    ("frame", "code"), ("frame", "valuestack"), ("frame", "stacktop"), ("frame", "stackdepth"),
    ("frames", "frame_localsplus"),
    ("iframe", "code"), ("iframe", "func"), ("iframe", "locals"), ("iframe", "frame_obj"),
    ("iframe", "stacktop"), ("iframe", "stackpointer"), ("iframe", "localsplus"),
    ("slots", "0"), ("slots", "1"), ("frames", "code_extra"), ("frames", "frame_data"),
    ("frames", "frame_state"),
    ("array", "allocated"), ("array", "descr"), ("array", "descr_itemsize"),
    ("deque", "leftblock"), ("deque", "leftindex"), ("deque", "block"), ("deque", "blocklen"),
    ("odict", "fast_nodes_size"), ("odict", "first"), ("odict", "node"),
    ("", "str_type"), ("", "bytes_type"), ("", "bytes_basic"), ("", "frame_cleared"),
]  # fmt: skip

_native: Any = None
_why: Optional[str] = None


def available() -> bool:
    """Whether the native walker can be used (the extension is built and loads here, and
    ``GENCORE_HEAP_ENGINE`` does not ask for the pure one)."""
    global _native, _why
    if os.environ.get("GENCORE_HEAP_ENGINE", "").lower() == "pure":
        return False
    if _native is None and _why is None:
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            _why = "free-threaded interpreter"  # importing it would turn the GIL back on
        else:
            try:
                from .. import _native as mod
            except ImportError as e:
                _why = str(e)
            else:
                if hasattr(mod, "heap_op"):
                    _native = mod
                else:
                    _why = "gencore._native has no heap walker"
    return _native is not None


def _words(values: Any) -> bytes:
    return array("Q", [v & 0xFFFFFFFFFFFFFFFF for v in values]).tobytes()


def _unwords(b: bytes) -> list[int]:
    a = array("Q")
    a.frombytes(b)
    return a.tolist()


def _record(addr: int, info: Optional[TypeInfo]) -> list[int]:
    if info is None:
        return [addr] + [0] * 17
    offs = list(info.refs) + list(info.heap_refs) + list(info.soft)
    return [
        info.addr, info.basic, info.item, info.flags, info.param, info.cached_keys,
        info.dictoffset, info.pre, info.walk, info.sizer, info.frame_off, info.index,
        int(info.gc), int(info.leaf), 1, len(info.refs), len(info.heap_refs), len(info.soft),
        *offs,
    ]  # fmt: skip


class NativeWalk:
    """One interpreter's heap walked by the native engine. ``w`` reads single objects and
    decides types (it is not walked itself)."""

    def __init__(self, w: Walker) -> None:
        if not available():
            raise HeapUnavailableError(f"the native heap walker is not available ({_why})")
        self.w = w
        self.known: set[int] = set()
        cfg: list[int] = [len(w.rd.segs)]
        for s, e, off in w.rd.segs:
            cfg += [s, e, off]
        om = omitted_ranges(w.core)
        cfg.append(len(om))
        for a, b in om:
            cfg += [a, b]
        cfg.append(len(w.heads))
        cfg += w.heads
        cfg += self._layout()
        f = w.core._f
        if f is None:
            raise ValueError("the core file is closed")
        try:
            self.h = _native.heap_open(f.fileno(), _words(cfg))
        except RuntimeError as e:
            raise self._error(e) from None

    def _layout(self) -> list[int]:
        L, w = self.w.layout, self.w
        fr = L.frames
        slots = list(fr.get("code_slots", []))
        bytes_info = w.model.resolve(L.builtins.get("bytes", 0))
        parts: dict[str, dict[str, Any]] = {
            "": {
                "minor": L.minor,
                "tuple_items": w.rd.tuple_items,
                "str_type": L.builtins.get("str", 0),
                "bytes_type": L.builtins.get("bytes", 0),
                "bytes_basic": bytes_info.basic if bytes_info else 33,
                "frame_cleared": int(fr.get("frame_cleared", 4)),
            },
            "type": L.type, "str": L.strings, "sizes": L.sizes, "code": fr.get("code", {}),
            "frame": fr.get("frame", {}), "frames": fr, "iframe": fr.get("iframe", {}),
            "slots": {str(i): v for i, v in enumerate(slots)},
            "array": L.containers.get("array", {}), "deque": L.containers.get("deque", {}),
            "odict": L.containers.get("odict", {}),
        }  # fmt: skip
        return [int(parts[p].get(k, -1)) for p, k in LAYOUT]

    def _error(self, e: RuntimeError) -> Exception:
        args = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], tuple) else e.args
        code, msg = args if len(args) == 2 and isinstance(args[0], int) else (0, str(e))
        if code == EFORMAT:
            return CoreFormatError(f"{self.w.core.path}: {msg}")
        if code == ENOMEM:
            return MemoryError(msg)
        if code == ELIMIT:
            return HeapUnavailableError(f"{self.w.core.path}: {msg}")
        return RuntimeError(msg)

    def op(self, op: int, request: list[int]) -> list[int]:
        """One request (gc_heap.h) with its answer."""
        try:
            return _unwords(_native.heap_op(self.h, op, _words(request)))
        except RuntimeError as e:
            raise self._error(e) from None

    def add_types(self, addrs: list[int]) -> None:
        """Decide the types at ``addrs`` and hand them to the engine."""
        req: list[int] = []
        for a in addrs:
            if a in self.known:
                continue
            self.known.add(a)
            req += _record(a, self.w.model.resolve(a))
        if req:
            self.op(TYPES, req)

    def census(self, largest: int, roots: list[int]) -> dict[str, Any]:
        """Walk the heap; the figures of :class:`~gencore.analysis.heap.Census`."""
        self.add_types(list(self.w.layout.builtins.values()))
        self.add_types(self.op(PRESCAN, []))
        while True:
            out = self.op(CENSUS, [largest, *roots])
            if not out[0]:
                break
            self.add_types(out[1:])
        r = self.op(RESULT, [])
        tracked, unreadable, omitted, nodes, ntypes, cut = r[:6]
        counts = {}
        for i in range(ntypes):
            c, b, u = r[6 + 3 * i : 9 + 3 * i]
            if c:
                counts[i] = (c, b, u)
        rest = r[6 + 3 * ntypes :]
        top = [(rest[1 + 2 * i + 1], rest[1 + 2 * i]) for i in range(rest[0])]
        top.sort(key=lambda t: (-t[1], t[0]))
        return {
            "tracked": tracked,
            "unreadable": unreadable,
            "omitted": omitted,
            "lists_cut": cut,
            "nodes": nodes,
            "counts": counts,
            "largest": top,
        }


def unpack_records(words: list[int], width: int) -> list[tuple[int, ...]]:
    """``words`` as tuples of ``width``."""
    return [tuple(words[i : i + width]) for i in range(0, len(words) - width + 1, width)]
