"""The two heap engines behind :mod:`gencore.analysis.heap`, with one interface.

:class:`NativeEngine` runs the walk and the graph in C (``gencore._native``);
:class:`PureEngine` in Python (:mod:`~gencore.analysis.heapwalk`,
:mod:`~gencore.analysis.heapgraph`), for the pure wheel. They give identical answers; which
one runs is :func:`engine`'s choice (``GENCORE_HEAP_ENGINE=pure`` forces the pure one).
Addresses go in and out; both keep the :class:`~gencore.analysis.heapwalk.Walker` that reads
single objects and names types.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from . import heapgraph, heapnative
from .heapgraph import SUPER, Graph
from .heapwalk import Walker
from .memory import Unreadable

__all__ = ["Engine", "NativeEngine", "PureEngine", "engine"]


class PureEngine:
    """Both passes in Python."""

    name = "pure"

    def __init__(self, w: Walker) -> None:
        self.w = w
        self.g: Optional[Graph] = None

    def census(self, largest: int, roots: list[int]) -> dict[str, Any]:
        w = self.w
        w.walk(largest, roots)
        return {
            "tracked": w.tracked,
            "unreadable": w.unreadable,
            "omitted": w.omitted_refs,
            "lists_cut": w.lists_cut,
            "nodes": len(w.nodes),
            "counts": {k: tuple(v) for k, v in w.count.items()},
            "largest": w.largest(),
        }

    def graph(self, explicit: list[int]) -> tuple[int, int, int, int, int]:
        g = self.g = Graph(self.w, explicit)
        garbage, garbage_bytes = g.garbage()
        reached = len(g.order) - garbage
        reached_bytes = sum(g.size[i] for i in range(len(g.order)) if g.reachable(i))
        return reached, garbage, garbage_bytes, len(g.roots), reached_bytes

    def _g(self) -> Graph:
        assert self.g is not None, "graph() first"
        return self.g

    def type_retained(self) -> dict[int, tuple[int, int, int]]:
        return self._g().type_retained()

    def referrers(self, targets: list[int]) -> dict[int, int]:
        w, want = self.w, set(targets)
        out: dict[int, int] = {}
        for a in w.by_offset():
            info = w.nodes[a]
            if info.leaf:
                continue
            try:
                kids = w.referents(a, info, w.header(a)[2], soft=True)
            except (Unreadable, ValueError, IndexError):
                continue
            for c in kids:
                ci = w.nodes.get(c)
                if ci is not None and ci.addr in want:
                    out[info.index] = out.get(info.index, 0) + 1
        return out

    def top(self, k: int, type_index: Optional[int] = None) -> list[tuple[int, int]]:
        g = self._g()
        cand = [
            i
            for i in range(len(g.order))
            if g.reachable(i)
            and (type_index is None or self.w.nodes[g.order[i]].index == type_index)
        ]
        cand.sort(key=lambda i: (-g.retained[i], g.order[i]))
        return [(g.order[i], g.retained[i]) for i in cand[:k]]

    def paths(self, targets: list[int]) -> list[list[int]]:
        g = self._g()
        out = []
        for t in targets:
            i = g.index.get(t)
            out.append([g.order[j] for j in g.path(i)] if i is not None else [])
        return out

    def suspects(self, threshold: int) -> list[tuple[int, int, int, int, int]]:
        g = self._g()
        return [
            (0 if o == SUPER else g.order[o], t, c, r, g.order[e])
            for o, t, c, r, e in g.suspects(threshold)
        ]

    def retained_of(self, addrs: list[int]) -> list[Optional[int]]:
        g = self._g()
        out: list[Optional[int]] = []
        for a in addrs:
            i = g.index.get(a)
            out.append(g.retained[i] if i is not None and g.reachable(i) else None)
        return out

    def roots(self) -> list[int]:
        g = self._g()
        return [g.order[i] for i in g.roots]

    def duplicates(self, min_count: int, top: int) -> list[tuple[int, int, int, int, int, int]]:
        return heapgraph.duplicates(self.w, min_count, top)


class NativeEngine:
    """Both passes in C."""

    name = "native"

    def __init__(self, w: Walker) -> None:
        self.w = w
        self.n = heapnative.NativeWalk(w)

    def census(self, largest: int, roots: list[int]) -> dict[str, Any]:
        return self.n.census(largest, roots)

    def graph(self, explicit: list[int]) -> tuple[int, int, int, int, int]:
        r = self.n.op(heapnative.GRAPH, explicit)
        return r[0], r[1], r[2], r[3], r[4]

    def type_retained(self) -> dict[int, tuple[int, int, int]]:
        r = self.n.op(heapnative.TYPERET, [])
        return {r[i]: (r[i + 1], r[i + 2], r[i + 3]) for i in range(0, len(r), 4)}

    def referrers(self, targets: list[int]) -> dict[int, int]:
        r = self.n.op(heapnative.REFERRERS, targets)
        return {r[i]: r[i + 1] for i in range(0, len(r), 2)}

    def top(self, k: int, type_index: Optional[int] = None) -> list[tuple[int, int]]:
        req = [k] if type_index is None else [k, type_index]
        r = self.n.op(heapnative.TOP, req)
        pairs = [(r[i + 1], r[i]) for i in range(0, len(r), 2)]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return pairs

    def paths(self, targets: list[int]) -> list[list[int]]:
        r = self.n.op(heapnative.PATHS, targets)
        out, i = [], 0
        while i < len(r):
            n = r[i]
            out.append(r[i + 1 : i + 1 + n])
            i += 1 + n
        return out

    def suspects(self, threshold: int) -> list[tuple[int, int, int, int, int]]:
        r = self.n.op(heapnative.SUSPECTS, [threshold])
        return [(r[i], r[i + 1], r[i + 2], r[i + 3], r[i + 4]) for i in range(0, len(r), 5)]

    def retained_of(self, addrs: list[int]) -> list[Optional[int]]:
        r = self.n.op(heapnative.RETAINED, addrs)
        return [None if v == (1 << 64) - 1 else v for v in r]

    def roots(self) -> list[int]:
        return self.n.op(heapnative.ROOTS, [])

    def duplicates(self, min_count: int, top: int) -> list[tuple[int, int, int, int, int, int]]:
        r = self.n.op(heapnative.DUPS, [min_count, top])
        return [
            (r[i], r[i + 1], r[i + 2], r[i + 3], r[i + 4], r[i + 5]) for i in range(0, len(r), 6)
        ]


Engine = Union[NativeEngine, PureEngine]


def engine(w: Walker, name: Optional[str] = None) -> Engine:
    """The native engine where it is available, else the pure one; ``name`` ("native" or
    "pure") insists on one."""
    if name == "pure" or (name is None and not heapnative.available()):
        return PureEngine(w)
    if name not in (None, "native"):
        raise ValueError(f"unknown heap engine {name!r} (native or pure)")
    return NativeEngine(w)
