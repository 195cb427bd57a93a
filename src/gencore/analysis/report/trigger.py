"""What triggered a core: its reason, the thread that asked for it (or stalled, or crashed)
and that thread's innermost Python frames.

Shared by the HTML report (its header and the thread list's first entry) and by uploads,
whose manifests carry the same answer so that a fleet's cores can be grouped by cause without
downloading them (:mod:`gencore.ship.fleet`).
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..core import CoreFile

__all__ = ["Frame", "ThreadStack", "Trigger", "python_threads", "signal_name", "trigger_of"]

TOP_FRAMES = 5
"""How many innermost frames of the triggering thread a manifest keeps."""


@dataclass(frozen=True)
class Frame:
    """One Python frame: function (qualified name where known), file and line."""

    function: str
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        """``{"function", "file", "line"}``, the manifest's shape."""
        return {"function": self.function, "file": self.file, "line": self.line}

    @classmethod
    def from_json(cls, doc: Any) -> Optional[Frame]:
        """The frame of a JSON object with ``function``/``qualname``, ``file`` and ``line``
        (a stored stack's or a manifest's); None when it is not one."""
        if not isinstance(doc, dict):
            return None
        name = doc.get("qualname") or doc.get("function")
        line = doc.get("line")
        return cls(
            str(name) if name else "?",
            str(doc.get("file") or "?"),
            line if isinstance(line, int) else 0,
        )


@dataclass
class ThreadStack:
    """A thread's Python stack, innermost frame first."""

    tid: int
    name: Optional[str]
    frames: list[Frame]
    skipped: int = 0


@dataclass
class Trigger:
    """Why the core was written and by which thread.

    ``frames`` are the triggering thread's innermost Python frames (innermost first); for an
    unhandled exception, the traceback's innermost frames, where it was raised. ``frames_from``
    says where they were read (``"stacks"``, ``"traceback"``) or is empty when the core has
    none."""

    reason: str
    tid: Optional[int]
    thread: Optional[str]
    frames: list[Frame] = field(default_factory=list)
    frames_from: str = ""
    signal: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``trigger`` object."""
        exc = self.detail.get("exception")
        return {
            "reason": self.reason,
            "tid": self.tid,
            "thread": self.thread,
            "signal": self.signal,
            "frames": [f.to_json() for f in self.frames[:TOP_FRAMES]],
            "frames_from": self.frames_from,
        } | ({"exception": str(exc["type"])} if isinstance(exc, dict) and exc.get("type") else {})


def signal_name(signo: int) -> str:
    """``SIGSEGV``-style name of a signal number (the number if unknown)."""
    try:
        return _signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def python_threads(core: CoreFile) -> list[ThreadStack]:
    """Every Python thread's stack the core holds (the GENCORE note's), by native thread id;
    ``[]`` when it holds none."""
    out = []
    for t in core.python_stacks:
        if not isinstance(t, dict):
            continue
        tid = t.get("native_id") or t.get("ident")
        if not isinstance(tid, int):
            continue
        frames = [f for f in map(Frame.from_json, t.get("frames") or []) if f is not None]
        skipped = t.get("frames_skipped")
        out.append(
            ThreadStack(
                tid,
                t.get("name") if isinstance(t.get("name"), str) else None,
                frames,
                skipped if isinstance(skipped, int) else 0,
            )
        )
    return out


_TRACEBACK_LINE = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+), in (?P<func>.+)$')


def traceback_frames(text: str) -> list[Frame]:
    """The frames of a formatted traceback (``traceback.format_exception``), innermost first:
    of the last exception in a chain, the one that went unhandled."""
    frames: list[Frame] = []
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            frames = []
            continue
        m = _TRACEBACK_LINE.match(line)
        if m:
            frames.append(Frame(m["func"].strip(), m["file"], int(m["line"])))
    return frames[::-1]


def _thread_names(core: CoreFile) -> dict[int, str]:
    names: dict[int, str] = {}
    for t in core.metadata.get("threads") or []:
        if isinstance(t, dict) and isinstance(t.get("native_id"), int):
            names[t["native_id"]] = str(t.get("name"))
    return names


def _trigger_tid(core: CoreFile, names: dict[int, str]) -> Any:
    """The watchdog names the stalled thread; an exception names its thread; a core written
    through the API has the caller first, like a kernel core has the signalled thread first
    (so do the signal, crash and watchdog triggers)."""
    meta = core.metadata
    watch = meta.get("watch")
    if isinstance(watch, dict) and isinstance(watch.get("tid"), int):
        return watch["tid"]
    exc = meta.get("exception")
    if isinstance(exc, dict) and exc.get("thread"):
        for tid, name in names.items():
            if name == exc["thread"]:
                return tid
    for st in core.python_stacks:
        if isinstance(st, dict) and st.get("current") and isinstance(st.get("native_id"), int):
            return st["native_id"]
    for t in core.threads:
        if t.signal:
            return t.tid
    return core.threads[0].tid if core.threads else None


def trigger_of(core: CoreFile, stacks: Optional[list[ThreadStack]] = None) -> Trigger:
    """Why ``core`` was written, the triggering thread and its innermost Python frames.

    ``stacks`` are the core's Python stacks when the caller has them already (default:
    :func:`python_threads`)."""
    meta = core.metadata
    if stacks is None:
        stacks = python_threads(core)
    names = _thread_names(core)
    reason = str(meta.get("reason") or ("kernel" if not meta else "?"))
    tid = _trigger_tid(core, names)
    signo = core.signal or next((t.signal for t in core.threads if t.tid == tid), 0)
    mine = next((s for s in stacks if s.tid == tid), None)
    trig = Trigger(reason, tid, names.get(tid) if tid is not None else None, signal=signo)
    if mine is not None and mine.name:
        trig.thread = mine.name
    exc = meta.get("exception")
    if isinstance(exc, dict) and isinstance(exc.get("text"), str):
        trig.frames = traceback_frames(exc["text"])
        trig.frames_from = "traceback" if trig.frames else ""
        trig.detail["exception"] = exc
    if not trig.frames and mine is not None and mine.frames:
        trig.frames, trig.frames_from = list(mine.frames), "stacks"
    for key in ("watch",):
        if isinstance(meta.get(key), dict):
            trig.detail[key] = meta[key]
    return trig
