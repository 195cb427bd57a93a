"""The answers of ``gencore heap`` as Python objects, with their documented JSON shapes.

:class:`Census` is what :func:`gencore.analysis.heap.census` returns; its methods ask the
walked heap it keeps (:mod:`gencore.analysis.heapquery`) the questions after the census.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union

from .heappath import HeapPath

__all__ = [
    "Census",
    "Duplicate",
    "HeapObject",
    "Referrers",
    "Retained",
    "RetainedObject",
    "RetainedType",
    "Suspect",
    "TypeDiff",
    "TypeStat",
]


class Questions(Protocol):
    """What a census asks of the heap it walked (:class:`gencore.analysis.heapquery.State`)."""

    def referrers(self, type_name: str, census: Census) -> Referrers: ...
    def object(self, address: int) -> HeapObject: ...
    def retained(self, top: int) -> Retained: ...
    def retained_of(self, addresses: list[int]) -> list[Optional[int]]: ...
    def path_to(self, target: Union[str, int]) -> Optional[HeapPath]: ...
    def suspects(self, threshold: float, total: int) -> list[Suspect]: ...
    def duplicates(self, top: int, show_values: bool) -> list[Duplicate]: ...


@dataclass(frozen=True)
class TypeStat:
    """Objects of one type: how many, and their bytes as ``sys.getsizeof`` counts them
    (``unsized`` of them are of a size gencore cannot know and are left out of ``bytes``)."""

    type: str
    count: int
    bytes: int
    unsized: int = 0


@dataclass(frozen=True)
class TypeDiff:
    """One type's change between an older census and a newer one."""

    type: str
    count: int
    bytes: int
    old_count: int
    old_bytes: int

    @property
    def status(self) -> str:
        """``new`` (absent before), ``vanished`` (absent now) or ``changed``."""
        if self.old_count == 0:
            return "new"
        if self.count + self.old_count == 0:
            return "vanished"
        return "changed"


@dataclass(frozen=True)
class HeapObject:
    """One object: its address, type, size (None: unknown) and (when asked for) a short
    value."""

    address: int
    type: str
    bytes: Optional[int]
    value: Optional[str] = None


