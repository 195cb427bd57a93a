"""Why memory is kept, in pure Python: roots, the dominator tree, retained sizes, paths,
leak suspects and duplicate values over the objects a :class:`~.heapwalk.Walker` found.

The native engine (``gc_heapgraph.c``) computes the same answers; this module is their
definition and the pure wheel's implementation:

- **nodes**: every object the census found, in the order of their place in the core file;
  **edges**: the references :meth:`Walker.referents` reads (not the ``soft`` ones of extension
  types), to objects that are nodes, duplicates kept (a list holding one object twice refers
  to it twice).
- **roots**, in this order, each once: ``sys.modules``, ``sys.__dict__`` and
  ``builtins.__dict__``; what the caller adds (thread frames' locals); every type object; then
  every object whose reference count is higher than the references found to it (held from
  C code, the interpreter, a frame, or an object the walk does not read), immortal objects
  included. A virtual super-root points to each root in that order.
- **garbage**: objects no root reaches (cycles waiting for the collector).
- **retained bytes** of an object: its size plus the retained bytes of the objects it
  immediately dominates (those that go when it goes); objects of unknown size weigh 0.
  A type's retained bytes: the sum over its instances that no other instance of it dominates.
- **paths**: breadth-first from the super-root over the roots in order and each object's
  references in order; an object's path is the one that first reached it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Optional

from . import heaptypes as T
from .heapwalk import Walker
from .memory import MAX_ITEMS, Unreadable

__all__ = ["Graph", "SUPER"]

SUPER = -1
"""The virtual super-root's index in :attr:`Graph.idom`."""


