"""The GENCORE note: metadata and Python stacks, taken just before the freeze.

The document is JSON so that any tool (and ``gencore stacks``) can read it without knowing
interpreter internals. Work here is O(threads + frames): it runs with the GIL held right before
the pause and counts towards it.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import socket
import struct
import sys
import threading
import time
from types import FrameType
from typing import Any, Optional

from ..analysis.memory import Unreadable
from ..analysis.pylayout import build_layout
from ..analysis.pyobjects import PyModel, ThreadState
from ..errors import GencoreError
from . import caplayout as _caplayout
from . import engine
from . import heaplayout as _heaplayout
from .selfmem import LiveMemory

FORMAT_VERSION = 1
MAX_FRAMES = 2000  # per thread; deeper stacks keep the innermost frames


def _frames(frame: Optional[FrameType]) -> tuple[list[dict[str, Any]], int]:
    """Innermost first, like py-spy dump."""
    out: list[dict[str, Any]] = []
    skipped = 0
    while frame is not None:
        if len(out) < MAX_FRAMES:
            code = frame.f_code
            out.append(
                {
                    "file": code.co_filename,
                    "line": frame.f_lineno,
                    "function": code.co_name,
                    "qualname": getattr(code, "co_qualname", code.co_name),
                }
            )
        else:
            skipped += 1
        frame = frame.f_back
    return out, skipped


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _other_interpreters() -> list[dict[str, Any]]:
    """The stacks of threads running in other interpreters (subinterpreters, or the main one
    seen from a subinterpreter): ``sys._current_frames`` sees only this interpreter's. They
    are read from memory, as offline readers read a core (:mod:`gencore.analysis.pyobjects`),
    while those threads run on: a value that changes under the read ends the walk early."""
    if not engine.available():
        return []
    here, interpreters = engine.native.interpreters()
    if len(interpreters) < 2:
        return []
    note = _caplayout.note_layout()
    if "offsets" not in note:
        return []
    out: list[dict[str, Any]] = []
    fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        mem = LiveMemory(fd)
        layout = build_layout(mem, note["runtime"], sys.hexversion, note["offsets"])
        model = PyModel(mem, layout)
        for interp in model.interpreters():
            if interp.address == here:
                continue
            for ts in model.thread_states(interp):
                out.append(_live_thread(model, ts))
    except (Unreadable, GencoreError, KeyError, struct.error, ValueError):
        pass
    finally:
        os.close(fd)
    return out


def _live_thread(model: PyModel, ts: ThreadState) -> dict[str, Any]:
    frames = []
    try:
        for f in model.frames(ts.frame, MAX_FRAMES) if ts.frame else ():
            if f.code is not None and not f.is_shim:
                frames.append(
                    {
                        "file": f.code.filename,
                        "line": f.line,
                        "function": f.code.name,
                        "qualname": f.code.qualname,
                    }
                )
    except (Unreadable, struct.error, ValueError):
        pass
    return {
        "ident": ts.thread_id,
        "native_id": ts.native_id,
        "name": None,
        "daemon": None,
        "current": False,
        "interpreter": ts.interp_id,
        "frames": frames,
        "frames_skipped": 0,
    }


def _current_frames() -> dict[int, Any]:
    """``sys._current_frames()`` without the interpreter's deadlock of CPython gh-106883.

    Before 3.11.9/3.12.3 the call holds the runtime's thread-list lock while it allocates; a
    collection started by that allocation that clears a ``threading.local`` takes the same
    lock and the process hangs for ever (seen with 1,000 threads). No collection can start
    while the collector is disabled; it is enabled again at once if it was.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


def python_stacks() -> list[dict[str, Any]]:
    """Every Python thread's stack, with name, ident and native id.

    gencore's own frames on top of the calling thread's stack are left out: the stack shows
    the application at the point where it asked for the core.
    """
    by_ident = {t.ident: t for t in threading.enumerate()}
    current = threading.get_ident()
    here = _interpreter_id()
    result = []
    for ident, frame in _current_frames().items():
        t = by_ident.get(ident)
        if ident == current:
            while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                frame = frame.f_back
        frames, skipped = _frames(frame)
        result.append(
            {
                "ident": ident,
                "native_id": getattr(t, "native_id", None) if t is not None else None,
                "name": t.name if t is not None else None,
                "daemon": t.daemon if t is not None else None,
                "current": ident == current,
                "interpreter": here,
                "frames": frames,
                "frames_skipped": skipped,
            }
        )
    return result + _other_interpreters()


def _interpreter_id() -> int:
    """This interpreter's id (0: the main one)."""
    if not engine.available():
        return 0
    here, interpreters = engine.native.interpreters()
    return next((int(i) for i, addr in interpreters if addr == here), 0)


def build_note(
    *,
    reason: str,
    version: str,
    with_stacks: bool,
    extra: Optional[dict[str, Any]] = None,
    heap_counts: bool = True,
    redact: Optional[str] = None,
) -> bytes:
    """The JSON document stored in the GENCORE note.

    ``heap`` holds what ``gencore heap`` needs to walk the objects offline; ``heap_counts``
    adds the collector's counters at this moment (left out of notes prepared in advance).
    ``redact="values"`` leaves the arguments out (the program's name stays) and says so.
    """
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "gencore": version,
        "time": time.time(),
        "reason": reason,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "hexversion": sys.hexversion,
        },
        "argv": list(sys.argv[:1]) + ["<redacted>"] * (len(sys.argv) - 1)
        if redact == "values"
        else list(sys.argv),
        "threads": [
            {"name": t.name, "ident": t.ident, "native_id": getattr(t, "native_id", None)}
            for t in threading.enumerate()
        ],
    }
    # what offline readers need to walk the interpreter: _PyRuntime, the checked offsets, and
    # both clocks now (asyncio's deadlines are on the monotonic one; a trigger stamps "time")
    doc["pylayout"] = _caplayout.note_layout()
    doc["clock"] = {"time": time.time(), "monotonic": time.monotonic()}
    if redact:
        doc["redact"] = redact
    doc["heap"] = dict(_heaplayout.layout())
    if heap_counts and "gc_heads" in doc["heap"]:
        doc["heap"]["counts"] = _heaplayout.counts()
    if with_stacks:
        doc["stacks"] = python_stacks()
    if extra:
        doc.update(extra)
    return json.dumps(doc, default=repr, separators=(",", ":")).encode()
