"""What the heap walker needs beyond object headers, found from live sample objects.

:mod:`gencore.capture.heaplayout` records where the collector's lists start and the type and
``str`` offsets. Reading every object the way the interpreter does also needs:

- where builtin types keep their references (a function's code, globals, defaults and closure;
  a cell's contents; a bound method's function and self...). A sample of each type is made here
  and its memory scanned for the addresses of what ``gc.get_referents`` (and its attributes)
  return: the offsets that hold them are recorded per type;
- the figures of ``sys.getsizeof``'s formulas for the types whose size is not
  ``tp_basicsize + ob_size * tp_itemsize`` (generators, coroutines and frames with their
  frames inline since 3.11, code objects, ``array.array``, ``collections.deque``,
  ``OrderedDict``, type objects); each formula's fields are confirmed on samples against
  ``sys.getsizeof`` before they are recorded;
- the interpreter's roots: ``sys.modules``, ``sys.__dict__`` and ``builtins.__dict__``, and
  where the interpreter state keeps them (for other interpreters of the same process).

A part that cannot be confirmed is left out (the walker then reports those sizes as unknown, or
does not follow those references) and named under ``missing``; nothing is guessed.
"""

from __future__ import annotations

import array
import builtins
import collections
import functools
import gc
import struct
import sys
import types
from typing import Any, Callable

from .selfmem import i32, read, u64

V = sys.version_info[:2]

# CPython's internal layouts per version (Include/internal/pycore_frame.h, cpython/code.h),
# each confirmed below on a live object before it is used.
# 3.11+: _PyInterpreterFrame: offsets of the code object (f_code/f_executable), the function,
# f_locals, frame_obj, the stack top (an int index, or 3.14's stack pointer), owner, localsplus.
_IFRAME_312 = {"code": 0, "func": 16, "locals": 40, "frame_obj": 48, "stacktop": 64, "owner": 70,
               "localsplus": 72}  # fmt: skip
_IFRAME_314 = {"code": 0, "func": 16, "locals": 40, "frame_obj": 48, "stackpointer": 64,
               "owner": 74, "localsplus": 80}  # fmt: skip
_IFRAME = {
    (3, 11): {"code": 32, "func": 0, "locals": 24, "frame_obj": 40, "stacktop": 64, "owner": 69,
              "localsplus": 72},
    (3, 12): _IFRAME_312,
    (3, 13): _IFRAME_312,
    (3, 14): _IFRAME_314,
    (3, 15): _IFRAME_314,
}  # fmt: skip
# The int32 fields of a code object whose sum is its frame's slot count (3.11: co_nlocalsplus
# + co_stacksize; 3.12+: co_framesize); 3.9/3.10: the fields code_sizeof and frame_sizeof read.
_CODE_SLOTS = {(3, 11): [68, 76]}
_CODE_FRAMESIZE = 76  # 3.12-3.15
_CODE_39 = {
    "nlocals": 28,
    "stacksize": 32,
    "code": 48,
    "freevars": 80,
    "cellvars": 88,
    "cell2arg": 96,
    "extra": 144,
    "opcache": 160,
    "opcache_size": 172,
}
# 3.9/3.10 PyFrameObject: the value stack's base and top (3.9 a pointer, 3.10 a depth)
_FRAME_39 = {
    (3, 9): {"code": 32, "valuestack": 64, "stacktop": 72},
    (3, 10): {"code": 32, "valuestack": 64, "stackdepth": 80},
}
TAG_MASK = (1 << 64) - 8  # 3.14's _PyStackRef keeps flags in the low bits

T_OBJECT, T_OBJECT_EX = 6, 16
_TYPE_SIZE: int = type.__basicsize__  # type: ignore[assignment]  # typeshed: a method


_u64, _i32 = u64, i32  # this process's memory, read through /proc/self/mem


Readable = Callable[[int, int], bool]


