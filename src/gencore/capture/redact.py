"""Redaction (``redact=``) and excluded buffers (:func:`exclude`): what the core leaves out.

The snapshot child does the scrubbing (``gc_redact.c``), in what it writes and never in the
application: it finds ``str``, ``bytes`` and ``bytearray`` objects by their type pointer and
overwrites their contents, keeping the strings debuggers and gencore's readers need (names,
qualified names, file names and line tables of code objects, names of types and modules,
interned identifiers). It needs this interpreter's object layout, found here from live
objects and confirmed by what Python reports (``hash()``, ``sys.getsizeof``, the buffer
protocol); any doubt makes ``redact=`` a ``ValueError`` before anything is forked, never a
core that claims to be redacted and is not.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
import types
from typing import Any, Optional, Union

from . import engine
from .heaplayout import _str_layout
from .selfmem import Maps, scan_for, u64

__all__ = ["exclude", "include", "layout", "policy", "record_fields"]

RedactArg = Union[bool, str, None]
POLICIES = {"env": 1, "values": 2}
MAX_TYPES = 64
RK_STR, RK_BYTES, RK_BYTEARRAY, RK_CODE, RK_TYPE, RK_MODULE = range(1, 7)
_HASH_KEY_LEN = 24  # union _Py_HashSecret_t

_cache: Optional[dict[str, Any]] = None
_failed: Optional[str] = None


def policy(value: RedactArg) -> Optional[str]:
    """The ``redact`` argument as ``None``, ``"env"`` or ``"values"``.

    Raises:
        ValueError: not True/False/None, ``"env"`` or ``"values"``.
    """
    if value is None or value is False:
        return None
    if value is True:
        return "values"
    if isinstance(value, str) and value in POLICIES:
        return value
    raise ValueError(f"redact must be True, 'values', 'env' or None, got {value!r}")


def _fresh(text: str) -> str:
    """A new string object (not interned, not a compile-time constant)."""
    return "".join([text, str(os.getpid())])


def _state(s: str) -> int:
    """The known bits of a string's state (the bit field's padding is not initialized)."""
    import ctypes  # only when redaction is asked: no libffi otherwise

    return int(ctypes.c_uint32.from_address(id(s) + 32).value) & 0xFF


def _str_fields(maps: Maps) -> dict[str, int]:
    import ctypes  # only when redaction is asked: no libffi otherwise

    base = _str_layout(maps)
    ascii_data, compact_data = base["ascii_header"], base["compact_header"]
    out = {
        "str_state": 32,
        "str_ascii_data": ascii_data,
        "str_compact_data": compact_data,
        "str_compact_bit": 5,
        "str_ascii_bit": 6,
    }
    plain = _fresh("gencore-redact-probe")
    h = hash(plain)  # computed, then cached in the object
    if ctypes.c_int64.from_address(id(plain) + 24).value != h:
        raise LookupError("a string's hash is not at offset 24")
    interned = sys.intern(_fresh("gencore_redact_interned_"))
    if _state(plain) & 3 or not _state(interned) & 3:
        raise LookupError("the interned bits are not the state's lowest two")
    mask = 3
    if sys.version_info >= (3, 12):  # bit 7: statically allocated (3.11 and older: ready)
        if _state(plain) & 0x80 or not _state(chr(65)) & 0x80:
            raise LookupError("static strings are not marked where expected")
        mask |= 0x80
    out["str_keep_mask"] = mask
    # the cached UTF-8 copy of a non-ASCII string, and its length just before it
    wide = _fresh("\xe9gencore")
    size = ctypes.c_ssize_t()
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    as_utf8.restype, as_utf8.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_void_p]
    utf8 = as_utf8(wide, ctypes.byref(size))
    off = scan_for(maps, id(wide), compact_data, utf8)
    if u64(id(wide) + off - 8) != size.value:
        raise LookupError("the UTF-8 length is not before the UTF-8 pointer")
    out["str_utf8"], out["str_utf8_length"] = off, off - 8
    out["str_wstr"] = _wstr_offset(maps) if sys.version_info < (3, 12) else -1
    # instances of str subclasses keep their characters apart, behind a pointer
    sub = type("_RedactProbeStr", (str,), {})(_fresh("gencore-sub"))
    ptr = u64(id(sub) + compact_data)
    if not maps.readable(ptr, len(sub)) or ctypes.string_at(ptr, len(sub)) != str(sub).encode():
        raise LookupError("a str subclass instance's data pointer is not after its header")
    out["str_data"] = compact_data
    return out


def _wstr_offset(maps: Maps) -> int:
    """3.9-3.11: where a string's wchar_t copy is pointed to (PyUnicode_AsUnicode makes one)."""
    import ctypes  # only when redaction is asked: no libffi otherwise

    s = _fresh("gencore-wstr")
    fn = ctypes.pythonapi.PyUnicode_AsUnicode
    fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.py_object]
    ptr = fn(s)
    return scan_for(maps, id(s), 48, ptr)


