"""Where a core's interpreter keeps its state: the one layout every offline answer reads by.

Stacks, locals, asyncio tasks and the heap walk all read CPython's structures from a core's
memory with no interpreter attached. They need two things: the address of ``_PyRuntime`` (the
root of every interpreter, thread state and frame) and the offsets of the fields they follow.
:func:`find_layout` takes them, field by field, from the best source the core offers:

1. the GENCORE note, where gencore wrote the core: the runtime's address and the offsets the
   process found and checked in itself (:mod:`gencore.capture.caplayout`);
2. CPython's own ``_Py_DebugOffsets`` (3.13 and later), at the start of ``_PyRuntime``, found
   from the ``_PyRuntime`` symbol of the executable or ``libpython`` the core names, or by its
   cookie ``xdebugpy`` in their data;
3. per-version tables for CPython 3.9-3.15 on 64-bit Linux, measured with ``offsetof`` against
   each version's own headers (``scripts/pylayout-tables`` prints them again).

The first source that has a field wins; what the layout could not learn stays absent, and a
reader that needs it reports the answer as unknown. :attr:`PyLayout.sources` says where each
field came from.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ..errors import PythonUnavailableError
from .memory import BLOCK, CoreMemory, Unreadable, unpack_q

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = [
    "TABLES",
    "MemoryLike",
    "ProcessMemory",
    "PyLayout",
    "RawMemory",
    "build_layout",
    "debug_offsets",
    "find_layout",
]

DEBUG_COOKIE = b"xdebugpy"
TAG_MASK = ~7 & ((1 << 64) - 1)
"""3.14+ tags the low bits of stack references (``_PyStackRef``); objects are 8-aligned."""


class MemoryLike(Protocol):
    """What the layout and the object model read memory through: a core's
    (:class:`~gencore.analysis.memory.CoreMemory`) or a live process's own."""

    def u64(self, addr: int) -> int: ...
    def u32(self, addr: int) -> int: ...
    def raw(self, addr: int, n: int) -> bytes: ...
    def readable(self, addr: int, n: int = 8) -> bool: ...