def _words(readable: Readable, addr: int, start: int, end: int) -> list[int]:
    if end <= start or not readable(addr + start, end - start):
        raise LookupError("sample object not readable")
    n = (end - start) // 8
    return list(struct.unpack(f"<{n}Q", read(addr + start, 8 * n)))


def _offsets_of(
    readable: Readable, obj: object, wanted: dict[int, str], start: int, end: int
) -> list[tuple[int, str]]:
    """(offset, name) in ``[start, end)`` of ``obj`` whose word is a wanted object's address."""
    words = _words(readable, id(obj), start, end)
    return [
        (start + 8 * i, wanted[w & TAG_MASK])
        for i, w in enumerate(words)
        if w and (w & TAG_MASK) in wanted
    ]


def A(obj: object, *names: str) -> tuple[tuple[str, Any], ...]:
    """``(name, obj.name)`` for each attribute that exists."""
    return tuple((n, getattr(obj, n)) for n in names if hasattr(obj, n))


def _referents(obj: object, extra: tuple[tuple[str, Any], ...]) -> dict[int, str]:
    """The objects a sample refers to, by address: the attribute that shows each (an object
    ``gc.get_referents`` gives and no attribute names is named after its type)."""
    out = {id(r): type(r).__name__ for r in gc.get_referents(obj)}
    out.update(
        (id(x), name) for name, x in extra if x is not None and not isinstance(x, (int, bool))
    )
    return out


# -- samples ---------------------------------------------------------------------------------


def _sample_function() -> tuple[types.FunctionType, tuple[tuple[str, Any], ...]]:
    cell_value = ["cell"]

    def sample(a: Any = cell_value, *, b: Any = "kw") -> Any:
        """doc"""
        return cell_value

    sample.attribute = 1  # type: ignore[attr-defined]
    extra = A(sample, "__code__", "__globals__", "__name__", "__qualname__", "__module__",
              "__doc__", "__defaults__", "__kwdefaults__", "__closure__", "__annotations__",
              "__dict__", "__type_params__", "__builtins__")  # fmt: skip
    f: Any = sample
    return f, extra


def _raise_key() -> None:
    raise KeyError("first")


def _sample_exception() -> tuple[BaseException, tuple[tuple[str, Any], ...]]:
    try:
        try:
            _raise_key()
        except KeyError:
            raise ValueError("sample") from KeyError("cause")
    except ValueError as e:
        e.note = "x"  # type: ignore[attr-defined]
        if hasattr(e, "add_note"):
            e.add_note("note")
        extra = A(e, "args", "__traceback__", "__context__", "__cause__", "__dict__", "__notes__")
        return e, extra
    raise AssertionError


def _gen_sample() -> Any:
    local_a, local_b = ["gen-a"], ["gen-b"]
    yield local_a
    yield local_b


async def _coro_sample() -> Any:
    return None


async def _agen_sample() -> Any:
    yield None


class _Described:
    """Instances give descriptors and properties to calibrate."""

    __slots__ = ("slot",)

    def method(self) -> None:
        pass

    @property
    def prop(self) -> int:
        """prop doc"""
        return 1


