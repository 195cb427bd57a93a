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

from ._version import VERSION
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
from .ship.bundle import (
    BundlePath,
    bundle_core,
    collect_core,
    collect_core_async,
    extract_bundle,
    start_collect,
)

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