@dataclass(frozen=True)
class Referrers:
    """Which types hold references to objects of ``type``, with the number of references."""

    type: str
    referrers: list[tuple[str, int]]
    targets: int

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``gencore heap --referrers``."""
        return {
            "type": self.type,
            "objects": self.targets,
            "referrers": [{"type": t, "count": c} for t, c in self.referrers],
        }


@dataclass(frozen=True)
class RetainedType:
    """A type's instances a root reaches: how many, their own bytes, and the bytes that would
    be freed if they all went (their retained bytes, counted once: an instance inside
    another one's retained set is not counted again)."""

    type: str
    count: int
    bytes: int
    retained: int


@dataclass(frozen=True)
class RetainedObject:
    """One object and the bytes freed if it went."""

    address: int
    type: str
    bytes: int
    retained: int


@dataclass
class Retained:
    """Retained bytes per type and for the objects retaining most (:meth:`Census.retained`)."""

    types: list[RetainedType]
    objects: list[RetainedObject]
    roots: int
    reachable: int
    """Objects a root reaches."""
    reachable_bytes: int
    garbage: int
    """Objects no root reaches: unreachable but not yet collected (cycles waiting for the
    collector)."""
    garbage_bytes: int

    def to_json(self, top: Optional[int] = None) -> dict[str, Any]:
        """The documented JSON shape of ``gencore heap --retained``."""
        return {
            "roots": self.roots,
            "reachable": self.reachable,
            "reachable_bytes": self.reachable_bytes,
            "garbage": {"objects": self.garbage, "bytes": self.garbage_bytes},
            "types": [
                {"type": t.type, "count": t.count, "bytes": t.bytes, "retained": t.retained}
                for t in self.types[:top]
            ],
            "objects": [
                {"address": o.address, "type": o.type, "bytes": o.bytes, "retained": o.retained}
                for o in self.objects
            ],
        }


@dataclass(frozen=True)
class Suspect:
    """An object, or a group of same-type objects under one owner, retaining a large share of
    the heap (Eclipse MAT's rule), with the path to it (to the owner, for a group)."""

    kind: str
    """``object`` or ``group``."""
    type: str
    count: int
    """1 for an object; the group's size."""
    retained: int
    share: float
    """``retained`` over the census's bytes."""
    address: int
    """The object, or the group's member retaining most."""
    owner: Optional[int]
    owner_type: Optional[str]
    path: Optional[HeapPath]
    holds: Optional[tuple[str, int, int]] = None
    """For an object: ``(type, count, retained)`` of the objects of one type it immediately
    dominates that make up 10% or more of the heap together (where its memory accumulates)."""

    def to_json(self) -> dict[str, Any]:
        """One entry of ``gencore heap --suspects --json``."""
        holds = None
        if self.holds is not None:
            holds = {"type": self.holds[0], "count": self.holds[1], "retained": self.holds[2]}
        return {
            "kind": self.kind,
            "type": self.type,
            "count": self.count,
            "retained": self.retained,
            "share": round(self.share, 4),
            "address": self.address,
            "owner": self.owner,
            "owner_type": self.owner_type,
            "path": self.path.to_json() if self.path else None,
            "holds": holds,
        }


@dataclass(frozen=True)
class Duplicate:
    """A ``str`` or ``bytes`` value held by several objects: ``wasted`` is what all copies but
    one take."""

    type: str
    count: int
    bytes: int
    """The size of one copy."""
    wasted: int
    address: int
    """The copy at the lowest address."""
    value: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        """One entry of ``gencore heap --duplicates --json``."""
        doc: dict[str, Any] = {
            "type": self.type,
            "count": self.count,
            "bytes": self.bytes,
            "wasted": self.wasted,
            "address": self.address,
        }
        if self.value is not None:
            doc["value"] = self.value
        return doc


@dataclass
class Census:
    """Count and bytes per type of every object found in the core's heap.

    Iterating yields ``(type, count, bytes)``, largest bytes first.
    """

    python: str
    objects: int
    bytes: int
    anon_bytes: int
    types: list[TypeStat]
    tracked: int = 0
    unreadable: int = 0
    largest: list[HeapObject] = field(default_factory=list)
    core: Optional[Any] = field(default=None, repr=False, compare=False)
    unsized: int = 0
    """Objects of a size gencore cannot know (left out of ``bytes``)."""
    omitted: int = 0
    """References into memory a ``max_size`` cap left out of the core."""
    omitted_bytes: int = 0
    """The size of the memory the cap left out."""
    lists_cut: int = 0
    """The collector's lists that run through that memory: the objects linked in the gap
    are not counted."""
    interpreter: int = 0
    """The id of the interpreter censused (0: the main one)."""
    interpreters: int = 1
    """How many interpreters the core holds."""
    frames_note: Optional[str] = None
    """Why thread frames' locals are not among the roots, if they are not."""
    engine: str = ""
    """``native`` or ``pure``: which walker counted."""
    _state: Optional[Questions] = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Any:
        return ((t.type, t.count, t.bytes) for t in self.types)

    def __len__(self) -> int:
        return len(self.types)

    def get(self, type_name: str) -> Optional[TypeStat]:
        """The entry for ``type_name`` (``dict``, ``__main__.Order``), if present."""
        return next((t for t in self.types if t.type == type_name), None)

    def to_json(self, top: Optional[int] = None) -> dict[str, Any]:
        """The documented JSON shape of ``gencore heap --json``."""
        doc: dict[str, Any] = {
            "python": self.python,
            "interpreter": self.interpreter,
            "interpreters": self.interpreters,
            "objects": self.objects,
            "bytes": self.bytes,
            "unsized": self.unsized,
            "anon_bytes": self.anon_bytes,
            "tracked": self.tracked,
            "unreadable": self.unreadable,
            "omitted": self.omitted,
            "omitted_bytes": self.omitted_bytes,
            "lists_cut": self.lists_cut,
            "types": [_type_json(t) for t in self.types[:top]],
        }
        if self.largest:
            doc["largest"] = [
                {"address": o.address, "type": o.type, "bytes": o.bytes}
                | ({"value": o.value} if o.value is not None else {})
                for o in self.largest
            ]
        return doc

    def since(self, old: Census) -> list[TypeDiff]:
        """What changed since ``old`` (an earlier core of the same process), largest growth
        in bytes first; types that appeared or vanished are included."""
        before = {t.type: t for t in old.types}
        now = {t.type: t for t in self.types}
        out = []
        for name in before.keys() | now.keys():
            b, n = before.get(name), now.get(name)
            bc, bb = (b.count, b.bytes) if b else (0, 0)
            nc, nb = (n.count, n.bytes) if n else (0, 0)
            if (bc, bb) != (nc, nb):
                out.append(TypeDiff(name, nc - bc, nb - bb, bc, bb))
        out.sort(key=lambda d: (-d.bytes, -d.count, d.type))
        return out

    def _st(self) -> Questions:
        if self._state is None:
            raise ValueError("this census is not attached to an open core")
        return self._state

    def referrers(self, type_name: str) -> Referrers:
        """Which types refer to objects of ``type_name``."""
        return self._st().referrers(type_name, self)

    def object(self, address: int) -> HeapObject:
        """The object at ``address`` (its type and size as the census reads them)."""
        return self._st().object(address)

    def retained(self, top: int = 20) -> Retained:
        """Retained bytes per type, and the ``top`` objects retaining most."""
        return self._st().retained(top)

    def retained_of(self, addresses: list[int]) -> list[Optional[int]]:
        """The retained bytes of each object (None: not an object a root reaches)."""
        return self._st().retained_of(addresses)

    def path_to(self, target: Union[str, int]) -> Optional[HeapPath]:
        """The shortest reference path from a root to the object at address ``target``, or
        (a type name) to the instance of that type retaining most. None: no root reaches
        it.

        Raises:
            KeyError: no object of that type, or no object at that address, in the census.
        """
        return self._st().path_to(target)

    def suspects(self, threshold: float = 0.10) -> list[Suspect]:
        """Objects, and groups of same-type objects under one owner, that retain at least
        ``threshold`` of the census's bytes (an object none of whose dominated objects does;
        a group none of whose members does alone), each with its path."""
        return self._st().suspects(threshold, self.bytes)

    def duplicates(self, top: int = 20, show_values: bool = False) -> list[Duplicate]:
        """``str`` and ``bytes`` values held by more than one object, most bytes wasted first;
        ``show_values`` adds a short text of each value (off by default: values may be
        private)."""
        return self._st().duplicates(top, show_values)


def _type_json(t: TypeStat) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": t.type, "count": t.count, "bytes": t.bytes}
    if t.unsized:
        doc["unsized"] = t.unsized
    return doc