def _samples() -> list[tuple[object, tuple[tuple[str, Any], ...], int]]:
    """(object, extra referents, end of the fixed part to scan; 0 for basicsize)."""
    fn, fn_extra = _sample_function()
    exc, exc_extra = _sample_exception()
    try:
        _raise_key()
    except KeyError as k:
        tb = k.__traceback__  # two levels: tb_next is set
    assert tb is not None and fn.__closure__ is not None
    cell = fn.__closure__[0]
    d = {"k": "v"}
    lst = [1, 2]
    st = {1, 2}
    bound = _Described().method
    part = functools.partial(print, 1, end="")
    wr_target = _Described
    cb = lambda r: None  # noqa: E731
    import _thread

    loc = _thread._local()
    loc.value = ["local"]  # its per-thread dict exists once an attribute is set
    prop = _Described.__dict__["prop"]
    wr = __import__("weakref").ref(wr_target, cb)
    out: list[tuple[object, tuple[tuple[str, Any], ...], int]] = [
        (fn, fn_extra, 0),
        (cell, A(cell, "cell_contents"), 0),
        (len, A(len, "__self__", "__module__"), 0),
        (lst.append, A(lst.append, "__self__"), 0),
        (bound, A(bound, "__func__", "__self__"), 0),
        (exc, exc_extra, 0),
        (tb, A(tb, "tb_frame", "tb_next"), 0),
        (types.MappingProxyType(d), (("mapping", d),), 0),
        (d.keys(), A(d.keys(), "mapping"), 0),
        (iter(lst), (("list", lst),), 0),
        (iter((1, 2)), (), 0),
        (iter(d), (("dict", d),), 0),
        (iter(d.items()), (("dict", d),), 0),
        (iter(st), (("set", st),), 0),
        (enumerate(lst), (), 0),
        (zip(lst, lst), (), 0),
        (map(str, lst), (), 0),
        (filter(None, lst), (), 0),
        (reversed(lst), (("list", lst),), 0),
        (super(_Described, _Described()), A(super(_Described, _Described()), "__thisclass__"), 0),
        (memoryview(b"sample"), A(memoryview(b"sample"), "obj"), 0),
        (prop, A(prop, "fget", "fset", "fdel", "__doc__"), 0),
        (staticmethod(len), (("__func__", len),), 0),
        (classmethod(_close), (("__func__", _close),), 0),
        (part, A(part, "func", "args", "keywords"), 0),
        (types.SimpleNamespace(a=1), (), 0),
        (list.append, (("__objclass__", list),), 0),
        (_Described.__dict__["slot"], (("__objclass__", _Described),), 0),
        (str.__add__, (("__objclass__", str),), 0),
        ((1).__add__, (("__self__", 1),), 0),
        (wr, (("__callback__", cb),), 0),
        (slice(lst, d, st), A(slice(lst, d, st), "start", "stop", "step"), 0),
        (range(3), (), 0),
        (loc, (), 0),
        (sys.modules[__name__], (("__dict__", sys.modules[__name__].__dict__),), 0),
    ]
    return out


# -- references ------------------------------------------------------------------------------


def _owned_frame() -> types.FrameType:
    """A frame object that outlived its call: it owns its data and its f_back is set."""

    def inner() -> types.FrameType:
        return sys._getframe(0)

    def outer() -> types.FrameType:
        return inner()

    return outer()


def _optional_samples() -> list[tuple[object, tuple[tuple[str, Any], ...]]]:
    """Samples of common types from modules this process already imported (none is
    imported here for it)."""
    out: list[tuple[object, tuple[tuple[str, Any], ...]]] = []
    mods = sys.modules
    if "functools" in mods:
        cached = functools.lru_cache(maxsize=4)(len)
        cached("x")
        out.append((cached, A(cached, "__wrapped__", "__dict__")))
    if "io" in mods:
        import io

        raw = io.BytesIO(b"sample")
        buf = io.BufferedReader(raw)
        text = io.TextIOWrapper(buf, encoding="utf-8")
        out += [
            (raw, ()),
            (io.StringIO("sample"), ()),
            (buf, A(buf, "raw")),
            (text, A(text, "buffer", "encoding")),
        ]
    if "re" in mods:
        import re

        pat = re.compile("(sa)mple")
        m = pat.match("sample")
        out += [(pat, A(pat, "pattern")), (m, A(m, "string", "re"))]
    return out