# Each version's table lists what changed since the previous version's ("key=-": gone).
_TABLE_TEXT: dict[tuple[int, int], str] = {
    (3, 9): """
        bytes.value=32 cell.ref=16 cfunction.self=24 code.argcount=16 code.cellvars=88
        code.code=48 code.filename=104 code.firstlineno=40 code.flags=36
        code.freevars=80 code.kwonlyargcount=24 code.linetable=120 code.name=112
        code.nlocals=28 code.varnames=72 dict.keys=32 dict.used=16 dict.values=40
        float.value=16 frame.executable=32 frame.lasti=104 frame.localsplus=360
        frame.previous=24 frame.stacktop=72 frame.valuestack=64 func.closure=48
        func.code=16 func.qualname=104 fut.callback0=24 fut.callbacks=40 fut.context0=32
        fut.exception=48 fut.loop=16 fut.result=56 fut.state=80 gc.collecting=200
        gc.generation_size=24 gc.generations=24 gc.permanent=104 gen.frame=16
        gen.name=48 gen.qualname=56 gen.running=24 heaptype.cached_keys=864
        heaptype.name=840 heaptype.qualname=856 interp.builtins=880 interp.gc=616
        interp.id=24 interp.modules=856 interp.next=0 interp.sysdict=872
        interp.threads_head=8 list.items=24 long.digits=24 member_def.offset=16
        member_descr.member=40 method.func=16 method.self=24 module.dict=16
        op.yield_from=72 runtime.interpreters_head=32 runtime.tstate_current=568
        set.mask=32 set.table=40 set.used=24 str.ascii_size=48 str.compact_size=72
        str.state=32 task.coro=152 task.fut_waiter=144 task.name=160 tstate.dict=152
        tstate.frame=24 tstate.interp=16 tstate.next=8 tstate.prev=0
        tstate.thread_id=176 tuple.items=24 type.base=256 type.basicsize=32
        type.dict=264 type.dictoffset=288 type.flags=168 type.mro=344 type.name=24
        wakeup.task=16
    """,
    (3, 10): """
        frame.lasti=96 frame.localsplus=352 frame.stackdepth=80 frame.state=108
        func.closure=72 func.code=48 func.qualname=40 fut.result=64 fut.state=88
        gen.name=40 gen.qualname=48 heaptype.cached_keys=872 heaptype.name=848
        heaptype.qualname=864 task.coro=160 task.fut_waiter=152 task.name=168
        wakeup.task=24 frame.stacktop=- gen.running=-
    """,
    (3, 11): """
        cframe.current_frame=8 code.argcount=56 code.code_adaptive=184 code.filename=112
        code.firstlineno=72 code.flags=48 code.kwonlyargcount=64 code.linetable=136
        code.localspluskinds=104 code.localsplusnames=96 code.name=120
        code.nlocalsplus=76 code.qualname=128 frame.instr_ptr=56 frame.is_entry=68
        frame.localsplus=72 frame.owned_by_generator=1 frame.owned_by_thread=0
        frame.owner=69 frame.previous=48 frame.stacktop=64 gen.frame_state=75
        gen.iframe=80 gen.name=32 gen.qualname=40 gen.state_created=-2
        gen.state_executing=0 gen.state_finished=1 gen.state_suspended=-1
        interp.builtins=912 interp.gc=648 interp.id=48 interp.modules=888
        interp.sysdict=904 interp.threads_head=16 op.resume=151 op.resume2=150
        runtime.interpreters_head=40 runtime.tstate_current=576 task.coro=136
        task.fut_waiter=128 task.name=144 tstate.cframe=56 tstate.dict=128
        tstate.native_thread_id=160 tstate.thread_id=152 code.cellvars=- code.code=-
        code.freevars=- code.nlocals=- code.varnames=- frame.lasti=- frame.stackdepth=-
        frame.state=- frame.valuestack=- gen.frame=- op.yield_from=- tstate.frame=-
    """,
    (3, 12): """
        cframe.current_frame=0 code.argcount=52 code.code_adaptive=192
        code.firstlineno=68 code.kwonlyargcount=60 code.nlocalsplus=72
        frame.executable=0 frame.owned_by_cstack=3 frame.owner=70 frame.previous=8
        gen.frame_state=67 gen.iframe=72 gen.name=24 gen.qualname=32 gil.last_holder=8
        gil.locked=16 heaptype.cached_keys=880 heaptype.module=888 heaptype.name=856
        heaptype.qualname=872 interp.builtins=360 interp.ceval_gil=384 interp.gc=112
        interp.id=8 interp.modules=944 interp.sysdict=352 interp.threads_head=72
        long.tag=16 op.resume2=240 str.ascii_size=40 str.compact_size=56 tstate.dict=112
        tstate.native_thread_id=144 tstate.thread_id=136 frame.is_entry=-
        runtime.tstate_current=-
    """,
    (3, 13): """
        code.code_adaptive=200 fut.state=96 gen.state_created=-3 gen.state_suspended=-2
        gen.state_yield_from=-1 interp.builtins=7648 interp.ceval_gil=16 interp.gc=7400
        interp.id=7272 interp.modules=7656 interp.next=7264 interp.sysdict=7640
        interp.threads_head=7344 runtime.interpreters_head=632 task.coro=120
        task.fut_waiter=112 task.name=128 tstate.asyncio_running_loop=304
        tstate.current_frame=72 tstate.native_thread_id=160 tstate.thread_id=152
        cframe.current_frame=- op.resume=- op.resume2=- tstate.cframe=- tstate.dict=-
    """,
    (3, 14): """
        code.code_adaptive=208 frame.localsplus=80 frame.owned_by_cstack=4
        frame.owned_by_interpreter=3 frame.owner=74 frame.stackpointer=64 fut.state=104
        gc.collecting=192 gc.permanent=96 interp.asyncio_tasks_head=10880
        interp.builtins=7680 interp.gc=7408 interp.id=7280 interp.modules=7688
        interp.next=7272 interp.sysdict=7672 runtime.interpreters_head=808
        task.awaited_by=96 task.awaited_by_is_set=109 task.coro=128 task.fut_waiter=120
        task.is_task=108 task.name=136 task.node=152 tstate.asyncio_running_loop=864
        tstate.asyncio_running_task=872 tstate.asyncio_tasks_head=880 tuple.items=32
        frame.stacktop=-
    """,
    (3, 15): """
        gc.collecting=112 gc.generations=8 gc.permanent=80 gen.state_created=0
        gen.state_executing=4 gen.state_finished=5 gen.state_suspended=1
        gen.state_yield_from=2 gen.state_yield_from2=3 heaptype.cached_keys=888
        heaptype.module=896 heaptype.name=864 heaptype.qualname=880
        interp.asyncio_tasks_head=10856 interp.builtins=7584 interp.gc=7400
        interp.id=7272 interp.modules=7592 interp.next=7264 interp.sysdict=7576
        interp.threads_head=7336 runtime.interpreters_head=936
        tstate.asyncio_running_loop=1024 tstate.asyncio_running_task=1032
        tstate.asyncio_tasks_head=1048 tstate.native_thread_id=184 tstate.thread_id=176
        frame.owned_by_cstack=-
    """,
}


