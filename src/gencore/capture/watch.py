"""The watchdog's Python side: the application heartbeat and asyncio loop beats.

The watchdog itself is native (``gc_watchdog.c``, in the one helper thread named ``gencore``):
it needs no GIL, so it sees a thread that holds the GIL forever. Python only records the
heartbeat and, for event loops, schedules a beat callback on each watched loop; a loop that
runs no callback for ``hang_timeout`` seconds (a handler blocked in a synchronous call) stops
beating and gets a core.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from . import engine as _engine

# -- heartbeat ------------------------------------------------------------------------------


def heartbeat() -> None:
    """Tell the watchdog the application is alive (see ``install(heartbeat_timeout=...)``).

    Call it from the application's own main loop, like systemd's ``sd_notify("WATCHDOG=1")``:
    once armed by the first call, a core is written when no call came for
    ``heartbeat_timeout`` seconds (one per stall; calls re-arm it). A few hundred
    nanoseconds; does nothing when the triggers are not installed or dumps are unsupported.
    """
    if _engine.IMPORT_ERROR is None:
        _engine.native.watch_heartbeat()


# -- asyncio loops --------------------------------------------------------------------------


class _Watched:
    """A loop being watched: its slot in the native table and its pending beat."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.handle: Any = None


_lock = threading.Lock()
_period = 0.0  # seconds between beats; 0: loop watching is off (no hang_timeout)
_explicit: weakref.WeakSet[Any] = weakref.WeakSet()  # loops given to watch_loop()
_running: dict[int, tuple[Any, _Watched]] = {}  # thread ident -> (loop, slot) while it runs
_free_slots: list[int] = []
_original_set_running_loop: Any = None


def _beat(loop: Any, w: _Watched) -> None:
    if _period and w.handle is not None:
        _engine.native.watch_loop_beat(slot=w.slot)
        w.handle = loop.call_later(_period, _beat, loop, w)


def _started(loop: Any) -> None:
    """A loop starts running in this thread: watch it if it is the main thread's or asked."""
    if not _period:
        return
    main = threading.get_ident() == threading.main_thread().ident  # no dummy Thread made
    if not (main or loop in _explicit):
        return
    with _lock:
        if not _free_slots:
            return  # more loops than slots: the first ones are watched
        w = _Watched(_free_slots.pop())
        _running[threading.get_ident()] = (loop, w)
    w.handle = True  # armed: the first beat schedules the next
    _beat(loop, w)


def _stopped() -> None:
    with _lock:
        entry = _running.pop(threading.get_ident(), None)
        if entry is None:
            return
        _free_slots.append(entry[1].slot)
    loop, w = entry
    _engine.native.watch_loop_stop(slot=w.slot)
    if w.handle not in (None, True):
        w.handle.cancel()
    w.handle = None


def _set_running_loop(loop: Any) -> None:
    _original_set_running_loop(loop)
    try:
        if loop is None:
            _stopped()
        else:
            _started(loop)
    except Exception:  # never break the application's event loop
        pass


def start_loops(hang_timeout: float) -> None:
    """Watch event loops (install with hang_timeout): asyncio's ``_set_running_loop`` tells
    when a loop starts and stops running in a thread (every loop built on
    ``asyncio.BaseEventLoop``, which ``asyncio.run`` uses)."""
    global _period, _original_set_running_loop
    import asyncio.events as events

    with _lock:
        _free_slots[:] = list(range(_engine.native.WATCH_LOOPS - 1, -1, -1))
        _period = min(1.0, hang_timeout / 4)
    if _original_set_running_loop is None:
        _original_set_running_loop = events._set_running_loop
        events._set_running_loop = _set_running_loop
    running = events._get_running_loop()
    if running is not None:  # install() called from inside a running loop
        _started(running)


def stop_loops() -> None:
    """Uninstall: no more beats (a pending one finds its handle gone and does nothing; the
    native slots go with the watchdog); asyncio's own function comes back unless someone
    replaced ours since."""
    global _period, _original_set_running_loop
    with _lock:
        _period = 0.0
        for _, w in _running.values():
            w.handle = None
        _running.clear()
    events: Any = sys.modules.get("asyncio.events")
    if _original_set_running_loop is not None and events is not None:
        if events._set_running_loop is _set_running_loop:
            events._set_running_loop = _original_set_running_loop
            _original_set_running_loop = None


def watch_loop(loop: Any) -> None:
    """Watch an asyncio event loop that runs outside the main thread.

    The loop ``asyncio.run`` runs in the main thread is watched without this call once
    ``install(hang_timeout=SECONDS)`` is in force; other loops (in worker threads) are
    watched from the next time they start running, or at once when ``loop`` is running in
    the calling thread. A watched loop that runs no callback for ``hang_timeout`` seconds
    gets one core with reason ``hang: loop`` and its thread first.
    """
    _explicit.add(loop)
    events = sys.modules.get("asyncio.events")
    if events is not None and events._get_running_loop() is loop:
        with _lock:
            already = threading.get_ident() in _running
        if not already:
            _started(loop)
