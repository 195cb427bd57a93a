"""The interpreter's objects as a core's memory holds them: the one offline object model.

:class:`PyModel` reads, through a :class:`~gencore.analysis.pylayout.PyLayout`, what every
offline answer needs: interpreters (subinterpreters too), their thread states, each thread's
frames (3.9/3.10 frame objects, 3.11+ interpreter frames with their shim and entry frames),
code objects (names, file, the line of the current instruction from ``co_lnotab``, 3.10's line
table or 3.11+'s location table), locals, and values: ``str``, ``bytes``, ``int``, ``float``,
``bool``, ``None``, containers by type and length, instance attributes (``__dict__``, managed
dicts, inline values, ``__slots__``), dicts, lists, tuples, sets, deques, functions, methods,
cells, coroutines and what they await.

Every read goes through a memory object with the interface of
:class:`~gencore.analysis.memory.CoreMemory` (a core's ``mmap``, or a live process's own memory
for the GENCORE note's subinterpreter stacks) and raises
:class:`~gencore.analysis.memory.Unreadable` where the memory is absent; callers turn that
into an unknown, never a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from .memory import Unreadable
from .pylayout import TAG_MASK, PyLayout
from .pylayout import MemoryLike as Memory

__all__ = ["Code", "Frame", "Interpreter", "Memory", "PyModel", "ThreadState", "TypeInfo"]

MAX_FRAMES = 1 << 22
"""More frames than any thread can have: a longer chain is a damaged (or looping) core."""
MAX_THREADS = 1 << 20
MAX_INTERPRETERS = 1 << 12

# type flags
_INLINE_VALUES = 1 << 2
_MANAGED_DICT = 1 << 4
_HEAPTYPE = 1 << 9
_LONG_SUBCLASS = 1 << 24
_TUPLE_SUBCLASS = 1 << 26
_BYTES_SUBCLASS = 1 << 27
_UNICODE_SUBCLASS = 1 << 28
_DICT_SUBCLASS = 1 << 29
_TYPE_SUBCLASS = 1 << 31
# co_localspluskinds
_CO_FAST_CELL = 0x40
_CO_FAST_FREE = 0x80

_i32 = struct.Struct("<i").unpack_from


@dataclass(frozen=True)
class TypeInfo:
    """A type object: its address, names and the fields instances are read by."""

    address: int
    name: str
    """``tp_name`` for static types (``_asyncio.Task``); ``module.qualname`` for classes."""
    short: str
    """The class's own name (``Task``), as reprs show it."""
    flags: int
    basicsize: int
    dictoffset: int
    heap: bool


@dataclass(frozen=True)
class Code:
    """A code object: what a frame shows and how its lines are found."""

    address: int
    name: str
    qualname: str
    filename: str
    firstlineno: int
    argcount: int
    """Positional and keyword-only parameters (``*args`` and ``**kwargs`` included)."""
    names: tuple[str, ...]
    """The names of the frame's local slots in order (3.11+: ``co_localsplusnames``)."""
    kinds: bytes
    linetable: bytes
    code_start: int
    """3.11+: address of the first instruction; 3.9/3.10: of ``co_code``'s bytes."""


@dataclass(frozen=True)
class Frame:
    """One frame of a thread or a coroutine, innermost first as they are walked."""

    address: int
    code: Optional[Code]
    """None for shim frames and frames whose code is not in the core."""
    line: int
    """The line of the current instruction, 0 where it cannot be told."""
    lasti: int
    """Byte offset of the current instruction in the code (-1 unknown)."""
    is_entry: bool
    """The first Python frame of a C call into the interpreter (pystack's entry frames)."""
    is_shim: bool
    """An interpreter-internal frame, not shown (3.12+)."""
    owner: int


@dataclass(frozen=True)
class ThreadState:
    """A Python thread state."""

    address: int
    interp: int
    interp_id: int
    thread_id: int
    """``threading.get_ident()``: the pthread handle."""
    native_id: Optional[int]
    """The kernel's thread id (TID), where it can be told."""
    frame: int
    """The innermost frame's address (0: no Python frame)."""
    holds_gil: Optional[bool]
    asyncio_running_loop: int = 0
    asyncio_running_task: int = 0


@dataclass(frozen=True)
class Interpreter:
    """An interpreter state (0 is the main interpreter)."""

    address: int
    id: int
    gil_holder: Optional[int]
    """The thread state holding this interpreter's GIL, 0 if none, None if unknown."""
    gc_collecting: Optional[bool]