def _bytes_fields(maps: Maps) -> dict[str, int]:
    import ctypes  # only when redaction is asked: no libffi otherwise

    data = sys.getsizeof(b"") - 1
    b = _fresh("gencore-bytes").encode()
    if not maps.readable(id(b), data + len(b)) or ctypes.string_at(id(b) + data, len(b)) != b:
        raise LookupError("bytes data is not after its header")
    ba = bytearray(b"gencore")
    buf = ctypes.addressof((ctypes.c_char * len(ba)).from_buffer(ba))
    words = struct.unpack("<7Q", ctypes.string_at(id(ba), 56))
    # ob_alloc: 3.15 backs a bytearray with a bytes object and counts its size there, while
    # __alloc__() reports that object's allocation (larger): between the two is where it is
    alloc_ok = len(ba) <= words[3] <= ba.__alloc__()
    if words[2] != len(ba) or not alloc_ok or words[4] != buf or words[5] != buf:
        raise LookupError("bytearray fields are not where expected")
    return {
        "bytes_data": data,
        "ba_alloc": 24,
        "ba_bytes": 32,
        "ba_start": 40,
    }


def _pool_size(maps: Maps) -> int:
    """pymalloc's pool size (4 KiB up to 3.10, 16 KiB since), confirmed by the pool headers of
    fresh small objects; 0 when they are not in pools (``PYTHONMALLOC=malloc``)."""
    import ctypes  # only when redaction is asked: no libffi otherwise

    objs = [_fresh("p" * n).encode() for n in (40, 100, 200)] + [_fresh("q" * n) for n in (9, 90)]
    for size in (4096, 16384):
        ok = True
        for o in objs:
            addr = id(o)
            pool = addr & ~(size - 1)
            if not maps.readable(pool, 48):
                ok = False
                break
            szidx, _, maxnext = struct.unpack("<III", ctypes.string_at(pool + 36, 12))
            block = (szidx + 1) * 16
            ok = ok and maxnext == size - block and (addr - pool - 48) % block == 0
            ok = ok and sys.getsizeof(o) <= block
        if ok:
            return size
    return 0


def _type_module(maps: Maps) -> dict[str, int]:
    """Where a heap type's ``__module__`` is: its dict (``tp_dict``, checked), the value after
    the interned ``"__module__"`` key in the dict's entries."""
    import ctypes  # only when redaction is asked: no libffi otherwise

    from .heaplayout import _TYPE_OFFSETS

    probe = type("_RedactProbe", (), {"__module__": _fresh("gencore.redact.probe")})
    d = u64(id(probe) + _TYPE_OFFSETS["tp_dict"])
    key = sys.intern("__module__")
    keys = u64(d + 32) if maps.readable(d, 48) else 0
    if not keys or not maps.readable(keys, 256):
        raise LookupError("a type's dict keys are not readable")
    words = struct.unpack("<32Q", ctypes.string_at(keys, 256))
    if not any(w == id(key) and v == id(probe.__module__) for w, v in zip(words, words[1:])):
        raise LookupError("a type's __module__ is not after its key in the dict's entries")
    return {"type_dict": _TYPE_OFFSETS["tp_dict"], "module_key": id(key)}