class Graph:
    """The object graph of one walked heap, its roots and dominators."""

    def __init__(self, w: Walker, explicit: Iterable[int] = ()) -> None:
        self.w = w
        self.order = list(w.by_offset())
        self.index = {a: i for i, a in enumerate(self.order)}
        n = len(self.order)
        self.succ: list[list[int]] = [[] for _ in range(n)]
        self.size = [0] * n
        indeg = [0] * n
        for i, a in enumerate(self.order):
            info = w.nodes[a]
            rc, _, ob_size = w.header(a)
            s = w.size_of(a, info, ob_size)
            self.size[i] = s or 0
            if info.leaf:
                continue
            try:
                refs = w.referents(a, info, ob_size)
            except (Unreadable, ValueError, IndexError):
                continue
            out = self.succ[i]
            for r in refs:
                j = self.index.get(r)
                if j is not None:
                    out.append(j)
                    indeg[j] += 1
        self.roots = self._roots(list(explicit), indeg)
        self.idom: list[Optional[int]] = [None] * n
        self._dominators()
        self.retained = self._retained()

    def _refcnt(self, a: int) -> Optional[int]:
        """The reference count, or None for an immortal object (3.12+)."""
        rc = self.w.header(a)[0]
        if self.w.minor >= 12:
            low = rc & 0xFFFFFFFF
            return None if low >= 1 << 31 else low
        return rc - (1 << 64) if rc >> 63 else rc

    def _roots(self, explicit: list[int], indeg: list[int]) -> list[int]:
        w, out, seen = self.w, [], set()

        def add(i: Optional[int]) -> None:
            if i is not None and i not in seen:
                seen.add(i)
                out.append(i)

        for a in explicit:
            add(self.index.get(a))
        self.phase = [len(out), 0]
        for i, a in enumerate(self.order):
            if w.nodes[a].walk == T.W_TYPE:
                add(i)
        self.phase[1] = len(out)
        for i, a in enumerate(self.order):
            rc = self._refcnt(a)
            if rc is None or rc > indeg[i]:
                add(i)
        return out

    # -- dominators -------------------------------------------------------------------------

    def _dominators(self) -> None:
        """Cooper, Harvey and Kennedy's iterative algorithm over the reverse postorder."""
        n = len(self.order)
        post = [-1] * n
        rpo: list[int] = []
        seen = bytearray(n)
        for r in self.roots:  # depth first from the super-root, roots in order
            if seen[r]:
                continue
            seen[r] = 1
            stack = [(r, 0)]
            while stack:
                u, k = stack[-1]
                succ = self.succ[u]
                if k < len(succ):
                    stack[-1] = (u, k + 1)
                    v = succ[k]
                    if not seen[v]:
                        seen[v] = 1
                        stack.append((v, 0))
                else:
                    stack.pop()
                    post[u] = len(rpo)
                    rpo.append(u)
        rpo.reverse()
        top = len(rpo)  # the super-root's postorder number: above every node's
        preds: list[list[int]] = [[] for _ in range(n)]
        for u in rpo:
            for v in self.succ[u]:
                preds[v].append(u)
        idom: list[Optional[int]] = [None] * n
        for r in self.roots:
            idom[r] = SUPER
        rootset = set(self.roots)

        def po(x: int) -> int:
            return top if x == SUPER else post[x]

        def intersect(a: int, b: int) -> int:
            while a != b:
                while po(a) < po(b):
                    a = idom[a]  # type: ignore[assignment]
                while po(b) < po(a):
                    b = idom[b]  # type: ignore[assignment]
            return a

        changed = True
        while changed:
            changed = False
            for v in rpo:
                if v in rootset:
                    continue
                new: Optional[int] = None
                for p in preds[v]:
                    if idom[p] is None:
                        continue
                    new = p if new is None else intersect(p, new)
                if new is not None and idom[v] != new:
                    idom[v] = new
                    changed = True
        self.idom = idom
        self.rpo = rpo

    def _retained(self) -> list[int]:
        ret = list(self.size)
        for v in reversed(self.rpo):
            d = self.idom[v]
            if d is not None and d != SUPER:
                ret[d] += ret[v]
        return ret

    # -- answers ----------------------------------------------------------------------------

    def reachable(self, i: int) -> bool:
        """Whether a root reaches node ``i``."""
        return self.idom[i] is not None

    def garbage(self) -> tuple[int, int]:
        """(objects, bytes) no root reaches."""
        idx = [i for i in range(len(self.order)) if self.idom[i] is None]
        return len(idx), sum(self.size[i] for i in idx)

    def type_retained(self) -> dict[int, tuple[int, int, int]]:
        """Per type index: (instances reached, their own bytes, retained bytes of the
        instances no other instance of the type dominates)."""
        w = self.w
        kids: list[list[int]] = [[] for _ in range(len(self.order))]
        tops: list[int] = []
        for v in self.rpo:
            d = self.idom[v]
            (tops if d == SUPER else kids[d]).append(v)  # type: ignore[index]
        out: dict[int, list[int]] = {}
        active: dict[int, int] = {}
        stack: list[tuple[int, bool]] = [(v, True) for v in reversed(tops)]
        while stack:
            v, entering = stack.pop()
            t = w.nodes[self.order[v]].index
            if not entering:
                active[t] -= 1
                continue
            rec = out.setdefault(t, [0, 0, 0])
            rec[0] += 1
            rec[1] += self.size[v]
            if not active.get(t):
                rec[2] += self.retained[v]
            active[t] = active.get(t, 0) + 1
            stack.append((v, False))
            stack.extend((c, True) for c in reversed(kids[v]))
        return {t: (c, b, r) for t, (c, b, r) in out.items()}

    def top(self, k: int) -> list[int]:
        """The ``k`` reached objects retaining most (ties: lower address first)."""
        cand = [i for i in range(len(self.order)) if self.idom[i] is not None]
        cand.sort(key=lambda i: (-self.retained[i], self.order[i]))
        return cand[:k]

    def path(self, target: int) -> list[int]:
        """Node indexes from a root to ``target`` (empty if no root reaches it): breadth
        first from the explicit roots, then, for what they do not reach, from the type
        objects, then from the objects held elsewhere."""
        parent: dict[int, int] = {}
        q: deque[int] = deque()
        bounds = [self.phase[0], self.phase[1], len(self.roots)]
        k = 0
        for end in bounds:
            for r in self.roots[k:end]:
                if r not in parent:
                    parent[r] = SUPER
                    q.append(r)
            k = end
            while q and target not in parent:
                u = q.popleft()
                for v in self.succ[u]:
                    if v not in parent:
                        parent[v] = u
                        q.append(v)
        if target not in parent:
            return []
        out = [target]
        while parent[out[-1]] != SUPER:
            out.append(parent[out[-1]])
        return out[::-1]

    def suspects(self, threshold: int) -> list[tuple[int, int, int, int, int]]:
        """MAT's leak suspects: ``(owner, type index, count, retained, example)`` per
        suspect; a single object has ``count`` 0 and is its own owner and example. Single:
        an object retaining at least ``threshold`` bytes none of whose dominated objects
        does. Group: objects of one type immediately dominated by one owner (the super-root
        included, as ``SUPER``) that retain ``threshold`` together, none of them alone."""
        w = self.w
        out: list[tuple[int, int, int, int, int]] = []
        big_child: set[int] = set()
        groups: dict[tuple[int, int], list[int]] = {}
        for v in self.rpo:
            d = self.idom[v]
            assert d is not None
            if self.retained[v] >= threshold and d != SUPER:
                big_child.add(d)
            if d == SUPER or self.retained[d] >= threshold:
                key = (d, w.nodes[self.order[v]].index)
                g = groups.setdefault(key, [0, 0, 0, -1])
                g[0] += 1
                g[1] += self.retained[v]
                if self.retained[v] > g[2] or (
                    self.retained[v] == g[2] and self.order[v] < self.order[g[3]]
                ):
                    g[2], g[3] = self.retained[v], v
        for v in self.rpo:
            if self.retained[v] >= threshold and v not in big_child:
                out.append((v, w.nodes[self.order[v]].index, 0, self.retained[v], v))
        for (d, t), (count, total, biggest, example) in groups.items():
            if count >= 2 and total >= threshold and biggest < threshold:
                out.append((d, t, count, total, example))
        out.sort(key=lambda s: (-s[3], self.order[s[4]]))
        return out


