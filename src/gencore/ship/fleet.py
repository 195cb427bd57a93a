"""Many cores, few causes: a fleet's uploaded cores grouped by what triggered them.

Grouping reads only the JSON manifests next to the uploaded objects (their ``trigger``: the
reason and the triggering thread's innermost Python frames), never the cores: 300 cores
uploaded overnight are grouped in one listing of the store. Cores whose manifest has no frames
(uploaded by an older gencore, or a core with no Python stack) group by their reason alone
and say so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["DEPTH", "CoreGroup", "group_cores", "signature"]

DEPTH = 3
"""Innermost frames that make two cores the same problem (function and file; lines move
between releases of the same code)."""


def _when(doc: dict[str, Any]) -> float:
    t = doc.get("time") or doc.get("uploaded") or 0
    return float(t) if isinstance(t, (int, float)) else 0.0


def _frames(doc: dict[str, Any]) -> list[dict[str, Any]]:
    trig = doc.get("trigger")
    frames = trig.get("frames") if isinstance(trig, dict) else None
    if not isinstance(frames, list):
        return []
    return [f for f in frames if isinstance(f, dict)]


def _cause(doc: dict[str, Any]) -> str:
    """The reason, with the crash's signal or the exception's type where the manifest has
    them (two different crashes in the same function are different problems)."""
    reason = str(doc.get("reason") or "unknown")
    trig: dict[str, Any] = doc["trigger"] if isinstance(doc.get("trigger"), dict) else {}
    if trig.get("exception"):
        return f"{reason}: {trig['exception']}"
    if reason == "crash" and trig.get("signal"):
        from ..analysis.report.trigger import signal_name

        return f"crash: {signal_name(int(trig['signal']))}"
    return reason


def signature(doc: dict[str, Any], depth: int = DEPTH) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What makes cores the same problem: the cause and the triggering thread's ``depth``
    innermost frames (function, file)."""
    frames = tuple(
        (str(f.get("function") or "?"), str(f.get("file") or "?")) for f in _frames(doc)[:depth]
    )
    return _cause(doc), frames


@dataclass
class CoreGroup:
    """Cores with the same cause and innermost frames, newest first."""

    cause: str
    frames: list[dict[str, Any]]
    cores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A short stable name for the group (file names of its report)."""
        text = repr((self.cause, [(f.get("function"), f.get("file")) for f in self.frames]))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]

    @property
    def count(self) -> int:
        """How many cores."""
        return len(self.cores)

    @property
    def first(self) -> float:
        """When the oldest was written (seconds since the epoch; 0 if unknown)."""
        return min(_when(d) for d in self.cores)

    @property
    def last(self) -> float:
        """When the newest was written."""
        return max(_when(d) for d in self.cores)

    @property
    def hosts(self) -> list[str]:
        """The hosts that wrote them, most cores first."""
        counts: dict[str, int] = {}
        for d in self.cores:
            h = str(d.get("host") or "?")
            counts[h] = counts.get(h, 0) + 1
        return sorted(counts, key=lambda h: (-counts[h], h))

    @property
    def representative(self) -> dict[str, Any]:
        """The newest core's manifest: the one whose report stands for the group."""
        return self.cores[0]

    @property
    def frames_known(self) -> bool:
        """Whether the manifests carried the triggering thread's frames."""
        return bool(self.frames)

    def to_json(self) -> dict[str, Any]:
        """The documented shape of ``gencore ls --group --json``."""
        return {
            "group": self.key,
            "cause": self.cause,
            "frames": self.frames,
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "hosts": self.hosts,
            "representative": self.representative.get("object"),
            "cores": [d.get("object") for d in self.cores],
        }


def group_cores(docs: list[dict[str, Any]], depth: int = DEPTH) -> list[CoreGroup]:
    """Manifests (:func:`~gencore.ship.upload.list_cores`) grouped by :func:`signature`,
    the group with the newest core first."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], CoreGroup] = {}
    for d in sorted(docs, key=_when, reverse=True):
        sig = signature(d, depth)
        g: Optional[CoreGroup] = groups.get(sig)
        if g is None:
            g = groups[sig] = CoreGroup(sig[0], _frames(d)[:depth])
        g.cores.append(d)
    return sorted(groups.values(), key=lambda g: (-g.last, -g.count, g.cause))