class PyModel:
    """The interpreter objects of one memory image, read with one layout."""

    def __init__(
        self, mem: Memory, layout: PyLayout, thread_pointers: Optional[dict[int, int]] = None
    ) -> None:
        self.mem = mem
        self.layout = layout
        self.v = layout.version
        self.L = layout.offsets
        self._codes: dict[int, Optional[Code]] = {}
        self._types: dict[int, Optional[TypeInfo]] = {}
        self._shared_keys: dict[int, list[int]] = {}
        self.thread_pointers = thread_pointers or {}
        """TLS pointer (x86_64 ``fs_base``) -> TID, to name 3.9/3.10 threads by their
        pthread handle."""
        self._pthread_tid: Optional[int] = None
        self._slots: dict[tuple[int, str], int] = {}
        self._lines: dict[tuple[int, int], int] = {}
        self._names: dict[int, Optional[str]] = {}
        self.u64 = mem.u64  # type: ignore[method-assign]  # the hottest read, unwrapped

    # -- primitive reads ---------------------------------------------------------------------

    def u64(self, addr: int) -> int:
        """The pointer-sized word at ``addr``."""
        return self.mem.u64(addr)

    def i32(self, addr: int) -> int:
        """The signed 32-bit int at ``addr``."""
        return int(_i32(self.mem.raw(addr, 4))[0])

    def u8(self, addr: int) -> int:
        """The byte at ``addr``."""
        return self.mem.raw(addr, 1)[0]

    def i8(self, addr: int) -> int:
        """The signed byte at ``addr``."""
        b = self.mem.raw(addr, 1)[0]
        return b - 256 if b > 127 else b

    def field(self, obj: int, key: str) -> int:
        """The pointer at ``obj`` + the layout's offset ``key``."""
        return self.mem.u64(obj + self.L[key])

    # -- interpreters and threads ------------------------------------------------------------

    def interpreters(self) -> Iterator[Interpreter]:
        """Every interpreter, the most recently created first (the main one is last)."""
        L = self.L
        interp = self.u64(self.layout.runtime + L["runtime.interpreters_head"])
        seen: set[int] = set()
        while interp and interp not in seen and len(seen) < MAX_INTERPRETERS:
            seen.add(interp)
            yield Interpreter(
                interp,
                self._i64(interp + L["interp.id"]),
                self._gil_holder(interp),
                self._gc_collecting(interp),
            )
            interp = self.u64(interp + L["interp.next"])

    def _i64(self, addr: int) -> int:
        return int(struct.unpack("<q", self.mem.raw(addr, 8))[0])

    def _gil_holder(self, interp: int) -> Optional[int]:
        L = self.L
        try:
            if "runtime.tstate_current" in L:
                return self.u64(self.layout.runtime + L["runtime.tstate_current"])
            gil = self.u64(interp + L["interp.ceval_gil"])
            if not gil:
                return None
            locked = self.mem.u32(gil + L["gil.locked"])
            return self.u64(gil + L["gil.last_holder"]) if locked else 0
        except (Unreadable, KeyError):
            return None

    def _gc_collecting(self, interp: int) -> Optional[bool]:
        try:
            return bool(self.mem.u32(interp + self.L["interp.gc"] + self.L["gc.collecting"]))
        except (Unreadable, KeyError):
            return None

    def thread_states(self, interp: Interpreter) -> Iterator[ThreadState]:
        """The interpreter's thread states, in its list's order (the newest thread first)."""
        L = self.L
        ts = self.u64(interp.address + L["interp.threads_head"])
        seen: set[int] = set()
        while ts and ts not in seen and len(seen) < MAX_THREADS:
            seen.add(ts)
            if self.u64(ts + L["tstate.interp"]) != interp.address:
                raise Unreadable  # not a thread state of this interpreter: a damaged list
            yield self._thread_state(ts, interp)
            ts = self.u64(ts + L["tstate.next"])

    def _thread_state(self, ts: int, interp: Interpreter) -> ThreadState:
        L = self.L
        ident = self.u64(ts + L["tstate.thread_id"])
        if "tstate.native_thread_id" in L:
            native: Optional[int] = self.u64(ts + L["tstate.native_thread_id"]) & 0xFFFFFFFF
        else:
            native = self._tid_of_pthread(ident)
        holder = interp.gil_holder
        loop, task = self._running_loop(ts)
        return ThreadState(
            ts,
            interp.address,
            interp.id,
            ident,
            native or None,
            self._current_frame(ts),
            None if holder is None else holder == ts,
            loop,
            task,
        )

    def _running_loop(self, ts: int) -> tuple[int, int]:
        """The event loop running in this thread and (3.14+) the task it runs, or 0s. 3.13+
        keep them in the thread state; before, ``asyncio`` kept the loop in the thread
        state's dict, under ``__asyncio_running_event_loop__``."""
        L = self.L
        try:
            if "tstate.asyncio_running_loop" in L:
                loop = self.u64(ts + L["tstate.asyncio_running_loop"])
                task_key = L.get("tstate.asyncio_running_task", -1)
                return loop, self.u64(ts + task_key) if task_key >= 0 else 0
            d = self.u64(ts + L["tstate.dict"])
            value = self.dict_get(d, "__asyncio_running_event_loop__") if d else 0
            kind = self.type_name(value) if value else ""
            if kind == "tuple":
                items = self.tuple_items(value, 2)
                value = items[0] if items else 0
            elif kind.endswith("_RunningLoopHolder"):  # 3.9-3.11: {PyObject_HEAD, rl_loop}
                value = self.u64(value + 16)
            if value and self.type_name(value) == "NoneType":
                value = 0
            return value, 0
        except (Unreadable, KeyError, struct.error, ValueError):
            return 0, 0

    def _current_frame(self, ts: int) -> int:
        L = self.L
        try:
            if "tstate.cframe" in L:
                cframe = self.u64(ts + L["tstate.cframe"])
                return self.u64(cframe + L["cframe.current_frame"]) if cframe else 0
            key = "tstate.current_frame" if "tstate.current_frame" in L else "tstate.frame"
            return self.u64(ts + L[key])
        except Unreadable:
            return 0

    def _tid_of_pthread(self, ident: int) -> Optional[int]:
        """3.9/3.10 record only the pthread handle: the thread whose TLS pointer it is, else
        the TID in glibc's ``struct pthread`` (its offset learnt from the threads whose
        handle is known). A kernel-method core (a forked copy) holds the other threads'
        structures, with the TIDs they had in the process."""
        if ident in self.thread_pointers:
            return self.thread_pointers[ident]
        if self._pthread_tid is None:
            self._pthread_tid = self._find_pthread_tid() or -1
        if self._pthread_tid < 0:
            return None
        try:
            tid = self.mem.u32(ident + self._pthread_tid)
        except Unreadable:
            return None
        return tid if 0 < tid < 1 << 22 else None

    def _find_pthread_tid(self) -> Optional[int]:
        candidates: Optional[set[int]] = None
        for pointer, tid in self.thread_pointers.items():
            try:
                words = struct.unpack("<256I", self.mem.raw(pointer, 1024))
            except Unreadable:
                continue
            found = {4 * i for i, w in enumerate(words) if w == tid}
            candidates = found if candidates is None else candidates & found
        return min(candidates) if candidates else None

    # -- frames ------------------------------------------------------------------------------

    def frames(self, first: int, limit: int = MAX_FRAMES) -> Iterator[Frame]:
        """The frame chain from ``first`` outwards (innermost first), shims included."""
        walk = self._frame_objects if self.v < (3, 11) else self._interpreter_frames
        return walk(first, limit)

    def _frame_objects(self, f: int, limit: int) -> Iterator[Frame]:
        L = self.L
        seen: set[int] = set()
        while f and f not in seen and len(seen) < limit:
            seen.add(f)
            code = self.code(self.u64(f + L["frame.executable"]))
            lasti = self.i32(f + L["frame.lasti"])
            if self.v >= (3, 10) and lasti >= 0:
                lasti *= 2  # 3.10 counts instructions
            line = self._line(code, lasti) if code is not None else 0
            yield Frame(f, code, line, lasti, True, False, 0)
            f = self.u64(f + L["frame.previous"])

    def _interpreter_frames(self, f: int, limit: int) -> Iterator[Frame]:
        L = self.L
        seen: set[int] = set()
        shims = {L.get(k, -99) for k in ("frame.owned_by_cstack", "frame.owned_by_interpreter")}
        keys = ("frame.owner", "frame.executable", "frame.instr_ptr", "frame.previous")
        at_owner, at_exe, at_instr, at_prev = (L[k] for k in keys)
        at_entry = L.get("frame.is_entry", -1)
        size = max(at_owner, at_exe, at_instr, at_prev, at_entry) + 8
        unpack = struct.Struct("<Q").unpack_from
        pending: Optional[Frame] = None
        while f and f not in seen and len(seen) < limit:
            seen.add(f)
            head = self.mem.raw(f, size)  # one read for the frame's header
            owner = head[at_owner]
            shim = self.v >= (3, 12) and owner in shims
            executable = unpack(head, at_exe)[0] & TAG_MASK
            code = None if shim or not executable else self.code(executable)
            lasti, line = -1, 0
            if code is not None:
                lasti = unpack(head, at_instr)[0] - code.code_start
                line = self._line(code, lasti)
            entry = bool(head[at_entry]) if at_entry >= 0 else False
            # a frame whose code is not in the core is shown as unknown, not skipped
            frame = Frame(f, code, line, lasti, entry, shim or not executable, owner)
            if pending is not None:
                # 3.12+: a frame is an entry frame when the next one out is a shim
                yield _with_entry(pending, pending.is_entry or (shim and self.v >= (3, 12)))
            elif shim and self.v >= (3, 12):
                frame = _with_entry(frame, True)  # the innermost frame is itself a shim
            pending = frame
            f = unpack(head, at_prev)[0]
        if pending is not None:
            yield pending

    def stack_anchor(self, first: int) -> int:
        """Where a thread's Python stack begins on its C stack: the address of its first
        entry (3.11) or shim (3.12+) frame, else the innermost frame's. A thread running in
        several interpreters has one thread state in each; the outermost has the highest
        anchor (pystack orders them so)."""
        if self.v < (3, 11) or not first:
            return first
        for frame in self.frames(first, 4096):
            if (frame.is_shim and frame.code is None and self.v >= (3, 12)) or (
                self.v < (3, 12) and frame.is_entry
            ):
                return frame.address
        return first

    # -- code objects ------------------------------------------------------------------------

    def code(self, addr: int) -> Optional[Code]:
        """The code object at ``addr`` (cached), or None if it is not one or not readable."""
        try:
            return self._codes[addr]
        except KeyError:
            pass
        try:
            code: Optional[Code] = self._load_code(addr) if addr else None
        except (Unreadable, UnicodeDecodeError, struct.error, ValueError):
            code = None
        if len(self._codes) > 1 << 16:
            self._codes.clear()
        self._codes[addr] = code
        return code

    def _load_code(self, addr: int) -> Optional[Code]:
        info = self.type_info(self.u64(addr + 8))
        if info is None or info.name != "code":
            return None
        L = self.L
        name = self.str_value(self.field(addr, "code.name")) or "???"
        filename = self.str_value(self.field(addr, "code.filename")) or "???"
        qual = self.str_value(self.field(addr, "code.qualname")) if "code.qualname" in L else None
        first = self.i32(addr + L["code.firstlineno"])
        nargs = self.i32(addr + L["code.argcount"])
        if "code.kwonlyargcount" in L:
            nargs += self.i32(addr + L["code.kwonlyargcount"])
        flags = self.i32(addr + L["code.flags"])
        nargs += bool(flags & 0x4) + bool(flags & 0x8)  # CO_VARARGS, CO_VARKEYWORDS
        linetable = self.bytes_value(self.field(addr, "code.linetable"), 1 << 24) or b""
        names, kinds = self._local_names(addr)
        if self.v >= (3, 11):
            start = addr + L["code.code_adaptive"]
        else:
            start = self.field(addr, "code.code") + L["bytes.value"]
        return Code(
            addr, name, qual or name, filename, first, nargs, names, kinds, linetable, start
        )

    def _local_names(self, addr: int) -> tuple[tuple[str, ...], bytes]:
        """The names of a code's local slots and their kinds; none where the core left them
        out (a capped core keeps what stacks need, not always what locals need)."""
        try:
            if self.v >= (3, 11):
                names = self.tuple_strings(self.field(addr, "code.localsplusnames"))
                kinds = self.bytes_value(self.field(addr, "code.localspluskinds"), 1 << 16)
                return names, kinds or b""
            keys = ("code.varnames", "code.cellvars", "code.freevars")
            return tuple(n for k in keys for n in self.tuple_strings(self.field(addr, k))), b""
        except Unreadable:
            return (), b""

    def _line(self, code: Code, lasti: int) -> int:
        """The line of the instruction at byte offset ``lasti``, the way pystack reads it."""
        if lasti < 0:
            return code.firstlineno
        if self.v >= (3, 11):
            key = (code.address, lasti)
            line = self._lines.get(key)
            if line is None:
                line = _location_line(code.linetable, lasti // 2, code.firstlineno)
                if len(self._lines) < 1 << 18:
                    self._lines[key] = line
            return line
        table, line = code.linetable, code.firstlineno
        if self.v >= (3, 10):
            addr = 0
            for i in range(0, len(table) - 1, 2):
                addr += table[i]
                delta = table[i + 1] - 256 if table[i + 1] > 127 else table[i + 1]
                line += 0 if delta == -128 else delta
                if addr > lasti:
                    break
            return line
        addr = 0
        for i in range(0, len(table) - 1, 2):
            addr += table[i]
            if addr > lasti:
                break
            line += table[i + 1] - 256 if table[i + 1] > 127 else table[i + 1]
        return line

    def locals(self, frame: Frame) -> list[tuple[str, int, bool]]:
        """``(name, value address, is_argument)`` of the frame's bound locals, in slot order
        (cells read through to their contents)."""
        code = frame.code
        if code is None:
            return []
        base = frame.address + self.L["frame.localsplus"]
        n = min(len(code.names), 4096)
        out: list[tuple[str, int, bool]] = []
        slots = self.mem.raw(base, 8 * n) if n else b""
        for i in range(n):
            value = struct.unpack_from("<Q", slots, 8 * i)[0] & TAG_MASK
            if not value:
                continue
            kind = code.kinds[i] if i < len(code.kinds) else 0
            is_cell = kind & (_CO_FAST_CELL | _CO_FAST_FREE) or (
                self.v < (3, 11) and i >= len(code.names) - self._cells(code)
            )
            if is_cell and self.type_name(value) == "cell":
                value = self.u64(value + self.L["cell.ref"])
                if not value:
                    continue
            out.append((code.names[i], value, i < code.argcount))
        return out

    def _cells(self, code: Code) -> int:
        """3.9/3.10: how many of the names are cell and free variables (after the locals)."""
        try:
            nlocals = self.i32(code.address + self.L["code.nlocals"])
        except (Unreadable, KeyError):
            return 0
        return max(len(code.names) - nlocals, 0)

    # -- types -------------------------------------------------------------------------------

    def type_info(self, addr: int) -> Optional[TypeInfo]:
        """The type object at ``addr`` (cached), or None if it is not a readable type."""
        try:
            return self._types[addr]
        except KeyError:
            pass
        try:
            info = self._load_type(addr) if addr else None
        except (Unreadable, UnicodeDecodeError, struct.error, ValueError):
            info = None
        known = self.layout.types.get(addr)
        if known is not None and (info is None or info.name != known):
            info = TypeInfo(addr, known, known, 0, 0, 0, False)  # its memory left out
        self._types[addr] = info
        return info

    def _load_type(self, addr: int) -> Optional[TypeInfo]:
        L = self.L
        meta = self.u64(addr + 8)
        # a type's type is `type` or a metaclass (whose type is `type`, whose type is itself)
        if not (meta and (self.u64(meta + 8) == meta or self.u64(self.u64(meta + 8) + 8))):
            return None
        flags = self.u64(addr + L["type.flags"])
        tp_name = self._c_string(self.u64(addr + L["type.name"]), 200)
        short = tp_name.rpartition(".")[2]
        name = tp_name
        if flags & _HEAPTYPE:
            qual = self.str_value(self.u64(addr + L["heaptype.qualname"])) or tp_name
            try:
                module = self.str_value(
                    self.dict_get(self.u64(addr + L["type.dict"]), "__module__")
                )
            except Unreadable:
                module = None
            name = f"{module}.{qual}" if module and module != "builtins" else qual
        basic = self.u64(addr + L["type.basicsize"])
        dictoffset = self._i64(addr + L["type.dictoffset"])
        return TypeInfo(addr, name, short, flags, basic, dictoffset, bool(flags & _HEAPTYPE))

    def _c_string(self, addr: int, limit: int) -> str:
        data = b""
        while len(data) < limit:
            chunk = self.mem.raw(addr + len(data), 8)
            end = chunk.find(b"\0")
            if end >= 0:
                return (data + chunk[:end]).decode("utf-8", "replace")
            data += chunk
        raise Unreadable

    def type_of(self, obj: int) -> Optional[TypeInfo]:
        """The type of the object at ``obj``."""
        return self.type_info(self.u64(obj + 8))

    def type_name(self, obj: int) -> str:
        """The name of ``obj``'s type (``?`` where it cannot be read)."""
        try:
            info = self.type_of(obj)
        except Unreadable:
            return "?"
        return info.name if info is not None else "?"

    def mro(self, tp: int) -> list[int]:
        """The type's method resolution order (type addresses), or its base chain."""
        out: list[int] = []
        try:
            mro = self.u64(tp + self.L["type.mro"])
            if mro:
                return [int(x) for x in self.tuple_items(mro)]
            while tp and len(out) < 64:
                out.append(tp)
                tp = self.u64(tp + self.L["type.base"])
        except Unreadable:
            pass
        return out

    def is_instance(self, obj: int, names: tuple[str, ...]) -> Optional[str]:
        """The first class in ``obj``'s MRO named one of ``names``, or None."""
        try:
            for tp in self.mro(self.u64(obj + 8)):
                info = self.type_info(tp)
                if info is not None and info.name in names:
                    return info.name
        except Unreadable:
            return None
        return None

    # -- values ------------------------------------------------------------------------------

    def str_value(self, addr: int, limit: int = 1 << 16) -> Optional[str]:
        """The text of the str at ``addr`` (compact strings; at most ``limit`` characters),
        or None if it is not one."""
        if not addr:
            return None
        L = self.L
        length = self.u64(addr + 16)
        state = self.mem.u32(addr + L["str.state"])
        kind, compact, ascii_ = (state >> 2) & 7, state & 32, state & 64
        if not compact or kind not in (1, 2, 4) or length > 1 << 30:
            return None
        n = min(length, limit)
        if ascii_:
            return self.mem.raw(addr + L["str.ascii_size"], n).decode("ascii", "replace")
        data = self.mem.raw(addr + L["str.compact_size"], n * kind)
        return data.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind], "replace")

    def bytes_value(self, addr: int, limit: int = 1 << 16) -> Optional[bytes]:
        """The first ``limit`` bytes of the bytes object at ``addr``."""
        if not addr:
            return None
        n = self.u64(addr + 16)
        if n > 1 << 32:
            return None
        return self.mem.raw(addr + self.L["bytes.value"], min(n, limit))

    def int_value(self, addr: int) -> Optional[int]:
        """The value of the int at ``addr`` (None past 20 digits of 30 bits)."""
        L = self.L
        digits_at = addr + L["long.digits"]
        if "long.tag" in L:
            tag = self.u64(addr + L["long.tag"])
            n, sign = tag >> 3, (tag & 3)
            negative = sign == 2
        else:
            size = self._i64(addr + 16)
            n, negative = abs(size), size < 0
        if n > 20:
            return None
        raw = self.mem.raw(digits_at, 4 * n)
        value = 0
        for i in range(n - 1, -1, -1):
            value = (value << 30) | struct.unpack_from("<I", raw, 4 * i)[0]
        return -value if negative else value

    def float_value(self, addr: int) -> float:
        """The value of the float at ``addr``."""
        return float(struct.unpack("<d", self.mem.raw(addr + self.L["float.value"], 8))[0])

    def tuple_items(self, addr: int, limit: int = 1 << 20) -> list[int]:
        """The item addresses of a tuple (the first ``limit``)."""
        n = self.u64(addr + 16)
        if n > limit:
            n = limit
        raw = self.mem.raw(addr + self.L["tuple.items"], 8 * n) if n else b""
        return list(struct.unpack(f"<{n}Q", raw))

    def tuple_strings(self, addr: int) -> tuple[str, ...]:
        """A tuple of str as text (unreadable items as ``?``)."""
        if not addr:
            return ()
        return tuple(self.str_value(i, 256) or "?" for i in self.tuple_items(addr, 1 << 16))

    def list_items(self, addr: int, limit: int = 1 << 20) -> list[int]:
        """The item addresses of a list (the first ``limit``)."""
        n = min(self.u64(addr + 16), limit)
        items = self.u64(addr + self.L["list.items"])
        raw = self.mem.raw(items, 8 * n) if n else b""
        return list(struct.unpack(f"<{n}Q", raw))

    def set_items(self, addr: int, limit: int = 1 << 20) -> list[int]:
        """The keys of a set or frozenset."""
        L = self.L
        mask = self.u64(addr + L.get("set.mask", 32))
        table = self.u64(addr + L.get("set.table", 40))
        if mask >= 1 << 26:
            raise Unreadable
        raw = self.mem.raw(table, 16 * (mask + 1))
        out: list[int] = []
        for i in range(mask + 1):
            key, h = struct.unpack_from("<Qq", raw, 16 * i)
            if key and h != -1 and len(out) < limit:
                out.append(key)
        return out  # a deleted slot holds the dummy key with hash -1

    def deque_items(self, addr: int, limit: int = 1 << 16) -> list[int]:
        """The items of a ``collections.deque`` (64-item blocks, linked both ways)."""
        n = self.u64(addr + 16)
        block, index = self.u64(addr + 24), self._i64(addr + 40)
        out: list[int] = []
        while block and len(out) < min(n, limit):
            take = min(64 - index, n - len(out))
            raw = self.mem.raw(block + 8 + 8 * index, 8 * take)
            out.extend(struct.unpack(f"<{take}Q", raw))
            block, index = self.u64(block + 8 + 8 * 64), 0
        return out

    def length(self, addr: int) -> Optional[int]:
        """``len()`` of a container the model knows, else None."""
        name = self.type_name(addr)
        if name in ("list", "tuple", "bytes", "bytearray", "str", "collections.deque", "deque"):
            return self.u64(addr + 16)
        if name in ("dict", "set", "frozenset") or self.is_instance(addr, ("dict",)):
            return self.u64(addr + self.L[("set.used" if "set" in name else "dict.used")])
        return None

    # -- dicts and attributes ----------------------------------------------------------------

    def dict_items(self, d: int) -> list[tuple[int, int]]:
        """The (key, value) addresses of a dict, split and combined tables alike."""
        L = self.L
        keys, values = self.u64(d + L["dict.keys"]), self.u64(d + L["dict.values"])
        entries = self._keys_entries(keys)
        if not values:
            return [(k, v) for k, v in entries if k and v]
        if self.v >= (3, 13):
            count = min(self.mem.raw(values, 2)[1], len(entries))
            vals = struct.unpack(f"<{count}Q", self.mem.raw(values + 8, 8 * count))
        else:
            count = len(entries)
            vals = struct.unpack(f"<{count}Q", self.mem.raw(values, 8 * count))
        return [(k, v) for (k, _), v in zip(entries, vals) if k and v]

    def _keys_entries(self, keys: int) -> list[tuple[int, int]]:
        """(key, value) of every used entry of a dict keys object (values are 0 in shared
        keys)."""
        if self.v >= (3, 11):
            hdr = self.mem.raw(keys, 32)
            log2_index, kind = hdr[9], hdr[10]
            (n,) = struct.unpack_from("<q", hdr, 24)
            esize = 24 if kind == 0 else 16
            start = keys + 32 + (1 << log2_index)
        else:
            size, n = self._i64(keys + 8), self._i64(keys + 32)
            if not 0 < size <= 1 << 26:
                raise Unreadable
            ix = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
            esize, start = 24, keys + 40 + size * ix
        if not 0 <= n <= 1 << 22:
            raise Unreadable
        raw = self.mem.raw(start, esize * n) if n else b""
        step = esize // 8
        words = struct.unpack(f"<{step * n}Q", raw)
        return [(words[i + step - 2], words[i + step - 1]) for i in range(0, len(words), step)]

    def dict_get(self, d: int, key: str) -> int:
        """The value for the str ``key`` in the dict at ``d``, or 0."""
        if not d:
            return 0
        for k, v in self.dict_items(d):
            if self._key(k) == key:
                return v
        return 0

    def _key(self, k: int) -> Optional[str]:
        """A dict key's text (cached: attribute and module names are shared strings)."""
        try:
            return self._names[k]
        except KeyError:
            pass
        text = self.str_value(k, 256)
        if len(self._names) < 1 << 16:
            self._names[k] = text
        return text

    def instance_dict(self, obj: int) -> tuple[int, list[tuple[int, int]]]:
        """An instance's attributes: (its ``__dict__`` address or 0, the (key, value) pairs)."""
        info = self.type_of(obj)
        if info is None:
            return 0, []
        if info.dictoffset > 0:
            d = self.u64(obj + info.dictoffset)
            return d, (self.dict_items(d) if d else [])
        if not (self.v >= (3, 11) and info.flags & _MANAGED_DICT):
            return 0, []
        if self.v >= (3, 13):
            d = self.u64(obj - 24)
            if d:
                return d, self.dict_items(d)
            if not info.flags & _INLINE_VALUES:
                return 0, []
            hdr = self.mem.raw(obj + info.basicsize, 4)
            if not hdr[3]:
                return 0, []
            values = obj + info.basicsize + 8
            count = hdr[1]
        elif self.v >= (3, 12):
            dorv = self.u64(obj - 24)
            if not dorv & 1:
                return dorv, (self.dict_items(dorv) if dorv else [])
            values, count = dorv + 1, -1
        else:
            d = self.u64(obj - 24)
            if d:
                return d, self.dict_items(d)
            values, count = self.u64(obj - 32), -1
        if not values:
            return 0, []
        keys = self._shared_keys_of(info.address)
        if count < 0:
            count = len(keys)
        count = min(count, len(keys))
        vals = struct.unpack(f"<{count}Q", self.mem.raw(values, 8 * count)) if count else ()
        return 0, [(k, v) for k, v in zip(keys, vals) if k and v]

    def _shared_keys_of(self, tp: int) -> list[int]:
        keys = self._shared_keys.get(tp)
        if keys is None:
            cached = self.u64(tp + self.L["heaptype.cached_keys"])
            keys = [k for k, _ in self._keys_entries(cached)] if cached else []
            self._shared_keys[tp] = keys
        return keys

    def attr(self, obj: int, name: str) -> Optional[int]:
        """The value (address) of attribute ``name`` of ``obj``: its ``__dict__``, a managed
        dict or inline values, or a ``__slots__`` member; None where it has none."""
        _, items = self.instance_dict(obj)
        for k, v in items:
            if self._key(k) == name:
                return v
        tp = self.u64(obj + 8)
        offset = self._slots.get((tp, name))
        if offset is None:
            offset = self._slots[(tp, name)] = self._slot_offset(tp, name)
        if offset <= 0:
            return None
        return self.u64(obj + offset) or None

    def _slot_offset(self, tp: int, name: str) -> int:
        """Where a class keeps the ``__slots__`` member ``name`` (0: it has none)."""
        for t in self.mro(tp):
            info = self.type_info(t)
            if info is None or not info.heap:
                continue
            descr = self.dict_get(self.u64(t + self.L["type.dict"]), name)
            if descr and self.type_name(descr) == "member_descriptor":
                member = self.u64(descr + self.L["member_descr.member"])
                offset = self._i64(member + self.L["member_def.offset"])
                return offset if 0 < offset < 1 << 16 else 0
        return 0

    # -- generators and coroutines -----------------------------------------------------------

    def gen_frame(self, gen: int) -> int:
        """The frame of a generator, coroutine or async generator (0 once it finished)."""
        L = self.L
        if self.v < (3, 11):
            return self.u64(gen + L["gen.frame"])
        state = self.i8(gen + L["gen.frame_state"])
        if state >= L["gen.state_finished"] and state != L["gen.state_executing"]:
            return 0
        return gen + L["gen.iframe"]

    def gen_running(self, gen: int) -> bool:
        """Whether the generator's frame is executing now (it is on a thread's stack)."""
        L = self.L
        if self.v < (3, 10):
            return bool(self.u8(gen + L["gen.running"]))
        if self.v < (3, 11):
            f = self.u64(gen + L["gen.frame"])
            return bool(f) and self.i8(f + L["frame.state"]) == 0
        return self.i8(gen + L["gen.frame_state"]) == L["gen.state_executing"]

    def gen_await(self, gen: int) -> int:
        """What a suspended coroutine or generator awaits (``cr_await``/``gi_yieldfrom``),
        or 0."""
        return self.gen_info(gen)[2]

    def gen_info(self, gen: int) -> tuple[int, bool, int]:
        """A generator's or coroutine's frame (0 once finished), whether it is executing,
        and what it awaits (0: nothing), from one read of its state."""
        L = self.L
        if self.v < (3, 11):
            f, running = self.gen_frame(gen), self.gen_running(gen)
            return f, running, 0 if not f or running else self._await_310(f)
        state = self.i8(gen + L["gen.frame_state"])
        executing = state == L["gen.state_executing"]
        if state >= L["gen.state_finished"] and not executing:
            return 0, False, 0
        f = gen + L["gen.iframe"]
        if executing:
            return f, True, 0
        if self.v >= (3, 13):
            suspended_in = (L["gen.state_yield_from"], L.get("gen.state_yield_from2", -99))
            return f, False, self._stack_top(f) if state in suspended_in else 0
        if state == L["gen.state_created"]:
            return f, False, 0
        nxt = self.mem.raw(self.u64(f + L["frame.instr_ptr"]) + 2, 2)
        if nxt[0] not in (L["op.resume"], L["op.resume2"]) or nxt[1] < 2:
            return f, False, 0
        return f, False, self._stack_top(f)

    def _await_310(self, f: int) -> int:
        """3.9/3.10: the frame is suspended in YIELD_FROM; its stack top is what it awaits."""
        L = self.L
        code = self.code(self.u64(f + L["frame.executable"]))
        lasti = self.i32(f + L["frame.lasti"])
        if code is None or lasti < 0:
            return 0
        at = code.code_start + (lasti + 1) * 2 if self.v >= (3, 10) else code.code_start + lasti + 2
        if self.u8(at) != L["op.yield_from"]:
            return 0
        return self._stack_top(f)

    def _stack_top(self, f: int) -> int:
        L = self.L
        if "frame.stackpointer" in L:
            sp = self.u64(f + L["frame.stackpointer"])
            if not sp:
                return 0
            # 3.15 keeps a NULL reference above the awaitable while it is suspended in it
            top = self.u64(sp - 8) & TAG_MASK
            return top or self.u64(sp - 16) & TAG_MASK
        if "frame.stackdepth" in L:  # 3.10
            depth = self.i32(f + L["frame.stackdepth"])
            return self.u64(self.u64(f + L["frame.valuestack"]) + 8 * (depth - 1)) if depth else 0
        if self.v < (3, 10):
            top = self.u64(f + L["frame.stacktop"])
            return self.u64(top - 8) if top else 0
        top = self.i32(f + L["frame.stacktop"])
        return self.u64(f + L["frame.localsplus"] + 8 * (top - 1)) if top > 0 else 0

    # -- short reprs -------------------------------------------------------------------------

    def short_repr(self, obj: int, limit: int = 80) -> str:
        """A short text for a local's value: simple values in full (shortened past
        ``limit``), containers as type and length, anything else as ``<type at 0x…>``."""
        try:
            return self._short_repr(obj, limit)
        except (Unreadable, struct.error, ValueError, UnicodeDecodeError):
            return f"<unreadable at {obj:#x}>"

    def _short_repr(self, obj: int, limit: int) -> str:
        info = self.type_of(obj)
        if info is None:
            return f"<unknown at {obj:#x}>"
        name = info.name
        if name == "NoneType":
            return "None"
        if name == "bool":
            return "True" if self.int_value(obj) else "False"
        if name == "int" or (info.flags & _LONG_SUBCLASS and name != "bool"):
            value = self.int_value(obj)
            return _cut(str(value), limit) if value is not None else "<int (big)>"
        if name == "float":
            return repr(self.float_value(obj))
        if name == "str":
            text = self.str_value(obj, limit + 1)
            return _cut(repr(text), limit) if text is not None else "<str>"
        if name == "bytes":
            data = self.bytes_value(obj, limit + 1)
            return _cut(repr(data), limit) if data is not None else "<bytes>"
        n = self.length(obj)
        if n is not None:
            return f"<{name} of {n}>"
        return f"<{info.short} at {obj:#x}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _with_entry(frame: Frame, entry: bool) -> Frame:
    if frame.is_entry == entry:
        return frame
    return Frame(
        frame.address, frame.code, frame.line, frame.lasti, entry, frame.is_shim, frame.owner
    )


def _varint(table: bytes, i: int) -> tuple[int, int]:
    b = table[i]
    value, shift = b & 63, 0
    while b & 64:
        i += 1
        b = table[i]
        shift += 6
        value |= (b & 63) << shift
    return value, i + 1


def _location_line(table: bytes, addrq: int, line: int) -> int:
    """3.11+: the line of code unit ``addrq`` in a location table (``co_linetable``)."""
    i, addr, n = 0, 0, len(table)
    while i < n:
        first = table[i]
        i += 1
        code, end = (first >> 3) & 15, addr + (first & 7) + 1
        if code == 14 or code == 13:  # long form, or no columns: a signed line delta
            value, i = _varint(table, i)
            line += -(value >> 1) if value & 1 else value >> 1
            if code == 14:
                for _ in range(3):
                    _, i = _varint(table, i)
        elif 10 <= code <= 12:  # one line: delta 0-2, then two column bytes
            line += code - 10
            i += 2
        elif code < 10:  # short form: same line, one column byte
            i += 1
        if addr <= addrq < end:
            return line
        addr = end
    return line
