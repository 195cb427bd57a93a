"""Native frames of every thread, where this machine has elfutils' ``eu-stack``.

The core is read with this machine's executable and libraries (a bundle's own copies are not
used: its core is all ``open_core`` extracts), so the page says where the symbols came from;
a missing tool or a failed run is a sentence on the page, never an error of the report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core import CoreFile

__all__ = ["MAX_FRAMES", "native_stacks"]

MAX_FRAMES = 48
TIMEOUT_S = 120
_TID = re.compile(r"^TID (\d+):$")
_FRAME = re.compile(r"^#(\d+)\s+(0x[0-9a-f]+)\s*(.*)$")


def parse(text: str) -> dict[int, list[str]]:
    """``eu-stack``'s output as frames per thread id, innermost first (``function`` or the
    address where it has no symbol)."""
    out: dict[int, list[str]] = {}
    cur: list[str] = []
    for line in text.splitlines():
        m = _TID.match(line)
        if m:
            cur = out.setdefault(int(m[1]), [])
            continue
        f = _FRAME.match(line)
        if f:
            cur.append(f[3].strip() or f[2])
    return out


def native_stacks(core: CoreFile) -> tuple[dict[int, list[str]], str]:
    """Every thread's native frames from ``eu-stack --core`` (innermost first), and where
    they came from, or ``{}`` and why there are none."""
    tool = shutil.which("eu-stack")
    if tool is None:
        return {}, "no native frames: eu-stack (elfutils) is not installed on this machine"
    exe = (core.metadata.get("python") or {}).get("executable")
    cmd = [tool, "--core", str(core.path), "-n", str(MAX_FRAMES)]
    if isinstance(exe, str) and os.path.exists(exe):
        cmd += ["-e", os.path.realpath(exe)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"no native frames: eu-stack did not finish: {e}"
    stacks = parse(p.stdout)
    if not stacks:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, f"no native frames: eu-stack read no thread: {last}"
    return stacks, "native frames by eu-stack with this machine's executable and libraries"