def _identities(maps: Maps) -> dict[str, int]:
    """What tells a real code object or module from memory that only looks like one (a
    stale local of a data stack, a tuple's items): the offsets of ``co_name`` and ``md_dict``
    (a str and a dict) and the dict type. The child keeps the strings a code object, type or
    module points to only when these check out: a false keep would leave a secret."""
    code = _identities.__code__
    fields = {
        "code_name": scan_for(maps, id(code), _basicsize(types.CodeType), id(code.co_name)),
        "module_dict": scan_for(maps, id(sys), _basicsize(types.ModuleType), id(sys.__dict__)),
        "dict_type": id(dict),
    }
    if fields["code_name"] < 16 or fields["module_dict"] < 16:
        raise LookupError("a code object's name or a module's dict is in its header")
    return fields


def _hash_secret() -> tuple[int, int]:
    import ctypes  # only when redaction is asked: no libffi otherwise

    try:
        addr = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_Py_HashSecret"))
    except ValueError:
        return 0, 0
    return addr, _HASH_KEY_LEN


def _discover() -> dict[str, Any]:
    from .heaplayout import layout as heap_layout

    heap = heap_layout()
    if "builtins" not in heap:
        raise LookupError(heap.get("unsupported") or heap.get("error") or "no heap layout")
    maps = Maps()
    out: dict[str, Any] = {**_str_fields(maps), **_bytes_fields(maps)}
    out["hash_secret"], out["hash_secret_len"] = _hash_secret()
    out["pool_size"] = _pool_size(maps)
    out.update(_type_module(maps))
    out.update(_identities(maps))
    return out


def layout() -> Optional[dict[str, Any]]:
    """This interpreter's layout for the child (cached), or None (then :func:`why_not`)."""
    global _cache, _failed
    if _cache is None and _failed is None:
        try:
            _cache = _discover()
        except (LookupError, AttributeError, OSError, ValueError, struct.error) as e:
            _failed = str(e) or type(e).__name__
    return _cache


def why_not() -> Optional[str]:
    """Why :func:`layout` found nothing, or None."""
    return _failed


def _subclasses(base: type) -> list[type]:
    out, todo = [], [base]
    while todo:
        t = todo.pop()
        out.append(t)
        try:
            todo.extend(type.__subclasses__(t))
        except TypeError:
            continue
    return out


def _basicsize(t: type) -> int:
    return int(getattr(t, "__basicsize__", 0))


def _types() -> tuple[list[int], list[int], list[int]]:
    """The type pointers the child looks for (the builtins first, then subclasses)."""
    first: list[tuple[type, int, int]] = [
        (str, RK_STR, 0),
        (bytes, RK_BYTES, 0),
        (bytearray, RK_BYTEARRAY, 0),
        (types.CodeType, RK_CODE, _basicsize(types.CodeType)),
        (types.ModuleType, RK_MODULE, _basicsize(types.ModuleType)),
        (type, RK_TYPE, _basicsize(type)),
    ]
    seen = {id(t) for t, _, _ in first}
    more = []
    for t, kind, size in first:
        for sub in _subclasses(t)[1:]:
            if id(sub) not in seen:
                seen.add(id(sub))
                more.append((sub, kind, max(size, _basicsize(sub)) if size else 0))
    chosen = (first + more)[:MAX_TYPES]
    return [id(t) for t, _, _ in chosen], [k for _, k, _ in chosen], [s for _, _, s in chosen]


