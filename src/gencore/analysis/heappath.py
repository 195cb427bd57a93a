"""Reference paths told edge by edge: ``module __main__ global CACHE -> dict['users'] ->
list[7] -> __main__.Session at 0x…``.

The engines give a path as the objects on it, a root first; this module says what each edge
is (a dict's key, a list's index, an attribute, a function's ``__closure__``...) by reading
the referring object again, in the order :meth:`~gencore.analysis.heapwalk.Walker.referents`
reads it, and names the root the way a person finds it (a module's global, a class's
attribute, a thread's frame local).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from . import heaptypes as T
from .heaptypes import TypeInfo
from .heapwalk import Walker
from .memory import Unreadable

__all__ = ["HeapPath", "PathStep", "edge_label", "render"]

_BAD = (Unreadable, struct.error, ValueError, IndexError, OverflowError, UnicodeDecodeError)


@dataclass(frozen=True)
class PathStep:
    """One object on a path, and how it refers to the next one (``None`` for the last)."""

    address: int
    type: str
    edge: Optional[str]


@dataclass(frozen=True)
class HeapPath:
    """The shortest reference path from a root to an object."""

    root: str
    """How the first object is held: ``module __main__ global CACHE``, ``class
    __main__.Registry attribute 'items'``, ``thread 1234 frame handle() local 'pending'``,
    or why gencore takes it as a root."""
    steps: list[PathStep]
    """From the object the root names to the target; each step's ``edge`` leads to the
    next one."""

    @property
    def target(self) -> int:
        """The address of the object the path leads to."""
        return self.steps[-1].address

    def __str__(self) -> str:
        parts = [self.root]
        for s in self.steps:
            if s.edge is None:
                parts.append(f"{s.type} at {s.address:#x}")
            else:
                parts.append(f"{s.type}{s.edge}")
        return " -> ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """``{"root", "target", "steps": [{"address", "type", "edge"}]}``."""
        return {
            "root": self.root,
            "target": self.target,
            "steps": [{"address": s.address, "type": s.type, "edge": s.edge} for s in self.steps],
        }


def _key_text(w: Walker, key: int) -> str:
    try:
        s = w.rd.str_value(key, 200)
    except _BAD:
        s = None
    if s is not None:
        return repr(s if len(s) <= 60 else s[:57] + "...")
    info = w.model.resolve(w.header(key)[1])
    return f"<{info.name if info else 'object'} at {key:#x}>"


def _field_names(w: Walker, info: TypeInfo) -> dict[int, str]:
    """Names of a type's fields by offset: members (``__slots__`` too) and the fields the
    process named for builtin types."""
    out: dict[int, str] = {}
    model, t = w.model, w.model.t
    for b in model._mro(info.addr):  # noqa: SLF001 - the model's reader of the MRO
        for (tp, off), name in w.layout.names.items():
            if tp == b:
                out.setdefault(off, name)
        try:
            p = w.rd.u64(b + t["tp_members"]) if "tp_members" in t else 0
            for i in range(4096 if p else 0):
                name_ptr = w.rd.u64(p + 40 * i)
                if not name_ptr:
                    break
                out.setdefault(w.rd.i64(p + 40 * i + 16), w.rd.c_string(name_ptr, 64))
        except _BAD:
            continue
    return out


def _attr_names(w: Walker, info: TypeInfo) -> list[str]:
    """The attribute names of instances keeping their values outside a dict (3.11+: the
    class's shared keys, in order)."""
    if not info.cached_keys:
        return []
    try:
        entries, esize, n, _ = w.rd.keys_table(info.cached_keys)
        return [
            w.rd.str_value(w.rd.u64(entries + i * esize + esize - 16), 200) or "?" for i in range(n)
        ]
    except _BAD:
        return []


Names = Callable[[int], tuple[str, ...]]
"""The local variable names of a code object (by address), where the model can tell."""


def _managed(w: Walker, obj: int, info: TypeInfo) -> list[tuple[int, str]]:
    rd, attrs = w.rd, _attr_names(w, info)
    vals = list(w._managed(obj, info))  # noqa: SLF001 - the walker's own reading

    def named(vs: list[int]) -> list[tuple[int, str]]:
        return [(v, f".{attrs[i]}" if i < len(attrs) else "") for i, v in enumerate(vs)]

    if info.managed == T.M_313:
        return [(vals[0], ".__dict__")] + named(vals[1:])
    if info.managed == T.M_312:
        values = bool(rd.u64(obj - 24) & 1)
    else:
        values = not rd.u64(obj - 24) and bool(rd.u64(obj - 32))
    return named(vals) if values else [(v, ".__dict__") for v in vals]


def _frame(
    w: Walker, obj: int, info: TypeInfo, ob_size: int, names: Names
) -> list[tuple[int, str]]:
    kids = w._frame_refs(obj, info, ob_size)  # noqa: SLF001
    if info.walk == T.W_FRAME39:
        code = w.rd.u64(obj + w.frame39["code"])
        first = 0
    else:
        code, first = (kids[3] if len(kids) > 3 else 0), 4
        fixed = [".frame_obj", ".f_locals", ".function", ".code"]
    local_names = names(code) if code else ()
    out = []
    for i, c in enumerate(kids):
        if i < first:
            out.append((c, fixed[i]))
        elif i - first < len(local_names):
            out.append((c, f" local {local_names[i - first]!r}"))
        else:
            out.append((c, " value stack"))
    return out


def _kind(w: Walker, obj: int, info: TypeInfo, ob_size: int, names: Names) -> list[tuple[int, str]]:
    rd, kind = w.rd, info.walk
    if kind == T.W_LIST:
        return [(c, f"[{i}]") for i, c in enumerate(rd.words(rd.u64(obj + 24), ob_size))]
    if kind == T.W_TUPLE:
        return [(c, f"[{i}]") for i, c in enumerate(rd.words(obj + rd.tuple_items, ob_size))]
    if kind == T.W_DEQUE:
        kids = w._frame_refs(obj, info, ob_size)  # noqa: SLF001 - the deque's items
        return [(c, f"[{i}]") for i, c in enumerate(kids)]
    if kind == T.W_SET:
        mask, table = rd.u64(obj + 32), rd.u64(obj + 40)
        tw = rd.words(table, 2 * (mask + 1))
        return [(k, " item") for k, h in zip(tw[0::2], tw[1::2]) if k and h != (1 << 64) - 1]
    if kind == T.W_DICT:
        ks, vs = rd.dict_entries(obj)
        if rd.u64(obj + 40):  # split: the keys are the shared keys'
            return [(v, f"[{_key_text(w, k)}]") for k, v in zip(ks, vs) if v]
        out: list[tuple[int, str]] = []
        for k, v in zip(ks, vs):
            if k and v:
                out += [(k, " key"), (v, f"[{_key_text(w, k)}]")]
        return out
    if kind in (T.W_FRAME, T.W_GEN, T.W_FRAME39):
        return _frame(w, obj, info, ob_size, names)
    return []


def _head(w: Walker, obj: int, info: TypeInfo, ob_size: int) -> list[tuple[int, str]]:
    """The references before the variable part: fields, the type's, ``__dict__``."""
    rd = w.rd
    names = _field_names(w, info)
    out = [(rd.u64(obj + o), f".{names.get(o, f'<field +{o}>')}") for o in info.refs]
    if info.walk == T.W_TYPE and info.heap_refs:
        if rd.u64(obj + w.model.t["tp_flags"]) & T.HEAPTYPE:
            out += [(rd.u64(obj + o), f".{names.get(o, f'<field +{o}>')}") for o in info.heap_refs]
    if info.dictoffset:
        n = ob_size if info.sizer != T.S_INT or not w.sizes.get("int_tag") else 0
        n = (1 << 64) - n if n >> 63 else n
        at = (info.basic + n * info.item + 7) // 8 * 8 + info.dictoffset
        out.append((rd.u64(obj + at), ".__dict__"))
    if info.managed:
        out += _managed(w, obj, info)
    return out


def labelled(w: Walker, obj: int, names: Optional[Names] = None) -> list[tuple[int, str]]:
    """``(child, edge)`` for each reference of ``obj``, in the walkers' order; edges are
    empty where the reading does not match the walk's (it never guesses)."""
    _, tp, ob_size = w.header(obj)
    info = w.model.resolve(tp)
    if info is None:
        return []
    kids = w.referents(obj, info, ob_size)
    head = _head(w, obj, info, ob_size)
    out = head + [(p, e) for p, e in _kind(w, obj, info, ob_size, names or (lambda c: ()))]
    out = [(p, e) for p, e in out if p]
    if [p for p, _ in out] != kids:
        return [(p, "") for p in kids]
    return out


def edge_label(w: Walker, parent: int, child: int, names: Optional[Names] = None) -> str:
    """What ``parent``'s reference to ``child`` is (``['key']``, ``[3]``, ``.attr``)."""
    try:
        for c, label in labelled(w, parent, names):
            if c == child:
                return label
    except _BAD:
        pass
    return ""


def _type_name(w: Walker, obj: int) -> str:
    try:
        info = w.model.resolve(w.header(obj)[1])
    except _BAD:
        info = None
    return info.name if info is not None else "?"


def render(
    w: Walker, path: list[int], labels: dict[int, str], names: Optional[Names] = None
) -> HeapPath:
    """Name the root and every edge of ``path`` (addresses, a root first)."""
    edges = [edge_label(w, a, b, names) for a, b in zip(path, path[1:])]
    types = [_type_name(w, a) for a in path]
    root, start = _root_text(w, path, edges, types, labels)
    steps = [
        PathStep(a, types[i], edges[i] if i < len(edges) else None)
        for i, a in enumerate(path)
        if i >= start
    ]
    return HeapPath(root, steps)


def _root_text(
    w: Walker, path: list[int], edges: list[str], types: list[str], labels: dict[int, str]
) -> tuple[str, int]:
    """The root's name and the first step the path shows after it."""
    label = labels.get(path[0])

    def key(i: int) -> Optional[str]:
        e = edges[i] if i < len(edges) else ""
        return e[2:-2] if e.startswith("['") and e.endswith("']") else None

    if label == "sys.modules" and len(path) >= 4 and edges[1] == ".__dict__" and key(0):
        name = key(2)
        if name is not None:
            return f"module {key(0)} global {name}", 3
        return f"module {key(0)}", 1
    if label in ("sys", "builtins") and len(path) >= 2 and key(0):
        return f"{label}.{key(0)}", 1
    if label is not None:
        return label, 0
    if w.model.resolve(path[0]) is not None:  # a type object
        cls = w.model.resolve(path[0])
        assert cls is not None
        if len(path) >= 3 and edges[0] == ".__dict__" and key(1):
            return f"class {cls.name} attribute {key(1)!r}", 2
        return f"class {cls.name}", 0
    try:
        rc = w.header(path[0])[0]
    except _BAD:
        rc = 0
    immortal = w.minor >= 12 and rc & 0xFFFFFFFF >= 1 << 31
    why = "immortal" if immortal else f"refcount {rc & 0xFFFFFFFF if w.minor >= 12 else rc}"
    return f"held outside the objects gencore reads ({why}): {types[0]} at {path[0]:#x}", 0
