"""Loading the native engine (``gencore._native``) and the records Python and C exchange.

The records (``gc_config.h``: the options of a core, the triggers' configuration, the
snapshot child's status records, the helper thread's results) are declared once, in C; the
engine exports each one's fields with their offsets, and :class:`Record` packs and unpacks them
by name with C's own layout. An engine of another version, or one missing a field this Python
code fills, makes the engine unavailable with a clear reason instead of misreading records.
"""

from __future__ import annotations

import os
import struct
import sysconfig
from typing import TYPE_CHECKING, Any, Optional

from ..errors import UnsupportedPlatformError

if TYPE_CHECKING:
    from .. import _native as native
else:
    native = None  # bound by _load() when the engine loads

ABI_VERSION = 5  # GC_ABI_VERSION in gc_config.h
ST_PROGRESS, ST_DONE, ST_ERROR = 1, 2, 3
STAGES = {1: "setup", 2: "maps", 3: "notes", 4: "memory", 5: "publish"}

__all__ = [
    "IMPORT_ERROR",
    "Record",
    "available",
    "blob",
    "native",
    "record",
    "require",
]

_INT_FORMATS = {(4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


class Record:
    """One C record: ``pack(**fields)`` builds its bytes (unnamed fields are zero),
    ``unpack(data)`` reads them back as a dict. Nested records are dicts."""

    def __init__(self, name: str, layouts: dict[str, Any]) -> None:
        size, fields = layouts[name]
        self.name, self.size = name, int(size)
        self.fields: dict[str, tuple[int, str, int, Optional[Record]]] = {}
        for fname, offset, fsize, signed, count in fields:
            if count == 0:  # a nested record
                self.fields[fname] = (offset, "", 0, Record(fname, layouts))
            elif fsize == 1:  # a char array: bytes
                self.fields[fname] = (offset, f"{count}s", 0, None)
            else:
                fmt = _INT_FORMATS[(fsize, bool(signed))]
                self.fields[fname] = (offset, f"<{count}{fmt}", count, None)

    def pack(self, **values: Any) -> bytes:
        """The record with these fields set (a KeyError names an unknown field)."""
        buf = bytearray(self.size)
        self._pack_into(buf, 0, values)
        return bytes(buf)

    def _pack_into(self, buf: bytearray, base: int, values: dict[str, Any]) -> None:
        for name, value in values.items():
            try:
                offset, fmt, count, nested = self.fields[name]
            except KeyError:
                raise KeyError(f"the engine's {self.name} record has no field {name!r}") from None
            if nested is not None:
                nested._pack_into(buf, base + offset, value)
            elif count > 1:
                items = list(value) + [0] * (count - len(value))
                struct.pack_into(fmt, buf, base + offset, *items)
            else:
                struct.pack_into(fmt, buf, base + offset, value)

    def unpack(self, data: bytes, base: int = 0) -> dict[str, Any]:
        """The fields of the record at ``data[base:]``."""
        out: dict[str, Any] = {}
        for name, (offset, fmt, count, nested) in self.fields.items():
            if nested is not None:
                out[name] = nested.unpack(data, base + offset)
            else:
                v = struct.unpack_from(fmt, data, base + offset)
                out[name] = list(v) if count > 1 else v[0]
        return out

    def require(self, names: tuple[str, ...]) -> None:
        """Raise KeyError unless the record has all these fields."""
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise KeyError(f"the engine's {self.name} record lacks {', '.join(missing)}")


def blob(**parts: bytes) -> tuple[bytes, dict[str, int]]:
    """Concatenate the variable-size parts of a record: the data, and ``NAME_off`` /
    ``NAME_len`` for each part, ready for :meth:`Record.pack`."""
    data = b""
    where: dict[str, int] = {}
    for name, part in parts.items():
        where[f"{name}_off"], where[f"{name}_len"] = len(data), len(part)
        data += part
    return data, where


def argv_bytes(argv: Optional[tuple[bytes, ...]]) -> bytes:
    """A command as the engine takes it: NUL-separated and NUL-terminated (b"": none)."""
    return b"".join(a + b"\0" for a in argv) if argv else b""


def free_threaded() -> bool:
    """True on a free-threaded (``--disable-gil``, 3.13t/3.14t) interpreter."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


IMPORT_ERROR: Optional[BaseException] = None
_records: dict[str, Record] = {}

# Fields this Python code fills or reads; an engine without them is another version.
_REQUIRED = {
    "core": (
        "abi",
        "filter",
        "want_threads",
        "freeze_signal",
        "max_size",
        "pylayout",
        "redact",
        "suffix_off",
    ),
    "trigger": ("abi", "dir_fd", "signals", "crash_signals", "core", "helper_off"),
    "status": ("magic", "kind", "err", "stage", "written", "total", "file_size", "nsegments"),
    "trigger_result": ("kind", "err", "stage", "written", "total", "elapsed_ns", "name"),
}


def _load() -> None:
    global IMPORT_ERROR
    if free_threaded():
        # Not imported at all: CPython would turn the GIL back on for an extension that does
        # not declare free-threading support, behind the application's back.
        IMPORT_ERROR = ImportError(
            "free-threaded interpreters (3.13t, 3.14t) are not supported by the snapshot engine yet"
        )
        return
    try:
        from .. import _native as mod
    except ImportError as e:  # pragma: no cover - exercised on unsupported platforms only
        IMPORT_ERROR = e
        return
    if not hasattr(mod, "job_start"):  # the C sources' folder, not a built extension
        IMPORT_ERROR = ImportError("gencore._native is not built (a source tree?)")
        return
    try:
        if mod.ABI_VERSION != ABI_VERSION:
            raise KeyError(f"engine records of version {mod.ABI_VERSION}, expected {ABI_VERSION}")
        for name, fields in _REQUIRED.items():
            _records[name] = Record(name, mod.LAYOUTS)
            _records[name].require(fields)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        IMPORT_ERROR = ImportError(
            f"gencore._native does not match this gencore ({e}): reinstall it"
        )
        return
    globals()["native"] = mod


def record(name: str) -> Record:
    """The engine's record ``name`` (``core``, ``trigger``, ``status``, ``trigger_result``)."""
    require()
    return _records[name]


def available() -> bool:
    """True when the native snapshot engine is usable here (Linux on x86_64 or aarch64)."""
    return IMPORT_ERROR is None


def require() -> None:
    """Raise :class:`~gencore.UnsupportedPlatformError` unless the engine is usable."""
    if IMPORT_ERROR is not None:
        u = os.uname()
        raise UnsupportedPlatformError(
            "gencore's snapshot engine supports Linux on x86_64 and aarch64 with CPython's "
            "default (GIL) build only",
            advice=f"this is {u.sysname} {u.machine} ({IMPORT_ERROR}); cores from elsewhere "
            "can still be read here with open_core, gencore info and gencore stacks",
            stage="preflight",
        )


_load()
