"""Threads started from Python get the crash handler's alternate stack before they run.

A stack overflow is caught on an alternate signal stack, which each thread must set for
itself. The native helper thread gives one to every thread it finds, every 50 ms; a thread
that overflows sooner (a pool worker whose first task recurses too deep) would die without a
core. So, while the crash trigger is installed, every thread started through ``threading`` or
``_thread`` takes its stack first thing, in the new thread, before its first Python frame of
its own runs: ``Thread._bootstrap`` and ``_thread.start_new_thread``'s function are wrapped.
Threads created in C (by an extension, without Python) still rely on the helper thread's
sweep.
"""

from __future__ import annotations

import _thread
import threading
from typing import Any, Callable, Optional

from . import engine

__all__ = ["start", "stop"]

_original_bootstrap: Optional[Callable[[threading.Thread], None]] = None
_original_start_new: Optional[Callable[..., int]] = None


def _bootstrap(self: threading.Thread) -> None:
    engine.native.altstack_adopt()
    assert _original_bootstrap is not None
    _original_bootstrap(self)


def _start_new_thread(function: Callable[..., Any], args: Any, kwargs: Any = None) -> int:
    def run(*a: Any, **kw: Any) -> Any:
        engine.native.altstack_adopt()
        return function(*a, **kw)

    assert _original_start_new is not None
    return _original_start_new(run, args, kwargs or {})


def start() -> None:
    """Wrap the thread starts (once; a second call keeps the first wrappers)."""
    global _original_bootstrap, _original_start_new
    if _original_bootstrap is None:
        _original_bootstrap = threading.Thread._bootstrap  # type: ignore[attr-defined]
        threading.Thread._bootstrap = _bootstrap  # type: ignore[attr-defined]
    if _original_start_new is None:
        _original_start_new = _thread.start_new_thread
        _thread.start_new_thread = _start_new_thread
        if hasattr(_thread, "start_new"):
            _thread.start_new = _start_new_thread  # type: ignore[attr-defined,unused-ignore]


def stop() -> None:
    """Put the originals back, unless someone replaced the wrappers since."""
    global _original_bootstrap, _original_start_new
    if _original_bootstrap is not None:
        if threading.Thread._bootstrap is _bootstrap:  # type: ignore[attr-defined]
            threading.Thread._bootstrap = _original_bootstrap  # type: ignore[attr-defined]
        _original_bootstrap = None
    if _original_start_new is not None:
        if _thread.start_new_thread is _start_new_thread:
            _thread.start_new_thread = _original_start_new
            if hasattr(_thread, "start_new"):
                _thread.start_new = _original_start_new  # type: ignore[attr-defined,unused-ignore]
        _original_start_new = None