def _parse_tables(texts: dict[tuple[int, int], str]) -> dict[tuple[int, int], dict[str, int]]:
    out: dict[tuple[int, int], dict[str, int]] = {}
    table: dict[str, int] = {}
    for version in sorted(texts):
        table = dict(table)
        for item in texts[version].split():
            key, _, value = item.partition("=")
            if value == "-":
                table.pop(key, None)
            else:
                table[key] = int(value)
        out[version] = table
    return out


TABLES: dict[tuple[int, int], dict[str, int]] = _parse_tables(_TABLE_TEXT)
"""Offsets (bytes) and constants per CPython version, for 64-bit little-endian default (GIL)
builds. Keys name ``struct.field`` with CPython's field names shortened (``tstate.next``)."""

# _Py_DebugOffsets, as each version lays it out: every field a uint64_t after the 8-byte
# cookie. "section: fields" in order; a field mapped to a key of TABLES is read into it.
_DEBUG_HEAD = """
    top: version free_threaded
    runtime_state: size finalizing interpreters_head
"""
_DEBUG_INTERP_314 = """
    interpreter_state: size id next threads_head threads_main gc imports_modules sysdict
        builtins ceval_gil gil_runtime_state gil_runtime_state_enabled
        gil_runtime_state_locked gil_runtime_state_holder code_object_generation
        tlbc_generation
"""
_DEBUG_FRAME_CODE_314 = """
    interpreter_frame: size previous executable instr_ptr localsplus owner stackpointer
        tlbc_index
    code_object: size filename name qualname linetable firstlineno argcount
        localsplusnames localspluskinds co_code_adaptive co_tlbc
    pyobject: size ob_type
"""
_DEBUG_CONTAINERS = """
    tuple_object: size ob_item ob_size
    list_object: size ob_item ob_size
"""
_DEBUG_VALUES = """
    dict_object: size ma_keys ma_values
    float_object: size ob_fval
    long_object: size lv_tag ob_digit
    bytes_object: size ob_size ob_sval
"""
_DEBUG_STRUCT = {
    (3, 13): _DEBUG_HEAD
    + """
        interpreter_state: size id next threads_head gc imports_modules sysdict builtins
            ceval_gil gil_runtime_state gil_runtime_state_enabled gil_runtime_state_locked
            gil_runtime_state_holder
        thread_state: size prev next interp current_frame thread_id native_thread_id
            datastack_chunk status
        interpreter_frame: size previous executable instr_ptr localsplus owner
        code_object: size filename name qualname linetable firstlineno argcount
            localsplusnames localspluskinds co_code_adaptive
        pyobject: size ob_type
        type_object: size tp_name tp_repr tp_flags
    """
    + _DEBUG_CONTAINERS
    + _DEBUG_VALUES
    + """
        unicode_object: size state length asciiobject_size
        gc: size collecting
    """,
    (3, 14): _DEBUG_HEAD
    + _DEBUG_INTERP_314
    + """
        thread_state: size prev next interp current_frame thread_id native_thread_id
            datastack_chunk status
    """
    + _DEBUG_FRAME_CODE_314
    + """
        type_object: size tp_name tp_repr tp_flags
    """
    + _DEBUG_CONTAINERS
    + """
        set_object: size used table mask
    """
    + _DEBUG_VALUES
    + """
        unicode_object: size state length asciiobject_size
        gc: size collecting
        gen_object: size gi_name gi_iframe gi_frame_state
    """,
    (3, 15): _DEBUG_HEAD
    + _DEBUG_INTERP_314
    + """
        thread_state: size prev next interp current_frame base_frame last_profiled_frame
            last_profiled_frame_seq thread_id native_thread_id datastack_chunk status holds_gil
            gil_requested current_exception exc_state
        err_stackitem: exc_value
    """
    + _DEBUG_FRAME_CODE_314
    + """
        type_object: size tp_name tp_repr tp_flags tp_basicsize tp_dictoffset
        heap_type_object: size ht_cached_keys
    """
    + _DEBUG_CONTAINERS
    + """
        set_object: size used table mask
    """
    + _DEBUG_VALUES
    + """
        unicode_object: size state length asciiobject_size compactunicodeobject_size
        gc: size collecting
    """,
}

