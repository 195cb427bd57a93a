"""gencore: write a core dump of the running Python process, every thread, without stopping it.

The process pauses only for one ``fork()``: every thread is parked for a moment by a signal so
its registers can be saved, a snapshot child is forked, and the child writes a kernel-compatible
ELF core while the application carries on. pystack, py-spy, gdb and elfutils read the result.

>>> import gencore
>>> path = gencore.create_core()          # doctest: +SKIP
>>> path.report.pause_s                   # doctest: +SKIP
0.0021
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import VERSION
from .errors import (
    BundleError,
    CoreChildError,
    CoreDirectoryError,
    CoreForkError,
    CoreFormatError,
    CoreTimeoutError,
    CoreWriteError,
    DecryptionError,
    FreezeError,
    GencoreError,
    HeapUnavailableError,
    KernelCoreUnavailableError,
    MemoryUnavailableError,
    NotDumpableError,
    PythonUnavailableError,
    UnsupportedPlatformError,
    UploadError,
)

if TYPE_CHECKING:
    from .analysis.core import CoreFile, open_core
    from .analysis.heap import Census, Referrers, TypeDiff, TypeStat
    from .capture.redact import exclude, include
    from .capture.snapshot import (
        CorePath,
        SnapshotReport,
        ThreadReport,
        create_core,
        create_core_async,
        default_directory,
        start_core,
        supported,
    )
    from .capture.triggers import TriggerConfig, install, installed, uninstall
    from .capture.watch import Deadline, deadline, heartbeat, watch_loop
    from .ship.bundle import (
        BundlePath,
        bundle_core,
        collect_core,
        collect_core_async,
        extract_bundle,
        start_collect,
    )

# The rest of the API is imported on first use (PEP 562): ``import gencore`` and the
# ``gencore`` command load only the modules they need (a command reading a core never
# loads the capture side, a program that takes cores never loads the readers).
_LAZY = {
    "CoreFile": ".analysis.core",
    "open_core": ".analysis.core",
    "Census": ".analysis.heap",
    "Referrers": ".analysis.heap",
    "TypeDiff": ".analysis.heap",
    "TypeStat": ".analysis.heap",
    "exclude": ".capture.redact",
    "include": ".capture.redact",
    "CorePath": ".capture.snapshot",
    "SnapshotReport": ".capture.snapshot",
    "ThreadReport": ".capture.snapshot",
    "create_core": ".capture.snapshot",
    "create_core_async": ".capture.snapshot",
    "default_directory": ".capture.snapshot",
    "start_core": ".capture.snapshot",
    "supported": ".capture.snapshot",
    "TriggerConfig": ".capture.triggers",
    "install": ".capture.triggers",
    "installed": ".capture.triggers",
    "uninstall": ".capture.triggers",
    "Deadline": ".capture.watch",
    "deadline": ".capture.watch",
    "heartbeat": ".capture.watch",
    "watch_loop": ".capture.watch",
    "BundlePath": ".ship.bundle",
    "bundle_core": ".ship.bundle",
    "collect_core": ".ship.bundle",
    "collect_core_async": ".ship.bundle",
    "extract_bundle": ".ship.bundle",
    "start_collect": ".ship.bundle",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = VERSION

__all__ = [
    "TriggerConfig",
    "Deadline",
    "deadline",
    "heartbeat",
    "install",
    "installed",
    "uninstall",
    "watch_loop",
    "BundleError",
    "BundlePath",
    "KernelCoreUnavailableError",
    "bundle_core",
    "collect_core",
    "collect_core_async",
    "extract_bundle",
    "start_collect",
    "CoreChildError",
    "CoreDirectoryError",
    "CoreFile",
    "CoreForkError",
    "CoreFormatError",
    "CorePath",
    "CoreTimeoutError",
    "CoreWriteError",
    "DecryptionError",
    "FreezeError",
    "GencoreError",
    "HeapUnavailableError",
    "PythonUnavailableError",
    "MemoryUnavailableError",
    "NotDumpableError",
    "Census",
    "Referrers",
    "TypeDiff",
    "TypeStat",
    "SnapshotReport",
    "ThreadReport",
    "UnsupportedPlatformError",
    "UploadError",
    "__version__",
    "create_core",
    "create_core_async",
    "default_directory",
    "exclude",
    "include",
    "open_core",
    "start_core",
    "supported",
]
