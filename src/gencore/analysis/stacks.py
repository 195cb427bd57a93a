"""Every thread's Python stack, read from a core's memory (``gencore stacks``).

The threads come from every interpreter's thread list, the frames from each thread state, the
names, files and lines from the code objects (:mod:`gencore.analysis.pyobjects`), so a core
written by a signal handler, a crash, the watchdog, the kernel or another tool answers like one
written by :func:`~gencore.create_core`. The frames, lines and their order are pystack's. The
GENCORE note's stacks (taken in the process just before the freeze) remain a fast path for
cores whose interpreter cannot be read, and a cross-check (:func:`note_differences`).

Records are produced one thread at a time: memory does not grow with the number of threads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .memory import Unreadable
from .pyobjects import Frame, Interpreter, PyModel, ThreadState

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = [
    "FrameInfo",
    "LocalInfo",
    "ThreadStack",
    "iter_stacks",
    "note_differences",
    "note_stacks",
    "thread_names",
]

_BAD = (Unreadable, struct.error, ValueError, IndexError, OverflowError, UnicodeDecodeError)


@dataclass(frozen=True)
class LocalInfo:
    """A local variable of a frame: its name, a short text of its value, and whether it is
    one of the function's parameters."""

    name: str
    value: str
    argument: bool


@dataclass(frozen=True)
class FrameInfo:
    """One Python frame."""

    function: str
    """The code's name (``co_name``), as pystack shows it."""
    qualname: str
    file: str
    line: int
    """0 where the line cannot be told."""
    is_entry: bool = False
    locals: Optional[list[LocalInfo]] = None
    """Filled when asked for (``locals=True``)."""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of one frame in ``gencore stacks --json``."""
        doc: dict[str, Any] = {
            "function": self.function,
            "qualname": self.qualname,
            "file": self.file,
            "line": self.line,
        }
        if self.locals is not None:
            doc["locals"] = [
                {"name": v.name, "value": v.value, "argument": v.argument} for v in self.locals
            ]
        return doc


@dataclass
class ThreadStack:
    """One thread's Python stack, innermost frame first."""

    tid: Optional[int]
    """The kernel's thread id (what pystack and gdb show), None where it cannot be told."""
    ident: Optional[int]
    """``threading.get_ident()`` of the thread."""
    name: Optional[str]
    interpreter_id: int
    holds_gil: Optional[bool]
    gc_collecting: bool = False
    frames: list[FrameInfo] = field(default_factory=list)
    error: Optional[str] = None
    """Why the walk stopped early (a frame outside the core), if it did."""
    source: str = "memory"
    """``memory`` (read from the core) or ``note`` (the GENCORE note's copy)."""
    current: bool = False
    """The thread that asked for the core (from the note)."""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of one thread in ``gencore stacks --json``."""
        doc: dict[str, Any] = {
            "tid": self.tid,
            "ident": self.ident,
            "name": self.name,
            "interpreter": self.interpreter_id,
            "holds_gil": self.holds_gil,
            "gc_collecting": self.gc_collecting,
            "current": self.current,
            "source": self.source,
            "frames": [f.to_json() for f in self.frames],
        }
        if self.error:
            doc["error"] = self.error
        return doc


def thread_names(model: PyModel, interp: Interpreter) -> dict[int, str]:
    """``threading``'s names of the interpreter's threads, by ident (``threading._active``
    and ``_limbo`` in its module), or ``{}`` where the module is not loaded or unreadable."""
    try:
        modules = model.u64(interp.address + model.L["interp.modules"])
        module = model.dict_get(modules, "threading")
        if not module:
            return {}
        mdict = model.u64(module + model.L["module.dict"])
        out: dict[int, str] = {}
        active = model.dict_get(mdict, "_active")
        for key, thread in model.dict_items(active) if active else []:
            ident = model.int_value(key)
            name = model.attr(thread, "_name")
            text = model.str_value(name, 200) if name else None
            if ident is not None and text is not None:
                out[ident] = text
        return out
    except (*_BAD, KeyError):
        return {}


def _frame_info(model: PyModel, frame: Frame, with_locals: bool) -> FrameInfo:
    code = frame.code
    assert code is not None
    local_info = None
    if with_locals:
        try:
            local_info = [
                LocalInfo(name, model.short_repr(value), arg)
                for name, value, arg in model.locals(frame)
            ]
        except _BAD:
            local_info = []
    return FrameInfo(
        code.name, code.qualname, code.filename, frame.line, frame.is_entry, local_info
    )


def _walk(model: PyModel, first: int, with_locals: bool) -> tuple[list[FrameInfo], Optional[str]]:
    frames: list[FrameInfo] = []
    try:
        for frame in model.frames(first):
            if frame.is_shim:
                continue
            if frame.code is None:
                frames.append(FrameInfo("???", "???", "???", 0, frame.is_entry))
                continue
            frames.append(_frame_info(model, frame, with_locals))
    except _BAD:
        return frames, f"the frame chain leaves the core after {len(frames)} frames"
    return frames, None


def _note_names(core: ElfCore) -> tuple[dict[int, str], Optional[int]]:
    names: dict[int, str] = {}
    for t in core.metadata.get("threads") or []:
        if isinstance(t, dict) and isinstance(t.get("native_id"), int) and t.get("name"):
            names[t["native_id"]] = str(t["name"])
    current = next(
        (
            s.get("native_id")
            for s in core.metadata.get("stacks") or []
            if isinstance(s, dict) and s.get("current")
        ),
        None,
    )
    return names, current if isinstance(current, int) else None


def _ordered(model: PyModel) -> Iterator[tuple[Interpreter, ThreadState, dict[int, str]]]:
    """Thread states in pystack's order: interpreters newest first, each one's threads as its
    list holds them (the newest first). A thread in several interpreters (a subinterpreter
    run from a thread) is listed once, its states together, the outermost first."""
    interps = list(model.interpreters())
    if len(interps) == 1:
        names = thread_names(model, interps[0])
        for ts in model.thread_states(interps[0]):
            yield interps[0], ts, names
        return
    groups: dict[Optional[int], list[tuple[int, Interpreter, ThreadState, dict[int, str]]]] = {}
    for interp in interps:
        names = thread_names(model, interp)
        for ts in model.thread_states(interp):
            key = ts.native_id if ts.native_id is not None else -ts.address
            anchor = model.stack_anchor(ts.frame)
            groups.setdefault(key, []).append((anchor, interp, ts, names))
    for group in groups.values():
        group.sort(key=lambda g: (g[0] == 0, -g[0]))
        for _, interp, ts, names in group:
            yield interp, ts, names


def iter_stacks(core: ElfCore, model: PyModel, with_locals: bool = False) -> Iterator[ThreadStack]:
    """Every Python thread of every interpreter, in pystack's order (see :func:`_ordered`).

    Raises:
        Unreadable: (before the first thread) the interpreter list is not in the core.
    """
    note_names, current = _note_names(core)
    try:
        for interp, ts, names in _ordered(model):
            frames, error = _walk(model, ts.frame, with_locals) if ts.frame else ([], None)
            name = note_names.get(ts.native_id or -1) or names.get(ts.thread_id)
            yield ThreadStack(
                ts.native_id,
                ts.thread_id,
                name,
                interp.id,
                ts.holds_gil,
                bool(interp.gc_collecting and ts.holds_gil),
                frames,
                error,
                current=current is not None and ts.native_id == current,
            )
    except _BAD:
        yield ThreadStack(
            None, None, None, -1, None, error="an interpreter's thread list leaves the core"
        )


def note_stacks(core: ElfCore) -> Iterator[ThreadStack]:
    """The stacks the GENCORE note holds (taken in the process just before the freeze)."""
    for t in core.metadata.get("stacks") or []:
        if not isinstance(t, dict):
            continue
        frames = [
            FrameInfo(
                str(f.get("function")),
                str(f.get("qualname") or f.get("function")),
                str(f.get("file")),
                int(f.get("line") or 0),
            )
            for f in t.get("frames") or []
            if isinstance(f, dict)
        ]
        interp = t.get("interpreter", 0)
        yield ThreadStack(
            t.get("native_id") if isinstance(t.get("native_id"), int) else None,
            t.get("ident") if isinstance(t.get("ident"), int) else None,
            t.get("name") if isinstance(t.get("name"), str) else None,
            interp if isinstance(interp, int) else 0,
            None,
            frames=frames,
            source="note",
            current=bool(t.get("current")),
        )


def note_differences(note: list[ThreadStack], memory: list[ThreadStack]) -> list[str]:
    """Where the note's stacks and the memory's disagree, thread by thread (by TID and
    interpreter).

    Threads that ran between the note and the freeze may differ legitimately; the thread that
    asked for the core shows gencore's own frames in memory only, so its outer frames are
    compared.
    """
    by_tid = {(s.tid, s.interpreter_id): s for s in memory if s.tid is not None}
    out = []
    for n in note:
        m = by_tid.get((n.tid, n.interpreter_id)) if n.tid is not None else None
        if m is None:
            out.append(f"thread {n.tid} ({n.name}): in the note, not in memory")
            continue
        want = [(f.function, f.file) for f in n.frames]
        got = [(f.function, f.file) for f in m.frames]
        if n.current:
            got = got[len(got) - len(want) :] if len(got) >= len(want) else got
        if want != got:
            out.append(
                f"thread {n.tid} ({n.name}): note {' < '.join(f for f, _ in want[:6])}; "
                f"memory {' < '.join(f for f, _ in got[:6])}"
            )
    return out