def follow_offsets(readable: Readable, gens: dict[str, Any]) -> dict[str, list[Any]]:
    """Per builtin type (by address): ``[offset, name]`` of the fields of its fixed part that
    hold references, named after the attribute that shows each."""
    out: dict[str, dict[int, str]] = {}

    def add(
        obj: object, extra: tuple[tuple[str, Any], ...], start: int, end: int, key: Any = None
    ) -> None:
        k = str(id(key if key is not None else type(obj)))
        for off, name in _offsets_of(readable, obj, _referents(obj, extra), start, end):
            out.setdefault(k, {}).setdefault(off, name)

    for obj, extra, end in _samples():
        size = type(obj).__basicsize__
        key = BaseException if isinstance(obj, BaseException) else None
        add(obj, extra, 16 if not type(obj).__itemsize__ else 24, end or size, key)
    for obj, extra in _optional_samples():
        add(obj, extra, 16, type(obj).__basicsize__)
    # code objects: only their object fields (ints are left out of the scan's targets)
    code = _sample_function()[0].__code__
    names = (
        "co_consts",
        "co_names",
        "co_varnames",
        "co_filename",
        "co_name",
        "co_qualname",
        "co_linetable",
        "co_exceptiontable",
        "co_freevars",
        "co_cellvars",
    )
    add(code, A(code, *names), 16, type(code).__basicsize__)
    # a class: its dict, bases, mro and base
    cls = _Described
    d = gc.get_referents(cls)
    dct = next((x for x in d if type(x) is dict), None)
    add(
        cls,
        (("__dict__", dct), *A(cls, "__bases__", "__mro__", "__base__")),
        16,
        _TYPE_SIZE,
    )
    # frames and generators: only the fixed fields before their locals
    fr = _owned_frame()
    fr.f_trace = _sample_function()[0]
    try:
        end = gens.get("frame_data" if V >= (3, 11) else "frame_localsplus", 0)
        if end:  # else the frame layout is unknown: frames' fields are not followed
            add(fr, A(fr, "f_back", "f_code", "f_globals", "f_builtins", "f_trace"), 16, end)
    finally:
        fr.f_trace = None
    if end and V >= (3, 11) and 16 not in out[str(id(types.FrameType))]:
        raise LookupError("a frame object's f_back is not where expected")
    for name, make in (("gen", _gen_sample), ("coro", _coro_sample), ("agen", _agen_sample)):
        g: Any = make()
        try:
            end = gens.get(f"{name}_iframe", 0) or (V < (3, 11) and type(g).__basicsize__)
            if end:
                add(g, A(g, "__name__", "__qualname__", "gi_code", "cr_code", "ag_code",
                          "gi_frame", "cr_frame", "ag_frame"), 16, end)  # fmt: skip
        finally:
            _close(g)
    return {k: [[off, v[off]] for off in sorted(v)] for k, v in out.items()}


# -- sizes -----------------------------------------------------------------------------------


def _close(g: Any) -> None:
    """Close a sample generator or coroutine (an async generator needs nothing)."""
    close = getattr(g, "close", None)
    if close is not None:
        close()


def _pre(obj: object) -> int:
    """The bytes sys.getsizeof adds before an instance of this type (GC header, and 3.11+'s
    managed dict and weakref pointers)."""
    flags = type(obj).__flags__
    pre = 16 if flags & (1 << 14) else 0
    if V >= (3, 11) and flags & ((1 << 4) | ((1 << 3) if V >= (3, 12) else 0)):
        pre += 16
    return pre


def _slots(code: types.CodeType) -> int:
    """A code object's frame slots, read the way the offline walker reads them."""
    if V >= (3, 12):
        return _i32(id(code) + _CODE_FRAMESIZE)
    return sum(_i32(id(code) + off) for off in _CODE_SLOTS[V])


