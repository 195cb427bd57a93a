"""Where the interpreter keeps what pystack and py-spy follow, for cores with ``max_size``.

A capped core keeps, after every thread's stack, the objects those tools read to show Python
stacks: the interpreter state, each thread state, each frame, its code object and the code's
name, qualified name, file name and line table. The snapshot child walks them in its own copy
of memory, so it needs their layout: the offsets found here, from this very call's frame and
code object, each confirmed by the value Python reports (``PyThreadState_Next``,
``PyInterpreterState_ThreadHead``, ``id()`` of the frame's code and names). Every address is
checked against ``/proc/self/maps`` before it is read. Found once, then cached; any doubt
gives no layout (the capped core then keeps stacks, TLS and writable data, but no walk).
"""

from __future__ import annotations

import os
import struct
import sys
import types
from typing import Any, Optional

from .. import _procfs
from ..analysis.memory import Unreadable
from ..analysis.pylayout import build_layout
from ..errors import GencoreError
from . import engine
from .selfmem import LiveMemory, Maps, read, scan_for, symbol, u64

# What _discover finds; layout() returns them as struct gc_pylayout's fields (gc_config.h):
# OBJECTS as "objects", CODE_FIELDS as "code_fields".
OBJECTS = ("object0", "object1", "object2", "object3")
CODE_FIELDS = (
    "code_name",
    "code_qualname",
    "code_filename",
    "code_linetable",
    "code_code",
    "code_varnames",
)
FIELDS = (
    "runtime",
    "runtime_size",
    "r_debug",
    "interp",
    "code_type",
    "code_mask",
    "interp_keep",
    "interp_threads",
    "ts_next",
    "ts_interp",
    "ts_keep",
    "ts_frame",
    "cframe_current",
    "frame_back",
    "frame_code",
    "frame_keep",
    "frame_var",
    "code_basicsize",
    "code_itemsize",
    "tuple_items",
    *OBJECTS,
    *CODE_FIELDS,
)

MAX_INTERPRETERS = 256  # the chain's length the walk follows (gc_budget.c)
INTERP_DICTS = ("sysdict", "builtins", "modules")  # kept with each interpreter
INTERP_KEEP = 64 << 10  # PyInterpreterState is at most tens of KiB (3.9-3.11: in the heap)
TS_KEEP = 4 << 10
IFRAME_KEEP = 512  # a _PyInterpreterFrame's header and first locals (3.11+)
TAG_MASK = (1 << 64) - 8  # 3.14's _PyStackRef tags the low bits of f_executable

_cache: Optional[dict[str, Any]] = None
# what a wrong guess about the layout raises: no layout, never an error for the caller
_DOUBTS = (
    LookupError,
    AttributeError,
    OSError,
    ValueError,
    StopIteration,
    ImportError,
    struct.error,
)
_failed: Optional[str] = None


def _interp_frame(maps: Maps, frame: types.FrameType) -> int:
    """3.11+: the _PyInterpreterFrame behind a live frame object (``f_frame``, right after
    ``f_back``), confirmed by the code object it points to."""
    iframe = u64(id(frame) + 24)
    if not maps.readable(iframe, 128):
        raise LookupError("the interpreter frame is not readable")
    words = struct.unpack("<8Q", read(iframe, 64))
    if not any(w & TAG_MASK == id(frame.f_code) for w in words):
        raise LookupError("the interpreter frame does not point to its code")
    return iframe


def _walk_check(maps: Maps, mem: int, ts: int, out: dict[str, int], frame: types.FrameType) -> None:
    """Walk this thread's frames the way the snapshot child will: the code objects must be
    those of this function's caller (``frame``) and its callers, in order. ``mem`` is a
    descriptor of /proc/self/mem."""
    # read inline, C calls only (a Python call would make its own frame the current one):
    # this function's frame is the current one, its caller's is the next
    f = struct.unpack("<Q", os.pread(mem, 8, ts + out["ts_frame"]))[0]
    if out["cframe_current"] >= 0:
        f = struct.unpack("<Q", os.pread(mem, 8, f + out["cframe_current"]))[0]
    f = u64(f + out["frame_back"])
    expected: list[int] = []
    py: Optional[types.FrameType] = frame
    while py is not None and len(expected) < 4:
        expected.append(id(py.f_code))
        py = py.f_back
    seen: list[int] = []
    while f and len(seen) < 64 and len([c for c in seen if c in expected]) < len(expected):
        if not maps.readable(f, out["frame_code"] + 8):
            raise LookupError("the frame chain leaves readable memory")
        code = u64(f + out["frame_code"]) & TAG_MASK
        if code and maps.readable(code, 16) and u64(code + 8) == id(types.CodeType):
            seen.append(code)
        f = u64(f + out["frame_back"])
    if [c for c in seen if c in expected][: len(expected)] != expected:
        raise LookupError("walking the frames does not give this thread's code objects")


