"""The census and the questions after it, over a heap an engine walked.

:func:`make_census` walks one interpreter's heap (native or pure engine) and returns a
:class:`~gencore.analysis.heapresults.Census` that keeps the walk (:class:`State`) for the
questions a leak hunt asks next: retained bytes, paths, suspects, duplicates, referrers.
Results come back from the engines as addresses and type indexes; names, values and path
labels are read here, the same way for both engines.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Optional, Union

from . import heapengine
from . import heapresults as R
from .heappath import HeapPath, render
from .heaproots import Selection, select
from .heaptypes import HeapLayout, TypeInfo
from .heapwalk import Walker, omitted_ranges
from .memory import Unreadable

__all__ = ["State", "make_census"]

MAX_SUSPECTS = 10
_BAD = (Unreadable, struct.error, ValueError, IndexError, OverflowError, UnicodeDecodeError)


class State:
    """A walked heap kept open for the questions after the census."""

    def __init__(self, w: Walker, e: heapengine.Engine, sel: Selection) -> None:
        self.w, self.e, self.sel = w, e, sel
        self.labels: dict[int, str] = {}
        for r in sel.roots:
            self.labels.setdefault(r.address, r.label)
        self.built: Optional[tuple[int, int, int, int, int]] = None
        self._names: dict[int, tuple[str, ...]] = {}

    # -- reading single objects -------------------------------------------------------------

    def info(self, address: int) -> Optional[TypeInfo]:
        try:
            return self.w.model.resolve(self.w.header(address)[1])
        except _BAD:
            return None

    def type_name(self, address: int) -> str:
        info = self.info(address)
        return info.name if info is not None else "?"

    def object(self, address: int) -> R.HeapObject:
        """The object at ``address``: its type and size as the census reads them."""
        w = self.w
        info = self.info(address)
        if info is None:
            raise KeyError(f"no object at {address:#x}")
        return R.HeapObject(address, info.name, w.size_of(address, info, w.header(address)[2]))

    def value_of(self, address: int) -> Optional[str]:
        """A short text for values of simple types (``--show-values``); ``<redacted>`` for
        the text a redacted core's snapshot child scrubbed."""
        w, info = self.w, self.info(address)
        if info is None:
            return None
        b = w.layout.builtins
        redacted = w.core.metadata.get("redact") == "values"
        try:
            if info.addr == b.get("str"):
                s = w.rd.str_value(address, 1 << 20)
                if s and redacted and not s.strip("\0"):
                    return "<redacted>"
                return None if s is None else repr(s[:80])
            if info.addr == b.get("bytes"):
                n = w.header(address)[2]
                data = w.rd.raw(address + info.basic - 1, min(n, 60))
                return "<redacted>" if data and redacted and not data.strip(b"\0") else repr(data)
            if info.addr == b.get("float"):
                return repr(struct.unpack("<d", w.rd.raw(address + 16, 8))[0])
        except _BAD:
            return None
        return None

    def code_names(self, code: int) -> tuple[str, ...]:
        """A code object's local names (for frame edges), where the model reads them."""
        if code not in self._names:
            names: tuple[str, ...] = ()
            try:
                c = self.w.core.python().code(code)  # type: ignore[attr-defined]
                names = c.names if c is not None else ()
            except Exception:  # noqa: BLE001 - the model cannot read it: no names, a path
                names = ()
            self._names[code] = names
        return self._names[code]

    def render(self, path: list[int]) -> HeapPath:
        return render(self.w, path, self.labels, self.code_names)

    # -- questions ---------------------------------------------------------------------------

    def graph(self) -> tuple[int, int, int, int, int]:
        if self.built is None:
            self.built = self.e.graph([r.address for r in self.sel.roots])
        return self.built

    def referrers(self, type_name: str, census: R.Census) -> R.Referrers:
        """Which types refer to objects of ``type_name`` (references the census follows)."""
        order = self.w.model.order
        targets = [t.addr for t in order if t.name == type_name]
        counts: dict[str, int] = {}
        for idx, n in self.e.referrers(targets).items():
            counts[order[idx].name] = counts.get(order[idx].name, 0) + n
        stat = census.get(type_name)
        return R.Referrers(
            type_name,
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
            stat.count if stat else 0,
        )

    def retained(self, top: int) -> R.Retained:
        """Retained bytes per type and of the ``top`` objects retaining most."""
        reached, garbage, garbage_bytes, roots, reached_bytes = self.graph()
        order = self.w.model.order
        by_name: dict[str, list[int]] = {}
        for idx, (count, own, ret) in self.e.type_retained().items():
            rec = by_name.setdefault(order[idx].name, [0, 0, 0])
            rec[0] += count
            rec[1] += own
            rec[2] += ret
        types = [R.RetainedType(n, c, b, r) for n, (c, b, r) in by_name.items()]
        types.sort(key=lambda t: (-t.retained, t.type))
        objects = []
        for addr, ret in self.e.top(top):
            obj = self.object(addr)
            objects.append(R.RetainedObject(addr, obj.type, obj.bytes or 0, ret))
        return R.Retained(types, objects, roots, reached, reached_bytes, garbage, garbage_bytes)

    def retained_of(self, addresses: list[int]) -> list[Optional[int]]:
        self.graph()
        return self.e.retained_of(addresses)

    def path_to(self, target: Union[str, int]) -> Optional[HeapPath]:
        """The shortest path from a root to ``target`` (an address, or a type name: its
        instance retaining most)."""
        self.graph()
        if isinstance(target, str):
            idxs = [t.index for t in self.w.model.order if t.name == target]
            best: list[tuple[int, int]] = []
            for i in idxs:
                best += self.e.top(1, i)
            if not best:
                raise KeyError(f"no object of type {target!r} that a root reaches")
            addr = min(best, key=lambda p: (-p[1], p[0]))[0]
        else:
            addr = int(target)
        path = self.e.paths([addr])[0]
        return self.render(path) if path else None

    def suspects(self, threshold: float, total: int) -> list[R.Suspect]:
        """Leak suspects retaining at least ``threshold`` of ``total`` bytes. A group whose
        owner is itself a suspect is told with it (where its memory accumulates), not
        apart; groups directly under the roots are not suspects (no object owns them)."""
        self.graph()
        limit = max(1, math.ceil(threshold * total))
        order = self.w.model.order
        found = self.e.suspects(limit)
        singles = {example for _, _, count, _, example in found if count == 0}
        holds: dict[int, tuple[str, int, int]] = {}
        kept = []
        for owner, idx, count, ret, example in found:
            if count and owner in singles:
                holds.setdefault(owner, (order[idx].name, count, ret))
            elif count == 0 or owner != 0:
                kept.append((owner, idx, count, ret, example))
        kept = kept[:MAX_SUSPECTS]
        targets = [(owner if count else example) for owner, _, count, _, example in kept]
        paths = self.e.paths(targets) if targets else []
        out = []
        for (owner, idx, count, ret, example), path in zip(kept, paths):
            out.append(
                R.Suspect(
                    "group" if count else "object",
                    order[idx].name,
                    count or 1,
                    ret,
                    ret / total if total else 0.0,
                    example,
                    owner if count else None,
                    self.type_name(owner) if count else None,
                    self.render(path) if path else None,
                    holds.get(example) if not count else None,
                )
            )
        return out

    def duplicates(self, top: int, show_values: bool) -> list[R.Duplicate]:
        """``str`` and ``bytes`` values held more than once."""
        out = []
        for kind, example, count, _total, wasted, each in self.e.duplicates(2, top):
            value = self.value_of(example) if show_values else None
            out.append(
                R.Duplicate("bytes" if kind == 0 else "str", count, each, wasted, example, value)
            )
        return out