def _frames_39(readable: Readable) -> dict[str, Any]:
    """3.9/3.10: frames are objects with their locals after the header; code fields from
    CPython's header, confirmed on a suspended generator's frame."""
    out: dict[str, Any] = {"code": dict(_CODE_39)}
    fo = _FRAME_39[V]
    out["frame"] = dict(fo)
    out["frame_localsplus"] = types.FrameType.__basicsize__ - 8
    g = _gen_sample()
    next(g)
    f = g.gi_frame
    code = g.gi_code
    if _u64(id(f) + out["frame_localsplus"]) != id(f.f_locals["local_a"]):
        raise LookupError("the frame's first local is not at f_localsplus")
    if _u64(id(f) + fo["code"]) != id(code):
        raise LookupError("the frame's code is not where CPython's header puts it")
    if _u64(id(code) + _CODE_39["cellvars"]) != id(code.co_cellvars):
        raise LookupError("code fields are not where CPython's header puts them")
    if _i32(id(code) + _CODE_39["nlocals"]) != code.co_nlocals:
        raise LookupError("co_nlocals is not where CPython's header puts it")
    extras = code.co_nlocals + len(code.co_cellvars) + len(code.co_freevars) + code.co_stacksize
    if sys.getsizeof(f) != types.FrameType.__basicsize__ + 8 * (extras - 1) + 16:
        raise LookupError("frame sizes do not follow frame_sizeof")
    g.close()
    return out


def frames(readable: Readable) -> dict[str, Any]:
    """Generators, coroutines and frames: where their frame and code are, and the constant
    part of their size (``sys.getsizeof`` minus 8 bytes per frame slot)."""
    if V < (3, 11):
        return _frames_39(readable)
    out: dict[str, Any] = {}
    iframe = _IFRAME.get(V)

    if iframe is None:
        raise LookupError(f"no frame layout known for Python {V[0]}.{V[1]}")
    out["iframe"] = dict(iframe)
    out["code_slots"] = [_CODE_FRAMESIZE] if V >= (3, 12) else list(_CODE_SLOTS[V])
    out["code_extra"] = types.CodeType.__basicsize__ - 8  # co_extra, before co_code_adaptive
    for name, make in (("gen", _gen_sample), ("coro", _coro_sample), ("agen", _agen_sample)):
        g: Any = make()
        if name == "gen":
            next(g)
        code = getattr(g, {"gen": "gi_code", "coro": "cr_code", "agen": "ag_code"}[name])
        # the inline frame: where the code pointer sits, counted back from the end
        words = _words(readable, id(g), 16, type(g).__basicsize__)
        hits = [16 + 8 * i for i, w in enumerate(words) if w & TAG_MASK == id(code)]
        candidates = [h - iframe["code"] for h in hits if h - iframe["code"] >= 16]
        if not candidates:
            raise LookupError(f"the {name}'s frame does not point to its code")
        off = candidates[-1]
        out[f"{name}_iframe"] = off
        out[f"{name}_base"] = sys.getsizeof(g) - 8 * _slots(code)
        if name == "gen":
            loc = _u64(id(g) + off + iframe["localsplus"]) & TAG_MASK
            if loc != id(g.gi_frame.f_locals["local_a"]):
                raise LookupError("the generator's first local is not at localsplus")
            fresh = _gen_sample()
            created = [_i32(id(fresh) + k) & 0xFF for k in range(off - 8, off)]
            state = [_i32(id(g) + k) & 0xFF for k in range(off - 8, off)]
            for _ in g:
                pass
            done = [_i32(id(g) + k) & 0xFF for k in range(off - 8, off)]
            # the byte that differs between a new, a suspended and a finished generator
            changed = [k for k in range(8) if len({created[k], state[k], done[k]}) == 3]
            if len(changed) != 1:
                raise LookupError("the generator's frame state is not found")
            out["frame_state"] = off - 8 + changed[0]
            out["frame_cleared"] = done[changed[0]]  # FRAME_CLEARED: 4 up to 3.14, 5 in 3.15
            fresh.close()
        _close(g)

    # a second generator with more slots confirms the slot fields and the constant part
    def bigger() -> Any:
        a = b = c = d = e = f = ["x"]
        yield a, b, c, d, e, f

    big = bigger()
    if sys.getsizeof(big) != out["gen_base"] + 8 * _slots(big.gi_code):
        raise LookupError("generator sizes do not follow the code's frame slots")
    fr = sys._getframe(0)
    out["frame_data"] = _frame_data(readable, fr)
    ifr = _u64(id(fr) + 24)
    code = _u64(ifr + iframe["code"]) & TAG_MASK
    if code != id(fr.f_code):
        raise LookupError("the frame object does not point to its interpreter frame")
    out["frame_base"] = sys.getsizeof(fr) - 8 * _slots(fr.f_code)
    return out