class _Probe:
    """Its method runs the frame-dependent part of the discovery in a frame of its own (live
    while the offsets are found), and its qualname (``_Probe.frames``) differs from its name."""

    def frames(self, maps: Maps, mem: int, ts: int, out: dict[str, int]) -> types.CodeType:
        """Everything that needs this frame to be the thread's current one. While the thread
        state is read, no Python function is called (a call would make its frame current):
        only C calls (``os.pread`` of ``mem``, /proc/self/mem)."""
        frame = sys._getframe(0)
        caller = frame.f_back
        assert caller is not None
        maps.__init__()  # type: ignore[misc]  # again: this frame may be in a new arena
        if sys.version_info < (3, 11):
            cur, parent, out["frame_var"] = id(frame), id(caller), 1
            out["frame_keep"] = type(frame).__basicsize__
        else:
            cur, parent = _interp_frame(maps, frame), _interp_frame(maps, caller)
            out["frame_var"], out["frame_keep"] = 0, IFRAME_KEEP
        out["frame_back"] = scan_for(maps, cur, 128, parent)
        raw = struct.unpack("<16Q", read(cur, 128))
        out["frame_code"] = next(
            i * 8 for i, w in enumerate(raw) if w & TAG_MASK == id(frame.f_code)
        )
        # the thread state points at the current frame directly (3.9, 3.10, 3.13+) or through
        # its cframe (3.11, 3.12: a struct on the C stack whose current_frame is at 0 or 8)
        words = list(struct.unpack("<128Q", os.pread(mem, 1024, ts)))
        if cur in words:
            out["ts_frame"] = words.index(cur) * 8
        else:
            stack = [(lo, hi) for lo, hi in maps.ranges]
            for i, w in enumerate(words):
                if w <= 4096 or not any(lo <= w and w + 16 <= hi for lo, hi in stack):
                    continue
                pair = list(struct.unpack("<2Q", os.pread(mem, 16, w)))
                if cur in pair:
                    out["ts_frame"], out["cframe_current"] = i * 8, pair.index(cur) * 8
                    break
            else:
                raise LookupError("the thread state does not point to the current frame")
        _walk_check(maps, mem, ts, out, frame)
        return frame.f_code


def _runtime() -> tuple[int, int]:
    """``_PyRuntime``'s address and size (its symbol's, in the file that maps it)."""
    from elftools.elf.elffile import ELFFile

    addr = symbol("_PyRuntime")
    if not addr:
        raise LookupError("_PyRuntime is not exported by this interpreter")
    starts: dict[str, int] = {}
    last = path = ""  # .bss: the anonymous mapping after the file's last one
    for r in _procfs.maps():
        if r.path.startswith("/"):
            starts.setdefault(r.path, r.start - r.offset)  # the load bias: offset 0's address
            last = r.path
        elif r.path:
            last = ""
        if r.start <= addr < r.end:
            path = last
            break
    if not path:
        raise LookupError("_PyRuntime is not in a file's mapping")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for name in (".dynsym", ".symtab"):
            table: Any = elf.get_section_by_name(name)
            syms = table.get_symbol_by_name("_PyRuntime") if table is not None else None
            if syms:
                size = int(syms[0]["st_size"])
                bias = starts[path] if elf.header["e_type"] == "ET_DYN" else 0
                if bias + int(syms[0]["st_value"]) == addr and 0 < size < 64 << 20:
                    return addr, size
    raise LookupError("_PyRuntime's symbol does not match its address")


