"""``gencore stacks``: every Python thread's stack in a core or bundle, read from its memory."""

from __future__ import annotations

import argparse
import json
import linecache
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from ..analysis.core import CoreFile, open_core
from ..analysis.memory import Unreadable
from ..analysis.stacks import FrameInfo, ThreadStack, note_differences
from ..errors import GencoreError, PythonUnavailableError
from ._format import identity_option


def _header(core: CoreFile, out: Any, version: Optional[str] = None) -> None:
    meta = core.metadata
    print(f"Process {core.pid}: {core.command}", file=out)
    version = meta.get("python", {}).get("version") or version
    line = f"Python {version or '?'}"
    if meta.get("reason"):
        line += f", reason: {meta['reason']}"
    print(line, file=out)


def _status(t: ThreadStack, interpreters: bool) -> str:
    parts = []
    if t.holds_gil:
        parts.append("Has the GIL")
    if t.gc_collecting:
        parts.append("Garbage collecting")
    text = f" [{', '.join(parts)}]" if parts else ""
    if interpreters:
        text += (
            " in the main interpreter"
            if t.interpreter_id == 0
            else (f" in interpreter {t.interpreter_id}")
        )
    return text


def format_frame(f: FrameInfo) -> Iterator[str]:
    """pystack's lines for one frame: the place, its source line, and its locals."""
    yield f'    (Python) File "{f.file}", line {f.line}, in {f.qualname}'
    source = linecache.getline(f.file, f.line).strip() if f.line > 0 else ""
    if source:
        yield f"        {source}"
    if f.locals:
        args = [v for v in f.locals if v.argument]
        rest = [v for v in f.locals if not v.argument]
        for title, group in (("Arguments:", args), ("Locals:", rest)):
            if group:
                yield f"      {title}"
                yield from (f"        {v.name}: {v.value}" for v in group)


def format_thread(t: ThreadStack, interpreters: bool = False) -> Iterator[str]:
    """One thread's traceback, outermost frame first (``most recent call last``)."""
    who = f"Thread {t.tid if t.tid is not None else '?'}"
    if t.name:
        who += f' "{t.name}"'
    if t.current:
        who += " (snapshot caller)"
    if not t.frames and not t.error:
        yield f"{who}{_status(t, interpreters)}: no Python frames"
        return
    yield f"{who}{_status(t, interpreters)} (most recent call last):"
    if t.error:
        yield f"    ... {t.error}"
    for f in reversed(t.frames):
        yield from format_frame(f)


def print_threads(threads: Iterable[ThreadStack], out: Any, interpreters: bool) -> int:
    """Print each thread as it comes (streaming); returns how many were printed."""
    n = 0
    for t in threads:
        print("", file=out)
        for line in format_thread(t, interpreters):
            print(line, file=out)
        n += 1
    return n


def print_loops(core: CoreFile, out: Any) -> None:
    """A section per running event loop: its thread and its tasks' coroutine stacks."""
    try:
        report = core.tasks()
    except (GencoreError, Unreadable) as e:
        print(f"\n(asyncio tasks not read: {e})", file=out)
        return
    for lp in report.loops:
        if lp.thread is None:
            continue
        print(
            f"\nEvent loop {lp.address:#x} ({lp.type}) on thread {lp.thread}: "
            f"{lp.pending} pending tasks",
            file=out,
        )
        for t in report.tasks:
            if t.loop != lp.address:
                continue
            chain = " -> ".join(f.qualname for f in t.coroutine) or "?"
            where = f" ({t.coroutine[-1].file}:{t.coroutine[-1].line})" if t.coroutine else ""
            why = f"; {t.blocked_on.description}" if t.blocked_on else ""
            print(f"    Task {t.name!r} {t.id:#x}: {chain}{where}{why}", file=out)


def _note_fallback(core: CoreFile, why: str, out: Any) -> int:
    if not core.python_stacks:
        print(f"gencore: cannot read Python stacks from this core: {why}", file=sys.stderr)
        return 1
    _header(core, out)
    print(f"(from the GENCORE note, taken just before the freeze: {why})", file=out)
    print_threads(core.stacks(source="note"), out, False)
    return 0


def print_stacks(core: CoreFile, out: Any, with_locals: bool = False) -> int:
    """``gencore stacks``' text output; returns the exit status."""
    try:
        model = core.python()
        interpreters = len(list(model.interpreters())) > 1
        threads = core.stacks(locals=with_locals)
    except PythonUnavailableError as e:
        return _note_fallback(core, e.message, out)
    except Unreadable:
        return _note_fallback(core, "its interpreter list is not in the core", out)
    _header(core, out, ".".join(map(str, model.layout.version)))
    print(f"Read from memory: {model.layout.source}", file=out)
    if print_threads(threads, out, interpreters) == 0:
        print("\nno Python thread states in this core's interpreters", file=out)
    print_loops(core, out)
    if core.incomplete_threads:
        print(
            f"\nincomplete threads (did not stop for the snapshot): "
            f"{', '.join(map(str, core.incomplete_threads))}",
            file=out,
        )
    return 0


def _json(core: CoreFile, source: str, with_locals: bool) -> int:
    """Stream the JSON document: the thread records are written one at a time."""
    out = sys.stdout
    layout = None
    if source == "memory":
        layout = core.python().layout.source
    head = {
        "pid": core.pid,
        "python": core.metadata.get("python", {}).get("version"),
        "source": source,
        "layout": layout,
    }
    out.write(json.dumps(head)[:-1] + ', "threads": [')
    for i, t in enumerate(core.stacks(locals=with_locals, source=source)):
        out.write(("," if i else "") + "\n" + json.dumps(t.to_json()))
    out.write("\n]}\n")
    return 0


def _check(core: CoreFile) -> int:
    note = list(core.stacks(source="note"))
    if not note:
        print("gencore: this core's note holds no stacks to compare with", file=sys.stderr)
        return 1
    diffs = note_differences(note, list(core.stacks()))
    for d in diffs:
        print(d)
    print(f"{len(note)} threads in the note, {len(diffs)} differ from memory")
    return 0


def cmd_stacks(args: argparse.Namespace) -> int:
    with open_core(args.core, args.identity) as core:
        source = "note" if args.from_note else "memory"
        if args.check:
            return _check(core)
        if args.json:
            return _json(core, source, args.locals)
        if args.from_note:
            return _note_fallback(core, "asked with --from-note", sys.stdout)
        return print_stacks(core, sys.stdout, args.locals)


def register(sub: Any) -> None:
    """Add ``stacks`` to the ``gencore`` command's subparsers."""
    s = sub.add_parser(
        "stacks",
        help="every Python thread's stack in a core or bundle, read from its memory",
        description="Every Python thread's stack (every interpreter), read from the core's "
        "memory: cores written by gencore, its triggers, the kernel or other tools.",
    )
    s.add_argument("core")
    s.add_argument("--locals", action="store_true", help="each frame's arguments and locals")
    s.add_argument("--json", action="store_true", help="one JSON document, threads streamed")
    s.add_argument(
        "--from-note", action="store_true", help="the copy gencore stored in its note instead"
    )
    s.add_argument(
        "--check", action="store_true", help="compare the note's stacks with the memory's"
    )
    identity_option(s)
    s.set_defaults(func=cmd_stacks)