def _frame_data(readable: Readable, fr: types.FrameType) -> int:
    """3.11+: where a frame object's own copy of its interpreter frame starts (a frame that
    outlives its call keeps its frame there): right after f_back, f_frame, f_trace and the
    line fields; found as the end of the fixed words before the basic size."""
    size = types.FrameType.__basicsize__
    # _f_frame_data is the last field: the interpreter frame header plus one slot
    iframe = _IFRAME[V]
    return size - iframe["localsplus"]


def containers(readable: Readable) -> dict[str, Any]:
    """array.array, collections.deque and OrderedDict: the fields their sizes read."""
    out: dict[str, Any] = {}
    a = array.array("i", range(7))
    # arrayobject: ob_item, allocated, ob_descr (whose second field is the item size)
    if not (readable(id(a), 48) and _u64(id(a) + 32) >= 7):
        raise LookupError("array fields not found")
    descr = _u64(id(a) + 40)
    if not readable(descr, 8) or read(descr, 1) != b"i" or _i32(descr + 4) != 4:
        raise LookupError("array's item descriptor not found")
    if sys.getsizeof(a) != type(a).__basicsize__ + 4 * _u64(id(a) + 32) + _pre(a):
        raise LookupError("array sizes do not follow allocated * itemsize")
    out["array"] = {"allocated": 32, "descr": 40, "descr_itemsize": 4}
    dq = collections.deque(range(100))
    left, leftindex = _u64(id(dq) + 24), _u64(id(dq) + 40)
    if not readable(left, 66 * 8) or _u64(left + 8 + 8 * leftindex) != id(0):
        raise LookupError("deque blocks not found")
    blocks = (leftindex + len(dq) + 64) // 64
    if sys.getsizeof(dq) != type(dq).__basicsize__ + blocks * 66 * 8 + _pre(dq):
        raise LookupError("deque sizes do not follow its blocks")
    out["deque"] = {"leftblock": 24, "leftindex": 40, "block": 66 * 8, "blocklen": 64}
    od = collections.OrderedDict(a=1, b=2)
    if _u64(id(od) + 72) == 0 or _u64(id(od) + 16) != 2:
        raise LookupError("OrderedDict fields not found")
    out["odict"] = {"fast_nodes_size": 72, "first": 48, "node": 32}
    return out


def _bytearray_extra() -> int:
    """What sys.getsizeof adds to a bytearray beyond its basic size and allocation: 0 up to
    3.14; 3.15 keeps the bytes in a bytes object of their own, and counts its header."""
    samples = [bytearray(5), bytearray(b"x" * 100)]
    extra = {sys.getsizeof(b) - bytearray.__basicsize__ - _u64(id(b) + 24) for b in samples}
    if len(extra) != 1:
        raise LookupError("bytearray sizes do not follow their allocation")
    empty = bytearray()
    if _u64(id(empty) + 24) == 0 and sys.getsizeof(empty) != bytearray.__basicsize__:
        raise LookupError("an empty bytearray's size does not follow its allocation")
    return extra.pop()