def _lists(pol: str) -> tuple[list[int], list[int]]:
    """Objects to keep (thread names: py-spy shows them; the names modules are imported by,
    whose text the child also keeps wherever it is: type names need them) and, for
    ``"env"``, to scrub (the values of ``os.environ``)."""
    names = (getattr(t, "_name", None) for t in threading.enumerate())
    keep = [id(n) for n in names if isinstance(n, str)]
    keep += [id(name) for name in list(sys.modules) if isinstance(name, str)]
    scrub: list[int] = []
    if pol == "env":
        data = getattr(os.environ, "_data", {})
        scrub = [id(v) for v in list(data.values()) if isinstance(v, (bytes, str))]
    return keep, scrub


def record_fields(pol: Optional[str]) -> tuple[dict[str, Any], bytes]:
    """The core record's ``redact`` fields (``list_off`` relative to the returned list) and
    the list of kept, then scrubbed, objects.

    Raises:
        ValueError: redaction was asked for and this interpreter's layout is unknown.
    """
    if pol is None:
        return {"policy": 0}, b""
    lay = layout()
    if lay is None:
        raise ValueError(
            f"redact={pol!r} is not available on this interpreter: its string layout could "
            f"not be confirmed ({why_not()}); nothing was written"
        )
    type_ids, kinds, sizes = _types()
    keep, scrub = _lists(pol)
    fields = dict(
        lay,
        policy=POLICIES[pol],
        ntypes=len(type_ids),
        types=type_ids,
        kinds=kinds,
        sizes=sizes,
        nkeep=len(keep),
        nscrub=len(scrub),
    )
    return fields, struct.pack(f"<{len(keep) + len(scrub)}Q", *keep, *scrub)


# -- excluded buffers ---------------------------------------------------------------------

_PAGE = mmap.PAGESIZE
_MADV_DONTDUMP, _MADV_DODUMP = 16, 17
_excluded: dict[int, tuple[memoryview, list[tuple[int, int]], tuple[int, int]]] = {}
_lock = threading.Lock()


def _madvise(start: int, length: int, advice: int) -> None:
    import ctypes  # only when redaction is asked: no libffi otherwise

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.madvise(start, length, advice) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def exclude(obj: Any) -> None:
    """Leave the memory of a buffer (``bytearray``, ``mmap``, ``array``, a numpy array: any
    object with the buffer protocol) out of every core this process writes.

    Its whole pages are marked ``MADV_DONTDUMP`` (no core holds them, not even the kernel's);
    the snapshot child writes zeros over the rest of its bytes. The object stays pinned (it
    cannot be resized, and an ``mmap`` cannot be closed) until :func:`include` is called.

    Raises:
        ValueError: ``obj`` is not a contiguous, writable buffer.
    """
    import ctypes  # only when redaction is asked: no libffi otherwise

    engine.require()
    view = memoryview(obj)
    if not view.contiguous or view.readonly:
        view.release()
        raise ValueError("exclude() needs a contiguous, writable buffer (bytearray, mmap, array)")
    length = view.nbytes
    addr = ctypes.addressof(ctypes.c_char.from_buffer(view)) if length else 0
    lo = (addr + _PAGE - 1) // _PAGE * _PAGE
    hi = (addr + length) // _PAGE * _PAGE
    whole = (lo, hi) if hi > lo else (0, 0)
    partial = [(addr, lo - addr), (hi, addr + length - hi)] if whole[1] else [(addr, length)]
    partial = [(a, n) for a, n in partial if n > 0]
    with _lock:
        if id(obj) in _excluded:
            view.release()
            return
        if whole[1]:
            _madvise(whole[0], whole[1] - whole[0], _MADV_DONTDUMP)
        for a, n in partial:
            engine.native.exclude_range(addr=a, length=n, add=True)
        _excluded[id(obj)] = (view, partial, whole)


def include(obj: Any) -> None:
    """Undo :func:`exclude`: the buffer is written into cores again and no longer pinned."""
    with _lock:
        entry = _excluded.pop(id(obj), None)
    if entry is None:
        return
    view, partial, whole = entry
    for a, n in partial:
        engine.native.exclude_range(addr=a, length=n, add=False)
    if whole[1]:
        _madvise(whole[0], whole[1] - whole[0], _MADV_DODUMP)
    view.release()
