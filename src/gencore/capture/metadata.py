"""The GENCORE note: metadata and Python stacks, taken just before the freeze.

The document is JSON so that any tool (and ``gencore stacks``) can read it without knowing
interpreter internals. Work here is O(threads + frames): it runs with the GIL held right before
the pause and counts towards it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any, Optional

from . import heaplayout as _heaplayout

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


def python_stacks() -> list[dict[str, Any]]:
    """Every Python thread's stack, with name, ident and native id.

    gencore's own frames on top of the calling thread's stack are left out: the stack shows
    the application at the point where it asked for the core.
    """
    by_ident = {t.ident: t for t in threading.enumerate()}
    current = threading.get_ident()
    result = []
    for ident, frame in sys._current_frames().items():
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
                "frames": frames,
                "frames_skipped": skipped,
            }
        )
    return result


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
