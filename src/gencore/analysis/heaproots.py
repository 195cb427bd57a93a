"""Which interpreter's heap to walk, and its roots, from the offline object model.

The heap layout in the GENCORE note names the collector's lists of the interpreter that took
the core; every interpreter keeps its own, at the same place in its state, so the lists of
another one (a subinterpreter) are found by the same distance from its state. The roots the
heap answers start from: the interpreter's ``sys.modules``, ``sys.__dict__`` and
``builtins.__dict__``, and every local variable (cells read through) of every frame of its
threads, read through :class:`~gencore.analysis.pyobjects.PyModel`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from ..errors import GencoreError, HeapUnavailableError
from .heaptypes import HeapLayout
from .memory import Unreadable
from .pyobjects import Interpreter, PyModel

__all__ = ["Root", "Selection", "select"]


class CoreFile(Protocol):
    """What this module needs of :class:`~gencore.analysis.core.CoreFile`."""

    path: Path

    def python(self) -> PyModel: ...


_BAD = (Unreadable, struct.error, ValueError, IndexError, OverflowError, UnicodeDecodeError)
MAX_FRAME_ROOTS = 1 << 20


@dataclass(frozen=True)
class Root:
    """An object the interpreter holds directly, and how (``sys.modules``, a frame local)."""

    address: int
    label: str


@dataclass
class Selection:
    """The interpreter to walk: its GC lists and its roots."""

    number: int
    """The interpreter's id (0: the main interpreter)."""
    count: int
    """How many interpreters the core holds (1 when they cannot be read)."""
    heads: list[int]
    roots: list[Root]
    frames_note: Optional[str] = None
    """Why thread frames are not among the roots, if they are not."""


def _model(core: CoreFile) -> tuple[Optional[PyModel], Optional[str]]:
    try:
        return core.python(), None
    except GencoreError as e:
        return None, str(e)


def _own(model: PyModel, interps: list[Interpreter], heads: list[int]) -> Optional[Interpreter]:
    """The interpreter whose state holds the lists the note names."""
    gc = model.layout.get("interp.gc")
    best = None
    for it in interps:
        base = it.address + (gc if gc >= 0 else 0)
        if 0 <= heads[0] - base < 1 << 16 and (best is None or it.address > best.address):
            best = it
    return best


def select(core: CoreFile, layout: HeapLayout, number: Optional[int] = None) -> Selection:
    """The interpreter ``number`` (by id; None: the one that took the core) and its roots.

    Raises:
        HeapUnavailableError: there is no interpreter ``number``, or its state cannot be read.
    """
    model, why = _model(core)
    interps: list[Interpreter] = []
    if model is not None:
        try:
            interps = list(model.interpreters())
        except _BAD as e:
            model, why = None, f"the interpreters cannot be read ({type(e).__name__})"
    own = _own(model, interps, layout.heads) if model is not None else None
    r = layout.roots
    explicit = [Root(r[k], n) for k, n in (("modules", "sys.modules"), ("sys", "sys"),
                                            ("builtins", "builtins")) if r.get(k)]  # fmt: skip
    if number is None or (own is not None and number == own.id):
        sel = Selection(own.id if own else 0, max(len(interps), 1), list(layout.heads), explicit)
        target = own
    else:
        if model is None or own is None:
            raise HeapUnavailableError(
                f"{core.path}: the interpreters cannot be read ({why or 'unknown layout'}), "
                f"so interpreter {number} cannot be censused"
            )
        target = next((it for it in interps if it.id == number), None)
        if target is None:
            ids = ", ".join(str(it.id) for it in reversed(interps))
            raise HeapUnavailableError(
                f"{core.path} holds no interpreter {number} (its interpreters: {ids})"
            )
        heads = [target.address + (h - own.address) for h in layout.heads]
        roots = []
        for key, label in (("interp.modules", "sys.modules"), ("interp.sysdict", "sys"),
                           ("interp.builtins", "builtins")):  # fmt: skip
            try:
                roots.append(Root(model.u64(target.address + model.L[key]), label))
            except (KeyError, *_BAD):
                pass
        sel = Selection(number, len(interps), heads, roots)
    if model is None or target is None:
        sel.frames_note = why or "the interpreter state is not known"
    else:
        sel.frames_note = _frame_roots(model, target, sel.roots)
    return sel


def _frame_roots(model: PyModel, interp: Interpreter, out: list[Root]) -> Optional[str]:
    """Every thread's frames' locals, innermost frame first; a sentence if some could not be
    read."""
    problem = None
    try:
        threads = list(model.thread_states(interp))
    except _BAD:
        return "the thread states cannot be read"
    for ts in threads:
        tid = ts.native_id or ts.thread_id
        try:
            for fr in model.frames(ts.frame):
                if fr.is_shim or fr.code is None:
                    continue
                for name, value, _ in model.locals(fr):
                    out.append(
                        Root(value, f"thread {tid} frame {fr.code.qualname}() local {name!r}")
                    )
                    if len(out) > MAX_FRAME_ROOTS:
                        return "too many frame locals: the rest are not roots"
        except _BAD:
            problem = f"the frames of thread {tid} cannot all be read"
    return problem