# debug offsets field -> layout key (fields not listed are read but not used)
_DEBUG_KEYS = {
    "runtime_state.interpreters_head": "runtime.interpreters_head",
    "interpreter_state.id": "interp.id",
    "interpreter_state.next": "interp.next",
    "interpreter_state.threads_head": "interp.threads_head",
    "interpreter_state.gc": "interp.gc",
    "interpreter_state.imports_modules": "interp.modules",
    "interpreter_state.sysdict": "interp.sysdict",
    "interpreter_state.builtins": "interp.builtins",
    "interpreter_state.ceval_gil": "interp.ceval_gil",
    "thread_state.prev": "tstate.prev",
    "thread_state.next": "tstate.next",
    "thread_state.interp": "tstate.interp",
    "thread_state.current_frame": "tstate.current_frame",
    "thread_state.thread_id": "tstate.thread_id",
    "thread_state.native_thread_id": "tstate.native_thread_id",
    "interpreter_frame.previous": "frame.previous",
    "interpreter_frame.executable": "frame.executable",
    "interpreter_frame.instr_ptr": "frame.instr_ptr",
    "interpreter_frame.localsplus": "frame.localsplus",
    "interpreter_frame.owner": "frame.owner",
    "interpreter_frame.stackpointer": "frame.stackpointer",
    "code_object.filename": "code.filename",
    "code_object.name": "code.name",
    "code_object.qualname": "code.qualname",
    "code_object.linetable": "code.linetable",
    "code_object.firstlineno": "code.firstlineno",
    "code_object.argcount": "code.argcount",
    "code_object.localsplusnames": "code.localsplusnames",
    "code_object.localspluskinds": "code.localspluskinds",
    "code_object.co_code_adaptive": "code.code_adaptive",
    "type_object.tp_name": "type.name",
    "type_object.tp_flags": "type.flags",
    "type_object.tp_basicsize": "type.basicsize",
    "type_object.tp_dictoffset": "type.dictoffset",
    "heap_type_object.ht_cached_keys": "heaptype.cached_keys",
    "tuple_object.ob_item": "tuple.items",
    "list_object.ob_item": "list.items",
    "set_object.used": "set.used",
    "set_object.table": "set.table",
    "set_object.mask": "set.mask",
    "dict_object.ma_keys": "dict.keys",
    "dict_object.ma_values": "dict.values",
    "float_object.ob_fval": "float.value",
    "long_object.lv_tag": "long.tag",
    "long_object.ob_digit": "long.digits",
    "bytes_object.ob_sval": "bytes.value",
    "unicode_object.state": "str.state",
    "unicode_object.asciiobject_size": "str.ascii_size",
    "unicode_object.compactunicodeobject_size": "str.compact_size",
    "gc.collecting": "gc.collecting",
    "gen_object.gi_name": "gen.name",
    "gen_object.gi_iframe": "gen.iframe",
    "gen_object.gi_frame_state": "gen.frame_state",
}


def _debug_fields(version: tuple[int, int]) -> list[str]:
    """``section.field`` names of the debug offsets of ``version``, in memory order."""
    text = _DEBUG_STRUCT[version]
    out: list[str] = []
    section = ""
    for word in text.split():
        if word.endswith(":"):
            section = word[:-1]
        else:
            out.append(f"{section}.{word}")
    return out


def debug_offsets(mem: MemoryLike, runtime: int) -> Optional[dict[str, int]]:
    """The ``_Py_DebugOffsets`` at the start of ``_PyRuntime`` (3.13+), as ``section.field``
    -> value, or None where the runtime does not start with CPython's cookie or its version
    has no known layout."""
    try:
        if mem.raw(runtime, 8) != DEBUG_COOKIE:
            return None
        hexversion = mem.u64(runtime + 8)
    except Unreadable:
        return None
    version = (hexversion >> 24 & 0xFF, hexversion >> 16 & 0xFF)
    known = [v for v in _DEBUG_STRUCT if v <= version]
    if version[0] != 3 or not known:
        return None
    names = _debug_fields(max(known))
    try:
        words = struct.unpack(f"<{len(names)}Q", mem.raw(runtime + 8, 8 * len(names)))
    except Unreadable:
        return None
    return dict(zip(names, words))


@dataclass
class PyLayout:
    """The layout of one core's interpreter: ``_PyRuntime``'s address and field offsets."""

    version: tuple[int, int]
    hexversion: int
    runtime: int
    offsets: dict[str, int]
    sources: dict[str, str] = field(default_factory=dict)
    """Where each offset came from: ``note``, ``debug offsets`` or ``table``."""
    runtime_source: str = ""
    """How ``_PyRuntime`` was found (the note, a symbol of a file, the debug cookie)."""
    executable: Optional[str] = None
    """The interpreter's ELF file (executable or ``libpython``) as the core names it."""
    types: dict[int, str] = field(default_factory=dict)
    """Addresses of builtin types (``code``, ``str``...) known without reading them: from the
    note, or the interpreter's symbols. A core that left the interpreter's data out (a capped
    one) still tells a code object by its type's address."""

    def __getitem__(self, key: str) -> int:
        return self.offsets[key]

    def __contains__(self, key: str) -> bool:
        return key in self.offsets

    def get(self, key: str, default: int = -1) -> int:
        """The offset ``key``, or ``default`` where this layout does not know it."""
        return self.offsets.get(key, default)

    @property
    def source(self) -> str:
        """One line saying where the layout came from."""
        kinds = sorted(set(self.sources.values()), key=("note", "debug offsets", "table").index)
        return f"_PyRuntime {self.runtime_source}; offsets from " + ", ".join(kinds)


