"""Helpers shared by every module: types, defaults, names, sizes, resident memory, threads."""

from __future__ import annotations

import concurrent.futures
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from ._version import VERSION

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)``: bytes written (or packed) so far, and the expected total."""

DEFAULT_FILTER = 0xFF
DEFAULT_FREEZE_TIMEOUT = 0.25
DEFAULT_TIMEOUT = 600.0
BUNDLE_FORMATS = ("tar.gz", "tar.zst")

# -- what gencore writes into a directory: the one list -------------------------------------
# Every kind of file gencore writes, by suffix: the snapshot child's budget (sent to it in the
# core's record), the helper's budget and uploads, pending files and listings all use it.
# Encrypted files (``encrypt_to=``) add this to the name of what they hold: ``.core.age``,
# ``.core.zst.age``, ``.tar.gz.age``, ``.tar.zst.age``.
AGE_SUFFIX = ".age"
CORE_KINDS = (".core", ".core.zst", ".core.age", ".core.zst.age")
BUNDLE_KINDS = tuple(f".{fmt}{age}" for fmt in BUNDLE_FORMATS for age in ("", AGE_SUFFIX))
FILE_KINDS = CORE_KINDS + BUNDLE_KINDS
GENCORE_FILE = re.compile(
    r"^core_\d{8}\.\d{6}\.\d+\.\d+(" + "|".join(re.escape(k) for k in FILE_KINDS) + r")$"
)
"""A finished file of gencore's (cores being written have hidden ``.partial`` names)."""


def file_kind(name: str) -> Optional[str]:
    """The kind (suffix) of one of gencore's file names, or None for any other name."""
    m = GENCORE_FILE.match(name)
    return m.group(1) if m else None


def file_stem(name: str) -> str:
    """``core_X`` for any of gencore's files ``core_X.core``, ``core_X.tar.gz``..."""
    kind = file_kind(name)
    return name[: -len(kind)] if kind else name


__all__ = [
    "BUNDLE_FORMATS",
    "BUNDLE_KINDS",
    "CORE_KINDS",
    "FILE_KINDS",
    "GENCORE_FILE",
    "DEFAULT_FILTER",
    "DEFAULT_FREEZE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "VERSION",
    "PathLike",
    "ProgressCallback",
    "AGE_SUFFIX",
    "core_names",
    "core_suffix",
    "plain_name",
    "file_kind",
    "file_stem",
    "default_directory",
    "format_size",
    "in_thread",
    "tz_offset",
]


def default_directory() -> Path:
    """``$GENCORE_DIR`` if set, else the current working directory."""
    env = os.environ.get("GENCORE_DIR")
    return Path(env) if env else Path.cwd()


def tz_offset() -> int:
    """Seconds east of UTC now (core names are in local time)."""
    return time.localtime().tm_gmtoff


def core_suffix(compress: Optional[str] = None, encrypt: bool = False) -> str:
    """The suffix of a core file: ``.core``, ``.core.zst``, ``.core.age``, ``.core.zst.age``."""
    return ".core" + (".zst" if compress else "") + (AGE_SUFFIX if encrypt else "")


def plain_name(name: str) -> str:
    """A file name without the suffix encryption adds (``x.core.age`` -> ``x.core``)."""
    return name[: -len(AGE_SUFFIX)] if name.endswith(AGE_SUFFIX) else name


def core_names(stem: str, compress: Optional[str] = None, encrypt: bool = False) -> tuple[str, str]:
    """The final and the partial file names of the core with this stem (``.core``, or
    ``.core.zst`` with ``compress="zstd"``, then ``.age`` when encrypted).

    Raises:
        ValueError: the stem is not a plain file name.
    """
    if "/" in stem or stem in ("", ".", "..") or "\0" in stem:
        raise ValueError(f"name must be a plain file name, got {stem!r}")
    stem = stem_of(stem_of(plain_name(stem), ".zst"))
    return _with_partial(stem + core_suffix(compress, encrypt))


def _with_partial(final: str) -> tuple[str, str]:
    return final, f".{final}.partial"


def stem_of(name: str, suffix: str = ".core") -> str:
    """A core (or bundle) file name without its suffix."""
    return name[: -len(suffix)] if name.endswith(suffix) else name


def format_size(n: float) -> str:
    """``"1.5 GiB"``-style text for a byte count."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover - the loop always returns


T = TypeVar("T")


def in_thread(
    work: Callable[[], T],
    callback: Optional[Callable[[Optional[BaseException], Optional[T]], None]],
    name: str,
) -> concurrent.futures.Future[T]:
    """Run ``work`` in a daemon thread; deliver its result through a Future and
    ``callback(error, result)`` (the original module's callback order)."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()
    fut.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = work()
        except BaseException as e:  # delivered through the future
            fut.set_exception(e)
            if callback is not None:
                callback(e, None)
            return
        fut.set_result(result)
        if callback is not None:
            callback(None, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
