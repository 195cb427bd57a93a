"""The facts of one incident page, gathered from an opened core through the public API.

Every section is fed by one call of :class:`~gencore.CoreFile`'s API (the note's metadata and
capture report, the Python stacks, the heap census and what it derives); a section the core
cannot answer carries the sentence that says why, and the page shows it instead of guessing.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar

from ..._common import VERSION, format_size
from ...errors import GencoreError
from .trigger import Frame, ThreadStack, Trigger, python_threads, signal_name, trigger_of

if TYPE_CHECKING:
    from ..core import CoreFile
    from ..heap import Census, TypeDiff

__all__ = ["Report", "Section", "ThreadView", "gather"]

T = TypeVar("T")


@dataclass
class Section(Generic[T]):
    """One part of the page: its value, or why the core cannot give it (``why``). ``note``
    says where a value came from or what it leaves out."""

    value: Optional[T] = None
    why: str = ""
    note: str = ""


@dataclass
class ThreadView:
    """One thread of the process as the page shows it."""

    tid: int
    name: Optional[str]
    state: str
    frames: list[Frame]
    skipped: int = 0
    triggering: bool = False
    python: bool = False
    sources: dict[int, str] = field(default_factory=dict)
    """Source text of frames (by index in ``frames``) where the file could be read."""
    native: list[str] = field(default_factory=list)
    """Native frames, innermost first (``gather(..., native=True)``)."""

    def key(self) -> tuple[Any, ...]:
        """What identical stacks share (threads without a Python stack share one key)."""
        return (self.python, tuple(self.frames), self.skipped)


@dataclass
class Report:
    """Everything one incident page shows, gathered by :func:`gather`."""

    title: str
    source: str
    trigger: Trigger
    summary: str
    facts: list[tuple[str, str]]
    capture: list[tuple[str, str]]
    warnings: list[str]
    threads: Section[list[ThreadView]]
    tasks: Section[list[Any]]
    heap: Section[Census]
    diff: Section[list[TypeDiff]]
    retained: Section[Any]
    suspects: Section[list[Any]]
    since: Optional[str] = None
    generated: float = field(default_factory=time.time)


def _when(t: Any) -> str:
    if not isinstance(t, (int, float)) or t <= 0:
        return "unknown"
    local = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))
    utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    return f"{local} ({utc})"


def describe_reason(trig: Trigger) -> str:
    """One sentence: why the core was written."""
    r = trig.reason
    watch = trig.detail.get("watch") or {}
    if r == "api":
        text = "written on request (create_core)"
    elif r == "signal":
        text = f"written on a signal ({signal_name(trig.signal)})" if trig.signal else "on a signal"
    elif r == "crash":
        text = f"the process crashed ({signal_name(trig.signal)})"
    elif r in ("exception", "memory: error"):
        exc = trig.detail.get("exception") or {}
        text = f"unhandled {exc.get('type', 'exception')}: {exc.get('message', '')}".rstrip(": ")
    elif r.startswith("hang") and "stalled_seconds" in watch:
        what = "no thread could take the GIL" if r == "hang: gil" else "the event loop ran nothing"
        text = f"{r}: {what} for {float(watch['stalled_seconds']):.1f} s"
    elif r == "memory: rss" and "rss_bytes" in watch:
        text = (
            f"memory: resident {format_size(int(watch['rss_bytes']))} past the limit of "
            f"{format_size(int(watch.get('rss_limit', 0)))}"
        )
    elif r == "kernel":
        text = "a core not written by gencore (no GENCORE note)"
        if trig.signal:
            text += f", signal {signal_name(trig.signal)}"
    else:
        text = r
    return text


def _command(core: CoreFile) -> str:
    argv = core.metadata.get("argv")
    exe = (core.metadata.get("python") or {}).get("executable")
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        return shlex.join(([exe] if isinstance(exe, str) else []) + argv)
    return core.command or "?"


def _facts(core: CoreFile, trig: Trigger, src: str) -> list[tuple[str, str]]:
    meta = core.metadata
    py: dict[str, Any] = meta["python"] if isinstance(meta.get("python"), dict) else {}
    facts = [
        ("Reason", describe_reason(trig)),
        ("Time", _when(meta.get("time"))),
        ("Host", str(meta.get("host") or core.manifest.get("host") or "unknown")),
        ("Process", f"pid {core.pid}" + (f", parent {core.ppid}" if core.ppid else "")),
        ("Command", _command(core)),
        ("Python", f"{py.get('version', 'unknown')} ({py.get('executable', '?')})"),
        (
            "Written by",
            f"gencore {meta['gencore']}" if meta.get("gencore") else "not gencore (kernel core)",
        ),
        ("Report", f"gencore {VERSION}, from {src}"),
    ]
    if trig.tid is not None:
        facts.insert(1, ("Thread", f"{trig.tid}" + (f" ({trig.thread})" if trig.thread else "")))
    return facts


def _capture(core: CoreFile) -> tuple[list[tuple[str, str]], list[str]]:
    cap = core.capture
    rows: list[tuple[str, str]] = []
    warnings: list[str] = []
    states: dict[str, int] = {}
    for t in cap.get("threads") or []:
        if isinstance(t, dict):
            states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
    rows.append(
        (
            "Threads",
            f"{len(core.threads)}"
            + (" (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")")
            if states
            else f"{len(core.threads)}",
        )
    )
    if isinstance(cap.get("freeze_ns"), int):
        rows.append(("Pause", f"{cap['freeze_ns'] / 1e6:.2f} ms to park every thread"))
    incomplete = core.incomplete_threads
    if incomplete:
        warnings.append(
            f"{len(incomplete)} thread(s) did not stop for the snapshot (signal blocked or in "
            f"uninterruptible sleep): {', '.join(map(str, incomplete))}; their registers are "
            "partial"
        )
    budget = cap.get("budget")
    if isinstance(budget, dict):
        kept: dict[str, Any] = budget["kept"] if isinstance(budget.get("kept"), dict) else {}
        n_ranges = len(budget.get("omitted_ranges") or []) + int(
            budget.get("omitted_ranges_unlisted") or 0
        )
        rows.append(
            (
                "Size cap",
                f"max_size {format_size(int(budget.get('max_size', 0)))}: kept "
                f"{format_size(sum(int(v) for v in kept.values()))} of "
                f"{format_size(int(budget.get('dumpable', 0)))}",
            )
        )
        if budget.get("omitted"):
            warnings.append(
                f"the size cap left out {format_size(int(budget['omitted']))} of memory in "
                f"{n_ranges} range(s): answers that need it say so"
            )
    dumped = sum(m.filesz for m in core.mappings)
    rows.append(
        (
            "Memory",
            f"{format_size(sum(m.size for m in core.mappings))} mapped in "
            f"{len(core.mappings)} mappings, {format_size(dumped)} of it dumped",
        )
    )
    if core.manifest:
        missing = core.manifest.get("missing") or []
        files = core.manifest.get("files") or []
        rows.append(("Bundle", f"{len(files)} files, {len(missing)} missing"))
    return rows, warnings


def _state_of(core: CoreFile) -> dict[int, str]:
    out: dict[int, str] = {}
    for t in core.capture.get("threads") or []:
        if isinstance(t, dict) and isinstance(t.get("tid"), int):
            out[t["tid"]] = str(t.get("state") or "")
    return out


class _Sources:
    """Source lines of frames, from files on this machine that were not modified after the
    core was written (a later edit would show lines that did not run)."""

    def __init__(self, written: Any) -> None:
        self.written = float(written) if isinstance(written, (int, float)) else 0.0
        self.files: dict[str, Optional[list[str]]] = {}

    def line(self, path: str, line: int) -> Optional[str]:
        if path not in self.files:
            self.files[path] = self._read(path)
        lines = self.files[path]
        if lines is None or not 0 < line <= len(lines):
            return None
        return lines[line - 1].strip()

    def _read(self, path: str) -> Optional[list[str]]:
        if not path.endswith(".py") or not os.path.isabs(path) or not self.written:
            return None
        try:
            st = os.stat(path)
            if st.st_mtime > self.written or st.st_size > 8 << 20:
                return None
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return None


def _threads(
    core: CoreFile, stacks: list[ThreadStack], trig: Trigger, with_source: bool
) -> Section[list[ThreadView]]:
    by_tid = {s.tid: s for s in stacks}
    states = _state_of(core)
    names = {
        t["native_id"]: t.get("name")
        for t in core.metadata.get("threads") or []
        if isinstance(t, dict) and isinstance(t.get("native_id"), int)
    }
    sources = _Sources(core.metadata.get("time"))
    views = []
    for t in core.threads:
        s = by_tid.get(t.tid)
        v = ThreadView(
            t.tid,
            (s.name if s else None) or names.get(t.tid),
            states.get(t.tid, ""),
            list(s.frames) if s else [],
            s.skipped if s else 0,
            triggering=t.tid == trig.tid,
            python=s is not None,
        )
        if with_source:
            for i, f in enumerate(v.frames):
                text = sources.line(f.file, f.line)
                if text:
                    v.sources[i] = text
        views.append(v)
    views.sort(key=lambda v: not v.triggering)  # stable: the core's order otherwise
    if stacks:
        note = "Python stacks as the process recorded them just before the snapshot"
        if with_source:
            note += "; source lines from this machine's files where unchanged since"
        return Section(views, note=note)
    return Section(views, why=_no_stacks_why(core))


def _no_stacks_why(core: CoreFile) -> str:
    reason = core.metadata.get("reason")
    if reason in ("signal", "crash") or str(reason).startswith(("hang", "memory: rss")):
        why = f"the {reason} trigger writes its core where Python cannot run"
    elif core.metadata:
        why = "it was written with python_stacks=False"
    else:
        why = "it was not written by gencore"
    return f"no Python stacks in this core: {why}. pystack core CORE reads them from memory"


def _heap(core: CoreFile) -> Section[Census]:
    try:
        census = core.heap()
    except GencoreError as e:
        return Section(why=str(e))
    note = f"{census.objects:,} objects, {format_size(census.bytes)}"
    if census.unreadable:
        note += f"; {census.unreadable:,} references pointed outside the core and were skipped"
    return Section(census, note=note)


def _diff(census: Section[Census], since: Optional[str]) -> Section[list[TypeDiff]]:
    from ..core import open_core

    if since is None:
        return Section(why="no earlier core given (gencore report CORE --since OLD)")
    if census.value is None:
        return Section(why=f"this core has no heap census: {census.why}")
    try:
        with open_core(since) as old_core:
            old = old_core.heap()
    except GencoreError as e:
        return Section(why=f"{since}: {e}")
    diffs = census.value.since(old)
    note = (
        f"since {Path(since).name}: {census.value.objects - old.objects:+,} objects, "
        f"{format_size(old.bytes)} -> {format_size(census.value.bytes)}"
    )
    return Section(diffs, note=note)


def _api(obj: Any, name: str, what: str) -> Section[Any]:
    """A section fed by an API this gencore may not have yet (``CoreFile.tasks()``,
    ``Census.retained()``, ``Census.suspects()``)."""
    call = getattr(obj, name, None)
    if obj is None or call is None:
        return Section(why=f"this gencore ({VERSION}) does not read {what} from cores")
    try:
        return Section(call())
    except GencoreError as e:
        return Section(why=str(e))


def _add_native(core: CoreFile, threads: Section[list[ThreadView]]) -> None:
    from .native import native_stacks

    stacks, said = native_stacks(core)
    for v in threads.value or []:
        v.native = stacks.get(v.tid, [])
    threads.note = "; ".join(x for x in (threads.note, said) if x)


def gather(
    core: CoreFile,
    *,
    since: Optional[str] = None,
    with_source: bool = True,
    native: bool = False,
) -> Report:
    """Gather what the incident page of ``core`` shows, through :class:`CoreFile`'s API.

    ``since`` is an earlier core of the same process: the heap's differences from it.
    ``with_source`` adds source lines read from this machine's files (only files unchanged
    since the core was written); ``native`` adds every thread's native frames where this
    machine has ``eu-stack``."""
    src = str(core.source or core.path)
    stacks = python_threads(core)
    trig = trigger_of(core, stacks)
    capture, warnings = _capture(core)
    heap = _heap(core)
    census = heap.value
    title = f"{describe_reason(trig)} — pid {core.pid} on {core.metadata.get('host') or '?'}"
    summary = describe_reason(trig)
    if trig.frames:
        summary += f", in {trig.frames[0].function} ({Path(trig.frames[0].file).name}:"
        summary += f"{trig.frames[0].line})"
    threads = _threads(core, stacks, trig, with_source)
    if native:
        _add_native(core, threads)
    return Report(
        title=title,
        source=src,
        trigger=trig,
        summary=summary,
        facts=_facts(core, trig, src),
        capture=capture,
        warnings=warnings,
        threads=threads,
        tasks=_api(core, "tasks", "asyncio tasks"),
        heap=heap,
        diff=_diff(heap, since),
        retained=_api(census, "retained", "retained sizes"),
        suspects=_api(census, "suspects", "leak suspects"),
        since=since,
    )
