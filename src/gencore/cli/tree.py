"""``gencore trigger --tree PID``: every Python process of a tree dumps itself at once.

Processes with the trigger are signalled one right after the other (their dumps start
within microseconds of each other); Python 3.14+ processes without it are injected
(``sys.remote_exec``, at their next safe point, so later). The capture time of each core
comes from its GENCORE note, and the command says how far apart they were. ``--collect``
packs every core (or bundle) with a manifest of the tree into one archive.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import _procfs
from .._common import VERSION
from ..errors import GencoreError
from ._dumps import Dump, open_dump, wait_published

_GENCORE_PROCESSES = ("gencore.ship.helper", "gencore.capture.zpipe")


@dataclass
class Member:
    """One process of the tree and what became of it."""

    pid: int
    ppid: Optional[int]
    cmdline: str
    how: str = "skip"  # signal, inject, skip
    dump: Optional[Dump] = None
    files: list[str] = field(default_factory=list)
    note: str = ""
    time: Optional[float] = None

    def manifest(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "cmdline": self.cmdline,
            "how": self.how,
            "files": [Path(f).name for f in self.files],
            "time": self.time,
            "note": self.note,
        }


def is_python(pid: int) -> bool:
    """Whether ``pid`` runs a CPython interpreter (its executable or a mapped libpython)."""
    exe = os.path.basename(_procfs.executable(pid) or "")
    if exe.startswith("python"):
        return True
    return any("libpython3" in os.path.basename(m.path) for m in _procfs.maps(pid))


def _members(root: int) -> list[Member]:
    from ..capture.delivery import find_state

    if not os.path.exists(f"/proc/{root}"):
        raise GencoreError(f"no process {root}", stage="trigger", advice="check the pid")
    out = []
    for pid in _procfs.descendants(root):
        cmd = b" ".join(_procfs.cmdline(pid)).decode(errors="replace")
        m = Member(pid, _procfs.ppid(pid), cmd)
        out.append(m)
        if pid == os.getpid() or any(g in cmd for g in _GENCORE_PROCESSES):
            m.note = "gencore's own process"
        elif pid != root and _procfs.exit_signal(pid) == 0:
            m.note = "a snapshot child (a core being written)"
        elif not is_python(pid):
            m.note = "not Python"
        else:
            try:
                m.dump = open_dump(pid, find_state(pid), wait=True)
                m.how = "signal"
            except GencoreError:
                m.how, m.note = "inject", "no trigger installed"
    return out


def _inject_all(members: list[Member], args: argparse.Namespace) -> list[threading.Thread]:
    """Start one injection per unarmed Python process (3.14+, the same version as this)."""
    from ..capture.inject import inject

    def one(m: Member) -> None:
        try:
            doc = inject(m.pid, args.directory, True, args.timeout)
        except GencoreError as e:
            m.note = f"not armed, and injection refused: {e}"
            return
        if "error" in doc:
            m.note = f"injected core failed: {doc['error']}"
        else:
            m.files.append(str(doc["ok"]))

    threads: list[threading.Thread] = []
    for m in members:
        if m.how != "inject":
            continue
        if sys.version_info < (3, 14):
            m.note = "no trigger installed (gencore trigger --inject needs Python 3.14+)"
            continue
        t = threading.Thread(target=one, args=(m,), name=f"inject-{m.pid}", daemon=True)
        t.start()
        threads.append(t)
    return threads


def _follow(members: list[Member], deadline: float) -> None:
    """Follow every signalled process's dump to its end (or the deadline)."""
    pending = [m for m in members if m.dump is not None]
    while pending and time.monotonic() < deadline:
        for m in list(pending):
            assert m.dump is not None
            alive = _procfs.alive(m.pid, m.dump.state.get("start_time"))
            if m.dump.poll() or not alive:
                pending.remove(m)
                _settle(m, deadline)
        time.sleep(0.02)
    for m in pending:
        m.note = "no core within the timeout"


def _settle(m: Member, deadline: float) -> None:
    d = m.dump
    assert d is not None
    d.events.close()
    m.files += d.outputs
    if d.error:
        m.note = d.error
    elif not d.outputs and d.name is not None:  # it exited: its snapshot child publishes
        final = wait_published(d.directory, d.name, deadline)
        if final is not None:
            m.files.append(str(final))
            m.note = "the process exited; its core is complete"
        else:
            m.note = f"the process exited; {d.name} was not completed"
    elif not d.outputs:
        m.note = "the process exited before it started a core"


def _capture_time(path: str) -> Optional[float]:
    from ..analysis.core import open_core

    try:
        with open_core(path) as core:
            t = core.metadata.get("time")
            return float(t) if t is not None else None
    except (GencoreError, OSError, ValueError):
        return None


def cmd_tree(args: argparse.Namespace) -> int:
    """The ``--tree`` form of ``gencore trigger``."""
    members = _members(args.pid)
    deadline = time.monotonic() + args.timeout
    for m in members:  # back to back: the dumps start microseconds apart
        if m.dump is not None:
            os.kill(m.pid, int(args.signal or m.dump.state.get("signal") or 0))
    threads = _inject_all(members, args)
    _follow(members, deadline)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for m in members:
        cores = [f for f in m.files if f.endswith((".core", ".core.zst"))]
        m.time = _capture_time(cores[0]) if cores else None
    _print(members)
    if args.collect is not None:
        print(_collect(members, args))
    python = [m for m in members if m.how != "skip"]
    return 0 if python and all(m.files for m in python) else 1


def _print(members: list[Member]) -> None:
    times = [m.time for m in members if m.time is not None]
    first = min(times) if times else 0.0
    for m in members:
        what = " ".join(m.files) if m.files else f"- ({m.note})"
        when = f"  +{(m.time - first) * 1000:.1f} ms" if m.time is not None else ""
        print(f"{m.pid:>7} {m.ppid or 0:>7} {m.how:<6} {what}{when}  {m.cmdline[:60]}")
    if len(times) > 1:
        print(f"capture moments span {(max(times) - first) * 1000:.1f} ms over {len(times)} cores")


def _collect(members: list[Member], args: argparse.Namespace) -> Path:
    """One archive: every process's files under ``<stem>/`` and ``<stem>/manifest.json``."""
    stamp = time.strftime("%Y%m%d.%H%M%S")
    stem = f"tree_{stamp}.{args.pid}"
    out = Path(args.collect) if args.collect else Path.cwd() / f"{stem}.tar.gz"
    times = [m.time for m in members if m.time is not None]
    doc = {
        "root": args.pid,
        "gencore": VERSION,
        "created": time.time(),
        "span_ms": (max(times) - min(times)) * 1000 if times else None,
        "processes": [m.manifest() for m in members],
    }
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz", compresslevel=1) as tar:
        for m in members:
            for path in m.files:
                if os.path.isfile(path):
                    info = tar.gettarinfo(path, arcname=f"{stem}/{Path(path).name}")
                    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                    with open(path, "rb") as src:
                        tar.addfile(info, src)
        data = json.dumps(doc, indent=1).encode()
        info = tarfile.TarInfo(f"{stem}/manifest.json")
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return out
