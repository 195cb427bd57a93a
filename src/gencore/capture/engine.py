"""Loading the native engine (``gencore._native``) and checking the Python <-> C contract.

The structures the C code writes to pipes are declared here once, and their sizes are
compared with the sizes C exports at import: a mismatch makes the engine unavailable with a
clear reason instead of misreading records.
"""

from __future__ import annotations

import os
import struct
import sysconfig
from typing import Optional

from ..errors import UnsupportedPlatformError

# struct gc_status (gc_snapshot.h): the snapshot child's status records.
STATUS = struct.Struct("<IIiIQQQQ")
ST_PROGRESS, ST_DONE, ST_ERROR = 1, 2, 3
STAGES = {1: "setup", 2: "maps", 3: "notes", 4: "memory", 5: "publish"}

# struct gc_trigger_result (gc_trigger.h): what the reaper tells the Python listener.
TRIGGER_RESULT = struct.Struct("<iiIIQQQQ96s")

__all__ = ["IMPORT_ERROR", "STATUS", "TRIGGER_RESULT", "available", "native", "require"]

IMPORT_ERROR: Optional[BaseException] = None


def free_threaded() -> bool:
    """True on a free-threaded (``--disable-gil``, 3.13t/3.14t) interpreter."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


if free_threaded():
    # Not imported at all: CPython would turn the GIL back on for an extension that does not
    # declare free-threading support, behind the application's back.
    IMPORT_ERROR = ImportError(
        "free-threaded interpreters (3.13t, 3.14t) are not supported by the snapshot engine yet"
    )
else:
    try:
        from .. import _native as native
    except ImportError as _e:  # pragma: no cover - exercised on unsupported platforms only
        IMPORT_ERROR = _e
    else:
        if not hasattr(native, "snapshot"):  # the C sources' folder, not a built extension
            IMPORT_ERROR = ImportError("gencore._native is not built (a source tree?)")
        elif (native.STATUS_SIZE, native.TRIGGER_RESULT_SIZE) != (
            STATUS.size,
            TRIGGER_RESULT.size,
        ):
            IMPORT_ERROR = ImportError(
                f"gencore._native does not match this gencore (status records "
                f"{native.STATUS_SIZE}/{native.TRIGGER_RESULT_SIZE} bytes, expected "
                f"{STATUS.size}/{TRIGGER_RESULT.size}): reinstall gencore"
            )


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
