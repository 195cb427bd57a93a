"""Following triggered dumps through a process's events file (``gencore trigger``, single
and ``--tree``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from .._common import stem_of
from ..errors import GencoreError
from ._format import Progress

__all__ = ["Dump", "open_dump", "wait_published"]


class Dump:
    """One triggered dump, followed through the process's events file."""

    def __init__(self, pid: int, state: dict[str, Any], events: Any, wait: bool) -> None:
        self.pid = pid
        self.state = state
        self.events = events
        self.wait = wait
        self.directory = Path(state["directory"])
        self.name: Optional[str] = None
        self.core_done = False
        self.outputs: list[str] = []  # what the command prints for this process
        self.error: Optional[str] = None
        self.finished = False
        self._buf = ""

    def poll(self, progress: Optional[Progress] = None) -> bool:
        """Read what the process wrote since; True once this dump is over (outputs or
        error set)."""
        self._buf += self.events.read().decode(errors="replace")
        lines, _, self._buf = self._buf.rpartition("\n")
        for line in lines.splitlines():
            if not self.finished:
                self._event(line, progress)
        return self.finished

    def _end(self, output: Optional[str] = None, error: Optional[str] = None) -> None:
        if output is not None:
            self.outputs.append(output)
        self.error = error
        self.finished = True

    def _ours(self, parts: list[str]) -> bool:
        return bool(parts) and self.name is not None and parts[0].startswith(stem_of(self.name))

    def _event(self, line: str, progress: Optional[Progress]) -> None:
        word, _, rest = line.partition(" ")
        parts = rest.split()
        if word == "start" and self.name is None:
            self.name = parts[0]
            if not self.wait:
                self._end(str(self.directory / self.name))
        elif word == "skipped" and self.name is None:
            self._end(
                error=f"process {self.pid} skipped the dump ({parts[0] if parts else '?'} guard)"
            )
        elif word == "progress" and parts and parts[0] == self.name and progress is not None:
            progress(int(parts[1]), int(parts[2]))
        elif word == "error" and parts and parts[0] == self.name:
            self._end(error=f"the core failed: {os.strerror(int(parts[1]))}")
        elif word == "done" and parts and parts[0] == self.name:
            self.core_done = True
            self.outputs.append(str(self.directory / self.name))
            if not self.state.get("collect") and not self.state.get("upload"):
                self._end()
        elif word == "bundle" and self.core_done:
            self.outputs.append(str(self.directory / parts[0]))
            if not self.state.get("upload"):
                self._end()
        elif word == "upload" and self.core_done and len(parts) > 1 and self._ours(parts):
            self._end(parts[1])
        elif word == "upload-error" and self.core_done and self._ours(parts):
            self._end(error=f"the upload failed: {rest}")
        elif word == "bundle-error" and self.core_done:
            self._end(error=f"bundling failed: {rest}")


def open_dump(pid: int, state: dict[str, Any], wait: bool) -> Dump:
    try:
        # kept open: an exiting process removes its events file, what it wrote stays readable
        events = open(state["events"], "rb")
    except OSError as e:
        raise GencoreError(
            f"cannot read the events of process {pid}: {e}", stage="trigger", advice=""
        ) from None
    events.seek(0, os.SEEK_END)
    return Dump(pid, state, events, wait)


def wait_published(directory: Path, name: str, deadline: float) -> Optional[Path]:
    """Wait while ``.NAME.partial`` exists (its snapshot child writes it); the final path once
    published, else None."""
    final, partial = directory / name, directory / f".{name}.partial"
    while time.monotonic() < deadline and not final.exists() and partial.exists():
        time.sleep(0.05)
    return final if final.exists() else None