def _counts(w: Walker, counts: dict[int, Any]) -> list[R.TypeStat]:
    by_name: dict[str, list[int]] = {}
    for idx, (c, b, u) in counts.items():
        rec = by_name.setdefault(w.model.order[idx].name, [0, 0, 0])
        rec[0] += c
        rec[1] += b
        rec[2] += u
    types = [R.TypeStat(n, c, b, u) for n, (c, b, u) in by_name.items()]
    types.sort(key=lambda t: (-t.bytes, t.type))
    return types


def make_census(
    core: Any,
    largest: int,
    show_values: bool,
    interpreter: Optional[int],
    engine: Optional[str],
) -> R.Census:
    """Walk one interpreter's heap and count it (see :func:`gencore.analysis.heap.census`)."""
    layout = HeapLayout.from_core(core)
    sel = select(core, layout, interpreter)
    w = Walker(core, heads=sel.heads)
    e = heapengine.engine(w, engine)
    r = e.census(largest, [root.address for root in sel.roots])
    st = State(w, e, sel)
    types = _counts(w, r["counts"])
    big = [
        R.HeapObject(a, st.type_name(a), n, st.value_of(a) if show_values else None)
        for a, n in r["largest"]
    ]
    return R.Census(
        python=str(core.metadata.get("python", {}).get("version", "?")),
        objects=r["nodes"],
        bytes=sum(t.bytes for t in types),
        anon_bytes=sum(m.filesz for m in core.mappings if not m.path),
        types=types,
        tracked=r["tracked"],
        unreadable=r["unreadable"],
        largest=big,
        core=core,
        unsized=sum(t.unsized for t in types),
        omitted=r["omitted"],
        omitted_bytes=sum(b - a for a, b in omitted_ranges(core)),
        lists_cut=r["lists_cut"],
        interpreter=sel.number,
        interpreters=sel.count,
        frames_note=sel.frames_note,
        engine=e.name,
        _state=st,
    )