def duplicates(
    w: Walker, min_count: int = 2, top: int = 20
) -> list[tuple[int, int, int, int, int, int]]:
    """``str`` and ``bytes`` values held by ``min_count`` or more objects, most bytes wasted
    first: ``(kind, example, count, bytes, wasted, each)`` where kind is 0 for bytes and a
    str's bytes per character, example the lowest address, wasted the bytes beyond the
    smallest copy and each that copy's size."""
    rd, L = w.rd, w.layout
    str_t, bytes_t = L.builtins.get("str", -1), L.builtins.get("bytes", -1)
    bytes_info = w.model.resolve(bytes_t)
    groups: dict[tuple[int, bytes], list[tuple[int, int]]] = {}
    for a in w.by_offset():
        info = w.nodes[a]
        if info.addr not in (str_t, bytes_t):
            continue
        try:
            _, _, ob_size = w.header(a)
            if info.addr == bytes_t and bytes_info is not None:
                if ob_size > rd.dumped:
                    continue
                key = (0, rd.raw(a + bytes_info.basic - 1, ob_size))
            else:
                state = rd.u32(a + rd.s["state"])
                kind = (state >> 2) & 7
                if kind not in (1, 2, 4) or not state & 32 or ob_size > MAX_ITEMS:
                    continue
                hdr = rd.s["ascii_header"] if state & 64 else rd.s["compact_header"]
                key = (kind, rd.raw(a + hdr, ob_size * kind))
        except (Unreadable, ValueError):
            continue
        size = w.size_of(a, info, ob_size)
        if size is not None:
            groups.setdefault(key, []).append((a, size))
    out = []
    for (kind, _), members in groups.items():
        if len(members) >= min_count:
            total = sum(s for _, s in members)
            least = min(s for _, s in members)
            out.append(
                (kind, min(a for a, _ in members), len(members), total, total - least, least)
            )
    out.sort(key=lambda r: (-r[4], r[1]))
    return out[:top]