def sizes() -> dict[str, Any]:
    """Figures of the size formulas: a static type object's size as getsizeof counts it,
    a heap type's struct, the int and code layouts."""
    probe = type("Probe", (), {})
    as_async = _u64(id(probe) + 80)  # a heap type's tp_as_async points inside the type
    return {
        "static_type": sys.getsizeof(int),
        "heap_type": type.__basicsize__,
        "type_struct": as_async - id(probe),  # sizeof(PyTypeObject): heap-only fields after
        "int_min_digit": 1 if sys.getsizeof(0) > int.__basicsize__ else 0,
        "int_tag": 1 if V >= (3, 12) else 0,
        "code_round": 8 if V >= (3, 11) else 0,
        "opcache_item": 32 if V < (3, 11) else 0,
        "bytearray_extra": _bytearray_extra(),
    }


def roots() -> dict[str, Any]:
    """This interpreter's roots and where its interpreter state keeps them."""
    return {
        "modules": id(sys.modules),
        "sys": id(sys.__dict__),
        "builtins": id(builtins.__dict__),
    }


def sizer_types() -> dict[str, str]:
    """The types whose ``__sizeof__`` the walker knows, by address: the formula's name."""
    out = {
        object: "default",
        int: "int",
        str: "str",
        bytearray: "bytearray",
        list: "list",
        dict: "dict",
        set: "set",
        frozenset: "set",
        types.CodeType: "code",
        type: "type",
        types.FrameType: "frame",
        types.GeneratorType: "gen",
        types.CoroutineType: "coro",
        types.AsyncGeneratorType: "agen",
        array.array: "array",
        collections.deque: "deque",
        collections.OrderedDict: "odict",
    }
    # only the types whose own __sizeof__ it is (3.9's generators use object's)
    return {str(id(t)): name for t, name in out.items() if "__sizeof__" in t.__dict__}


def static_types() -> dict[str, list[Any]]:
    """Every static (C) type of the process, by address: its name and whether it defines its
    own ``__sizeof__``. A capped core may leave out the read-only data those are read from."""
    out: dict[str, list[Any]] = {}
    todo = [object]
    while todo and len(out) < 4096:
        t = todo.pop()
        try:
            subs = type.__subclasses__(t)
        except TypeError:
            subs = []
        todo.extend(subs)
        if t.__flags__ & (1 << 9) or str(id(t)) in out:
            continue
        mod = getattr(t, "__module__", "builtins")
        name = t.__name__ if mod == "builtins" else f"{mod}.{t.__qualname__}"
        out[str(id(t))] = [name, "__sizeof__" in t.__dict__]
    return out


def calibrate(readable: Readable) -> dict[str, Any]:
    """Everything above, each part on its own: a part that fails is named in ``missing``."""
    out: dict[str, Any] = {"missing": {}}
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("sizes", sizes),
        ("roots", roots),
        ("frames", lambda: frames(readable)),
        ("containers", lambda: containers(readable)),
        ("static", static_types),
    ]
    for name, fn in parts:
        try:
            out[name] = fn()
        except (LookupError, OSError, ValueError, struct.error, AttributeError, KeyError) as e:
            out["missing"][name] = str(e) or type(e).__name__
    try:
        out["follow"] = follow_offsets(readable, out.get("frames", {}))
    except (LookupError, OSError, ValueError, struct.error, AttributeError, KeyError) as e:
        out["missing"]["follow"] = str(e) or type(e).__name__
    out["sizers"] = sizer_types()
    if "frames" in out["missing"]:
        for k in ("frame", "gen", "coro", "agen", "code"):
            out["sizers"].pop(
                str(
                    id(
                        {
                            "frame": types.FrameType,
                            "gen": types.GeneratorType,
                            "coro": types.CoroutineType,
                            "agen": types.AsyncGeneratorType,
                            "code": types.CodeType,
                        }[k]
                    )
                ),
                None,
            )
    if "containers" in out["missing"]:
        for t in (array.array, collections.deque, collections.OrderedDict):
            out["sizers"].pop(str(id(t)), None)
    return out