_PY_NAME = re.compile(r"^(?:lib)?python(\d)\.(\d+)")


def _python_files(core: ElfCore) -> list[tuple[str, int]]:
    """(path, start) of the mapped ELF files that may hold the interpreter: the executable
    and ``libpython``, by name, each at its first mapping (file offset 0)."""
    out = []
    seen: set[str] = set()
    for m in core.mappings:
        if not m.path or m.file_offset != 0 or m.path in seen:
            continue
        name = Path(m.path.replace(" (deleted)", "")).name
        if _PY_NAME.match(name):
            seen.add(m.path)
            out.append((m.path, m.start))
    # libpython first: where it exists, the runtime lives there
    out.sort(key=lambda f: not Path(f[0]).name.startswith("lib"))
    return out


def _version_from_names(core: ElfCore) -> Optional[tuple[int, int]]:
    for path, _ in _python_files(core):
        m = _PY_NAME.match(Path(path).name)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


class _ElfFile:
    """An ELF file from disk that the core maps at ``start``: symbols and sections at their
    addresses in the process, if its build-id matches the core's copy (when it has one)."""

    def __init__(self, core: ElfCore, path: str, start: int) -> None:
        from elftools.elf.elffile import ELFFile

        from .reader import build_id_of_file

        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            want = core.build_id_at(start)
            if want is not None and build_id_of_file(self.f) != want:
                raise OSError(f"{path} is not the file the core mapped (another build-id)")
            self.f.seek(0)
            self.elf = ELFFile(self.f)
            first = next((s for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"), None)
            vaddr = int(first["p_vaddr"]) - int(first["p_offset"]) if first is not None else 0
            self.bias = start - vaddr if self.elf.header["e_type"] == "ET_DYN" else 0
        except BaseException:
            self.f.close()
            raise

    def close(self) -> None:
        self.f.close()

    def symbol(self, name: str) -> Optional[int]:
        for table_name in (".dynsym", ".symtab"):
            table: Any = self.elf.get_section_by_name(table_name)
            syms = table.get_symbol_by_name(name) if table is not None else None
            for s in syms or []:
                if s["st_shndx"] != "SHN_UNDEF" and s["st_value"]:
                    return self.bias + int(s["st_value"])
        return None

    def section(self, name: str) -> Optional[tuple[int, int]]:
        sec: Any = self.elf.get_section_by_name(name)
        if sec is None or not sec["sh_addr"]:
            return None
        return self.bias + int(sec["sh_addr"]), int(sec["sh_size"])


def open_elf_file(core: ElfCore, path: str, start: int) -> Optional[_ElfFile]:
    """The ELF file ``path`` (mapped at ``start`` in the core) from this machine's disk, or
    None when it is missing, unreadable or another build than the core's."""
    from elftools.common.exceptions import ELFError

    try:
        return _ElfFile(core, path.replace(" (deleted)", ""), start)
    except (OSError, ELFError, ValueError, struct.error, AttributeError, KeyError):
        return None


class RawMemory:
    """Words read through :meth:`raw` (which subclasses provide), for memories that are not a
    core's mapping (a live process's own, read through ``/proc/self/mem``)."""

    def raw(self, addr: int, n: int) -> bytes:
        raise NotImplementedError

    def u64(self, addr: int) -> int:
        """The unsigned 64-bit word at ``addr``."""
        return int(struct.unpack("<Q", self.raw(addr, 8))[0])

    def u32(self, addr: int) -> int:
        """The unsigned 32-bit word at ``addr``."""
        return int(struct.unpack("<I", self.raw(addr, 4))[0])

    def readable(self, addr: int, n: int = 8) -> bool:
        """Whether ``[addr, addr+n)`` can be read."""
        try:
            self.raw(addr, n)
        except Unreadable:
            return False
        return True


class ProcessMemory(CoreMemory):
    """A core's memory, completed from the files it maps: where the core left a file-backed
    range out (the kernel's default ``coredump_filter`` omits code and read-only data, where
    type names and other constant strings live), the bytes come from that file on this
    machine when its build-id is the core's. Debuggers read cores the same way."""

    def __init__(self, core: ElfCore) -> None:
        super().__init__(core)
        self.core = core
        self.files: dict[str, Optional[bytes]] = {}
        self.first: dict[str, int] = {}
        for m in core.mappings:
            if m.path and m.file_offset == 0 and m.path not in self.first:
                self.first[m.path] = m.start

    def _file_bytes(self, addr: int, n: int) -> bytes:
        m = self.core.mapping_at(addr)
        if m is None or not m.path or m.file_offset is None or addr + n > m.end:
            raise Unreadable
        data = self.files.get(m.path, b"")
        if data == b"":
            data = self.files[m.path] = self._load(m.path)
        if data is None:
            raise Unreadable
        at = m.file_offset + addr - m.start
        if at + n > len(data):
            raise Unreadable
        return data[at : at + n]

    def _load(self, path: str) -> Optional[bytes]:
        start = self.first.get(path)
        elf = open_elf_file(self.core, path, start) if start is not None else None
        if elf is None:
            return None
        try:
            import mmap

            return mmap.mmap(elf.f.fileno(), 0, access=mmap.ACCESS_READ)  # type: ignore[return-value]
        except (OSError, ValueError):
            return None
        finally:
            elf.close()

    def raw(self, addr: int, n: int) -> bytes:
        d = self.blocks.get(addr >> BLOCK)
        if d is not None and 0 < n and (addr + n - 1) >> BLOCK == addr >> BLOCK:
            return self.mm[addr + d : addr + d + n]
        try:
            return super().raw(addr, n)
        except Unreadable:
            return bytes(self._file_bytes(addr, n))

    def u64(self, addr: int) -> int:
        d = self.blocks.get(addr >> BLOCK)  # the common case, without a call per read
        if d is not None and (addr + 7) >> BLOCK == addr >> BLOCK:
            return int(unpack_q(self.mm, addr + d)[0])
        try:
            return super().u64(addr)
        except Unreadable:
            return int(struct.unpack("<Q", self._file_bytes(addr, 8))[0])

    def u32(self, addr: int) -> int:
        try:
            return super().u32(addr)
        except Unreadable:
            return int(struct.unpack("<I", self._file_bytes(addr, 4))[0])

    readable = RawMemory.readable

    def close(self) -> None:
        """Unmap the core and the files read for it."""
        for data in self.files.values():
            close = getattr(data, "close", None)
            if close is not None:
                close()
        self.files.clear()
        super().close()


# the _asyncio module's debug offsets (3.14+, its "AsyncioDebug" section), in memory order
_ASYNCIO_DEBUG = (
    "task.size task.name task.awaited_by task.is_task task.awaited_by_is_set task.coro "
    "task.node interp.size interp.asyncio_tasks_head tstate.size tstate.asyncio_running_loop "
    "tstate.asyncio_running_task tstate.asyncio_tasks_head"
).split()


def _asyncio_section(core: ElfCore) -> Optional[int]:
    """Where the ``AsyncioDebug`` section is mapped: in ``_asyncio``'s shared library, or in
    the interpreter where the module is built in (read from the files on this machine)."""
    files = [
        (m.path, m.start)
        for m in core.mappings
        if m.path and m.file_offset == 0 and Path(m.path).name.startswith("_asyncio.")
    ]
    for path, start in files + _python_files(core):
        elf = open_elf_file(core, path, start)
        if elf is None:
            continue
        try:
            found = elf.section(".AsyncioDebug")
        finally:
            elf.close()
        if found is not None and found[1] >= 8 * len(_ASYNCIO_DEBUG):
            return found[0]
    return None


def asyncio_layout(core: ElfCore, mem: MemoryLike, layout: PyLayout) -> str:
    """Add the ``_asyncio`` module's debug offsets (3.14+) to ``layout``; returns where the
    task offsets come from (the section, or the table)."""
    if layout.version < (3, 14):
        return "table"
    addr = _asyncio_section(core)
    if addr is None:
        return "table"
    try:
        values = struct.unpack(f"<{len(_ASYNCIO_DEBUG)}Q", mem.raw(addr, 8 * len(_ASYNCIO_DEBUG)))
    except Unreadable:
        return "table"
    found = dict(zip(_ASYNCIO_DEBUG, values))
    limits = {
        "task": found["task.size"],
        "interp": found["interp.size"],
        "tstate": found["tstate.size"],
    }
    if not all(0 < v < limits[k.split(".")[0]] for k, v in found.items() if ".size" not in k):
        return "table"
    for key, value in found.items():
        if not key.endswith(".size"):
            layout.offsets[key] = value
            layout.sources[key] = "asyncio debug offsets"
    return "the _asyncio module's debug offsets"


def _runtime_from_symbols(core: ElfCore) -> Optional[tuple[int, str, str]]:
    for path, start in _python_files(core):
        elf = open_elf_file(core, path, start)
        if elf is None:
            continue
        try:
            addr = elf.symbol("_PyRuntime")
        finally:
            elf.close()
        if addr:
            return addr, f"from the _PyRuntime symbol of {path}", path
    return None


def _runtime_from_cookie(core: ElfCore, mem: CoreMemory) -> Optional[tuple[int, str, str]]:
    """3.13+: ``_PyRuntime`` starts with the cookie ``xdebugpy``; look for it in the written
    data of the interpreter's files (the ``.PyRuntime`` section is part of them)."""
    files = dict(_python_files(core))
    paths = set(files)
    for m in core.mappings:
        if m.path not in paths or "w" not in m.flags or m.filesz == 0:
            continue
        lo, hi = m.offset, min(m.offset + m.filesz, mem.size)
        pos = mem.mm.find(DEBUG_COOKIE, lo, hi)
        while pos >= 0:
            addr = m.start + pos - m.offset
            if addr % 8 == 0 and debug_offsets(mem, addr) is not None:
                return addr, f"found by its debug cookie in {m.path}", str(m.path)
            pos = mem.mm.find(DEBUG_COOKIE, pos + 1, hi)
    return None


def _note_layout(core: ElfCore) -> dict[str, Any]:
    doc = core.metadata.get("pylayout")
    return doc if isinstance(doc, dict) else {}


# the heap layout's names (gencore.capture.heaplayout) -> this module's keys
_HEAP_KEYS = {
    ("type", "tp_name"): "type.name",
    ("type", "tp_basicsize"): "type.basicsize",
    ("type", "tp_flags"): "type.flags",
    ("type", "tp_base"): "type.base",
    ("type", "tp_dict"): "type.dict",
    ("type", "tp_dictoffset"): "type.dictoffset",
    ("type", "ht_qualname"): "heaptype.qualname",
    ("type", "ht_cached_keys"): "heaptype.cached_keys",
    ("str", "ascii_header"): "str.ascii_size",
    ("str", "compact_header"): "str.compact_size",
    ("str", "state"): "str.state",
}


def _note_offsets(core: ElfCore, note: dict[str, Any]) -> dict[str, int]:
    """The offsets the process found and checked in itself: the walk's and the heap's."""
    out: dict[str, int] = {}
    heap = core.metadata.get("heap")
    if isinstance(heap, dict):
        for (part, name), key in _HEAP_KEYS.items():
            value = (heap.get(part) or {}).get(name) if isinstance(heap.get(part), dict) else None
            if isinstance(value, int) and 0 <= value < 1 << 16:
                out[key] = value
    for key, value in (note.get("offsets") or {}).items():
        if isinstance(key, str) and isinstance(value, int) and 0 <= value < 1 << 20:
            out[key] = value
    return out


def _version(core: ElfCore, note: dict[str, Any], dbg: Optional[dict[str, int]]) -> int:
    """The interpreter's PY_VERSION_HEX (minor version only where nothing better is known)."""
    for hv in (note.get("hexversion"), core.metadata.get("python", {}).get("hexversion")):
        if isinstance(hv, int) and hv > 0:
            return hv
    if dbg is not None:
        return dbg["top.version"]
    named = _version_from_names(core)
    if named is None:
        raise PythonUnavailableError(
            f"{core.path}: no Python interpreter found in this core: no file named "
            "python3.X or libpython3.X is mapped, and gencore wrote no note"
        )
    return named[0] << 24 | named[1] << 16


def _locate_runtime(core: ElfCore, mem: CoreMemory, note: dict[str, Any]) -> tuple[int, str, str]:
    rt = note.get("runtime")
    if isinstance(rt, int) and rt > 0 and mem.readable(rt, 64):
        return rt, "from the GENCORE note", str(note.get("file") or "")
    found = _runtime_from_symbols(core) or _runtime_from_cookie(core, mem)
    if found is None:
        files = ", ".join(p for p, _ in _python_files(core)) or "none mapped"
        raise PythonUnavailableError(
            f"{core.path}: cannot find _PyRuntime: the interpreter's files ({files}) are not on "
            "this machine with the core's build-id, and the core holds no debug cookie "
            "(Python 3.13+); analyse the core where it was written, or take a bundle "
            "(gencore.collect_core) or a core written by gencore"
        )
    return found


def find_layout(core: ElfCore, mem: CoreMemory) -> PyLayout:
    """The layout of ``core``'s interpreter (see the module's documentation for the order of
    the sources).

    Raises:
        PythonUnavailableError: the core has no Python interpreter this reader knows
            (not CPython 3.9-3.15, a free-threaded or 32-bit build, or ``_PyRuntime`` cannot
            be found), or its runtime state is not in the core.
    """
    note = _note_layout(core)
    runtime, how, exe = _locate_runtime(core, mem, note)
    hexversion = _version(core, note, debug_offsets(mem, runtime))
    layout = build_layout(mem, runtime, hexversion, _note_offsets(core, note), str(core.path))
    layout.runtime_source, layout.executable = how, exe or None
    layout.types = _known_types(core)
    _check(str(core.path), mem, layout)
    return layout


# builtin types by the symbol of their type object
_TYPE_SYMBOLS = {
    "code": "PyCode_Type",
    "str": "PyUnicode_Type",
    "int": "PyLong_Type",
    "bool": "PyBool_Type",
    "float": "PyFloat_Type",
    "bytes": "PyBytes_Type",
    "tuple": "PyTuple_Type",
    "list": "PyList_Type",
    "dict": "PyDict_Type",
    "type": "PyType_Type",
}


def _known_types(core: ElfCore) -> dict[int, str]:
    """Builtin types' addresses: the note's (``heap.builtins``), else the symbols of the
    interpreter's files on this machine."""
    heap = core.metadata.get("heap")
    found = heap.get("builtins") if isinstance(heap, dict) else None
    if isinstance(found, dict):
        return {int(a): str(n) for n, a in found.items() if isinstance(a, int)}
    out: dict[int, str] = {}
    for path, start in _python_files(core):
        elf = open_elf_file(core, path, start)
        if elf is None:
            continue
        try:
            for name, symbol in _TYPE_SYMBOLS.items():
                addr = elf.symbol(symbol)
                if addr:
                    out[addr] = name
        finally:
            elf.close()
        if out:
            break
    return out


def build_layout(
    mem: MemoryLike, runtime: int, hexversion: int, found: dict[str, int], what: str = "the core"
) -> PyLayout:
    """The layout for an interpreter of ``hexversion`` whose ``_PyRuntime`` is at ``runtime``:
    the version's table, overridden by the debug offsets in ``mem`` (3.13+), overridden by
    the offsets in ``found`` (checked in the process itself).

    Raises:
        PythonUnavailableError: an unknown version or a free-threaded build.
    """
    version = (hexversion >> 24 & 0xFF, hexversion >> 16 & 0xFF)
    dbg = debug_offsets(mem, runtime)
    if dbg and dbg.get("top.free_threaded"):
        raise PythonUnavailableError(
            f"{what}: a free-threaded interpreter (Python {version[0]}.{version[1]}t): its "
            "objects have another header; read it with pystack"
        )
    table = TABLES.get(version)
    if table is None:
        near = max((v for v in TABLES if v <= version), default=None)
        if near is None or dbg is None:
            raise PythonUnavailableError(
                f"{what}: Python {version[0]}.{version[1]} is not a version this reader "
                "knows (3.9-3.15)"
            )
        table = TABLES[near]
    offsets = dict(table)
    sources = dict.fromkeys(table, "table")
    if dbg:
        _merge_debug(dbg, offsets, sources)
    for key, value in found.items():
        offsets[key] = value
        sources[key] = "note"
    return PyLayout(version, hexversion, runtime, offsets, sources, "given")


def _merge_debug(dbg: dict[str, int], offsets: dict[str, int], sources: dict[str, str]) -> None:
    """Take the debug offsets' fields over the table's, once they pass a sanity check (every
    offset inside its struct)."""
    sizes = {k.split(".")[0]: v for k, v in dbg.items() if k.endswith(".size")}
    for name, key in _DEBUG_KEYS.items():
        if name not in dbg:
            continue
        value = dbg[name]
        limit = sizes.get(name.split(".")[0], 1 << 20)
        if not 0 <= value < max(limit, 1) + 8:
            continue
        offsets[key] = value
        sources[key] = "debug offsets"
    # the GIL's fields are offsets in the interpreter state; the table's are in the GIL
    base = dbg.get("interpreter_state.gil_runtime_state")
    for field_name, key in (("locked", "gil.locked"), ("holder", "gil.last_holder")):
        v = dbg.get(f"interpreter_state.gil_runtime_state_{field_name}")
        if base is not None and v is not None and 0 <= v - base < 4096:
            offsets[key] = v - base
            sources[key] = "debug offsets"


def _check(what: str, mem: MemoryLike, layout: PyLayout) -> None:
    """The runtime must lead to an interpreter whose first thread state points back to it."""
    try:
        interp = mem.u64(layout.runtime + layout["runtime.interpreters_head"])
        if interp == 0:
            raise PythonUnavailableError(
                f"{what}: the interpreter had not started or had already finalized "
                "(no interpreter state in _PyRuntime)"
            )
        ts = mem.u64(interp + layout["interp.threads_head"])
        if ts and mem.u64(ts + layout["tstate.interp"]) != interp:
            raise PythonUnavailableError(
                f"{what}: the Python {layout.version[0]}.{layout.version[1]} layout does "
                f"not fit this core's interpreter ({layout.source}): its first thread state "
                "does not point back to it"
            )
    except Unreadable:
        raise PythonUnavailableError(
            f"{what}: the interpreter state is not in the core (not dumped, or left out "
            "by max_size)"
        ) from None
    except KeyError as e:
        raise PythonUnavailableError(f"{what}: incomplete Python layout: {e}") from None
