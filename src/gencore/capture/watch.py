"""The watchdog's Python side: the application heartbeat, asyncio loop beats, deadlines.

The watchdog itself is native (``gc_watchdog.c``, in the one helper thread named ``gencore``):
it needs no GIL, so it sees a thread that holds the GIL forever. Python only records the
heartbeat and, for event loops, schedules a beat callback on each watched loop; a loop that
runs no callback for ``hang_timeout`` seconds (a handler blocked in a synchronous call) stops
beating and gets a core. A :func:`deadline` is armed and ended from Python; the native
thread writes its core when it passes.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Optional

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
        _engine.native.watch_loop(slot=w.slot, running=True)
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
    _engine.native.watch_loop(slot=w.slot, running=False)
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


# -- deadlines --------------------------------------------------------------------------------


def _name_text(name: str, cap: int) -> bytes:
    """``name`` as the inside of a JSON string, at most ``cap`` bytes (cut before an escape
    could be split)."""
    text = json.dumps(name)[1:-1]
    while len(text) > cap:
        name = name[: max(0, len(name) - max(1, (len(text) - cap) // 6))]
        text = json.dumps(name + "...")[1:-1]
    return text.encode()


class Deadline:
    """A deadline for a unit of work in the calling thread (a test, a task, a request), made
    by :func:`deadline`: when it passes before :meth:`cancel`, gencore's native thread writes
    one core (reason ``hang: deadline``, this thread first, ``name`` and the times in the
    note's ``watch``), even while this thread holds the GIL in C. Use it as a context
    manager, or call :meth:`cancel` when the work is done."""

    def __init__(self, seconds: float, name: str, handle: int, directory: Path) -> None:
        self.seconds = seconds
        """Seconds from the start to the deadline."""
        self.name = name
        """What the deadline is for (in the core's note)."""
        self.directory = directory
        self._handle = handle
        self._ended: Optional[tuple[bool, str]] = None

    def _state(self) -> tuple[bool, str]:
        if self._ended is not None:
            return self._ended
        passed, core = _engine.native.watch_deadline_state(handle=self._handle)
        return bool(passed), core

    @property
    def passed(self) -> bool:
        """True once the deadline passed (its core is then being written, or was skipped by
        a guard such as ``max_cores``)."""
        return self._state()[0]

    @property
    def core(self) -> Optional[Path]:
        """The path of the core written for this deadline (it may still be being written:
        it appears under this name when complete), or None."""
        name = self._state()[1]
        return self.directory / name if name else None

    def cancel(self) -> bool:
        """End the deadline (the work is done); returns whether it had passed. Idempotent."""
        if self._ended is None:
            passed, core = _engine.native.watch_deadline_end(handle=self._handle)
            self._ended = (bool(passed), core)
        return self._ended[0]

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


def deadline(seconds: float, name: Optional[str] = None) -> Deadline:
    """Arm a deadline for the calling thread: a core if ``seconds`` pass before the returned
    :class:`Deadline` is cancelled (or its ``with`` block ends).

    >>> with gencore.deadline(30, name="nightly export"):   # doctest: +SKIP
    ...     export()

    The core (reason ``hang: deadline``) is written by gencore's native thread through the
    triggers, so :func:`~gencore.install` must be in force; it obeys their guards
    (``max_cores``, ``min_interval``, ``min_free``). Up to 32 deadlines can be armed at once
    in a process. ``name`` (default: the caller's function) goes into the core's note.

    Raises:
        ValueError: ``seconds`` is not a positive number.
        GencoreError: the triggers are not installed, or every deadline slot is in use.
    """
    from ..errors import GencoreError
    from .delivery import state

    seconds = _positive(seconds)
    config = state.config
    if config is None or _engine.IMPORT_ERROR is not None:
        raise GencoreError(
            "a deadline needs gencore's triggers: none are installed in this process",
            stage="deadline",
            advice="call gencore.install(...) first (or run the program with `gencore run`)",
        )
    if name is None:
        caller = sys._getframe(1).f_code
        name = getattr(caller, "co_qualname", caller.co_name)
    text = _name_text(str(name), _engine.native.DEADLINE_NAME_CAP)
    try:
        handle = _engine.native.watch_deadline_arm(seconds=seconds, name=text)
    except OSError as e:
        raise GencoreError(
            f"no deadline slot is free ({_engine.native.WATCH_DEADLINES} are armed)",
            errno=e.errno,
            stage="deadline",
            advice="end deadlines that are over (cancel() or leave their with block)",
        ) from e
    return Deadline(seconds, str(name), handle, config.directory)


def _positive(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or not 0 < seconds < 1e9:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    return float(seconds)