def _localsplusnames(maps: Maps, code: types.CodeType, size: int) -> int:
    """3.11+: the offset of ``co_localsplusnames`` (pystack reads every frame's argument
    names from it): the tuple whose items are the code's variable, cell and free names."""
    want = [id(n) for n in code.co_varnames + code.co_cellvars + code.co_freevars]
    words = struct.unpack(f"<{size // 8}Q", read(id(code), size // 8 * 8))
    for i, w in enumerate(words):
        if w and maps.readable(w, tuple.__basicsize__) and u64(w + 8) == id(tuple):
            n = u64(w + 16)
            if n == len(want) and maps.readable(w, tuple.__basicsize__ + 8 * n):
                items = [u64(w + tuple.__basicsize__ + 8 * k) for k in range(n)]
                if items == want:
                    return i * 8
    raise LookupError("co_localsplusnames not found")


def _discover_walk() -> dict[str, int]:
    """Everything but ``_PyRuntime``'s extent (which needs the ELF symbol table: slow)."""
    maps = Maps()
    out: dict[str, int] = dict.fromkeys(FIELDS, -1)
    # the dicts readers check an interpreter state by (pystack reads its builtins), and the
    # version
    import builtins

    for i, obj in enumerate((builtins.__dict__, sys.__dict__, sys.modules)):
        out[f"object{i}"] = id(obj)
    # py-spy reads the version from memory (3.11+: Py_Version, in read-only data)
    out["object3"] = symbol("Py_Version")
    # the dynamic loader's list of loaded objects (gdb and elfutils find libraries from it)
    out["r_debug"] = symbol("_r_debug")
    engine.require()
    interp, ts, states = engine.native.thread_states()
    head = states[0] if states else 0
    if not (interp and ts and head and maps.readable(ts, 1024) and maps.readable(interp, 64)):
        raise LookupError("the interpreter or thread state is not readable")
    following = dict(zip(states, states[1:] + [0]))
    # PyThreadState starts with prev, next, interp (3.9-3.15)
    out["ts_next"], out["ts_interp"] = 8, 16
    if u64(ts + 16) != interp or u64(ts + 8) != following.get(ts, -1):
        raise LookupError("the thread state does not start with prev, next, interp")
    out["interp"] = interp
    # the list head is in the first 64 KiB (3.13 puts it behind the eval state)
    room = next((hi - interp for lo, hi in maps.ranges if lo <= interp < hi), 0)
    out["interp_threads"] = scan_for(maps, interp, min(64 << 10, room) // 8 * 8, head)
    out["interp_keep"], out["ts_keep"] = INTERP_KEEP, TS_KEEP
    mem = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        code = _Probe().frames(maps, mem, ts, out)
    finally:
        os.close(mem)
    out["code_type"] = id(types.CodeType)
    out["code_mask"] = TAG_MASK
    out["code_basicsize"] = type(code).__basicsize__
    out["code_itemsize"] = type(code).__itemsize__
    v = sys.version_info[:2]
    for field, attr in (
        ("code_name", "co_name"),
        ("code_qualname", "co_qualname"),
        ("code_filename", "co_filename"),
        ("code_linetable", "co_linetable" if v >= (3, 10) else "co_lnotab"),
        ("code_code", "co_code" if v < (3, 11) else ""),
        ("code_varnames", "co_varnames" if v < (3, 11) else ""),
    ):
        if attr and hasattr(code, attr):
            out[field] = scan_for(maps, id(code), out["code_basicsize"], id(getattr(code, attr)))
    if v >= (3, 11):
        out["code_varnames"] = _localsplusnames(maps, code, out["code_basicsize"])
    out["tuple_items"] = tuple.__basicsize__
    return out


_walk_cache: Optional[dict[str, int]] = None
_walk_failed: Optional[str] = None


def walk_offsets() -> Optional[dict[str, int]]:
    """The offsets of the walk (this module's field names), found once and cached; None if
    any check failed. Cheap (about a millisecond): the GENCORE note records them."""
    global _walk_cache, _walk_failed
    if _walk_cache is None and _walk_failed is None:
        try:
            _walk_cache = _discover_walk()
        except _DOUBTS as e:
            _walk_failed = str(e) or type(e).__name__
    return _walk_cache


def _interp_chain(runtime: int, interp: int) -> dict[str, Any]:
    """Where ``_PyRuntime`` keeps the newest interpreter, where each interpreter keeps the
    next one and its dicts readers check it by (pystack reads the newest one's builtins), from
    the version's layout (its table, or 3.13+'s debug offsets), checked: from the head, the
    chain reaches this thread's interpreter. Else -1: the walk keeps that interpreter only,
    and subinterpreters' threads are left out."""
    out: dict[str, Any] = {"interp_head": -1, "interp_next": -1, "interp_dicts": [-1] * 3}
    fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        mem = LiveMemory(fd)
        layout = build_layout(mem, runtime, sys.hexversion, {})
        head, nxt = layout["runtime.interpreters_head"], layout["interp.next"]
        dicts = [layout.get(f"interp.{k}", -1) for k in INTERP_DICTS]
        p = mem.u64(runtime + head)
        for _ in range(MAX_INTERPRETERS):
            if p == interp:
                return {"interp_head": head, "interp_next": nxt, "interp_dicts": dicts}
            if not p:
                break
            p = mem.u64(p + nxt)
    except (Unreadable, GencoreError, KeyError, struct.error):
        pass
    finally:
        os.close(fd)
    return out


def _discover() -> dict[str, Any]:
    found = walk_offsets()
    if found is None:
        raise LookupError(_walk_failed or "the walk's offsets were not found")
    out = dict(found)
    out["runtime"], out["runtime_size"] = _runtime()
    chain = _interp_chain(out["runtime"], out["interp"])
    record: dict[str, Any] = {k: v for k, v in out.items() if k not in OBJECTS + CODE_FIELDS}
    record["objects"] = [out[k] for k in OBJECTS]
    record["code_fields"] = [out[k] for k in CODE_FIELDS]
    record.update(chain)
    return record


# this module's fields -> the offline layout's keys (gencore.analysis.pylayout)
_NOTE_KEYS = {
    "interp_threads": "interp.threads_head",
    "ts_next": "tstate.next",
    "ts_interp": "tstate.interp",
    "frame_back": "frame.previous",
    "frame_code": "frame.executable",
    "code_name": "code.name",
    "code_qualname": "code.qualname",
    "code_filename": "code.filename",
    "code_linetable": "code.linetable",
    "code_code": "code.code",
    "tuple_items": "tuple.items",
}


def note_layout() -> dict[str, Any]:
    """What the GENCORE note carries for offline readers: ``_PyRuntime``'s address, the main
    interpreter's, and the walk's offsets under the offline layout's names (see
    :mod:`gencore.analysis.pylayout`), or ``{"error": ...}``."""
    runtime = symbol("_PyRuntime") if engine.available() else 0
    if not runtime:
        return {"error": "_PyRuntime is not exported by this interpreter"}
    doc: dict[str, Any] = {"hexversion": sys.hexversion, "runtime": runtime}
    out = walk_offsets()
    if out is None:
        doc["error"] = _walk_failed
        return doc
    doc["interp"] = out["interp"]
    offsets = {key: out[f] for f, key in _NOTE_KEYS.items() if out[f] >= 0}
    v = sys.version_info[:2]
    varnames = "code.varnames" if v < (3, 11) else "code.localsplusnames"
    if out["code_varnames"] >= 0:
        offsets[varnames] = out["code_varnames"]
    if v < (3, 11):
        offsets["tstate.frame"] = out["ts_frame"]
    elif out["cframe_current"] >= 0:
        offsets["tstate.cframe"] = out["ts_frame"]
        offsets["cframe.current_frame"] = out["cframe_current"]
    else:
        offsets["tstate.current_frame"] = out["ts_frame"]
    doc["offsets"] = offsets
    return doc


def layout() -> Optional[dict[str, Any]]:
    """The layout as struct gc_pylayout's fields (by name), or None (then :func:`why_not`
    says why)."""
    global _cache, _failed
    if _cache is None and _failed is None:
        try:
            _cache = _discover()
        except _DOUBTS as e:
            _failed = str(e) or type(e).__name__
    return _cache


def why_not() -> Optional[str]:
    """Why :func:`layout` found nothing, or None."""
    return _failed
