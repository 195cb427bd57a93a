"""The watchdog's Python side: limits, the application heartbeat and asyncio loop beats.

The watchdog itself is native (``gc_trigger.c``, in the one helper thread named ``gencore``):
it needs no GIL, so it sees a thread that holds the GIL forever. Python only parses the
limits and, for event loops, schedules a beat callback on each watched loop; a loop that
runs no callback for ``hang_timeout`` seconds (a handler blocked in a synchronous call) stops
beating and gets a core.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import weakref
from typing import Any, Optional, Union

from . import engine as _engine

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

Limit = Union[int, float, str]
"""A memory limit: bytes, a size such as ``"300M"`` or ``"2G"``, or ``"80%"`` of the memory
this process may use (its cgroup's limit, else the machine's RAM)."""


def parse_size(text: str, name: str) -> int:
    """``"300M"``, ``"2G"``, ``"1.5GiB"``, ``"4096"`` → bytes (binary units).

    Raises:
        ValueError: not a size; the message names the argument.
    """
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(
            f"{name} must be bytes, a size like 300M or 2G, or a percentage; got {text!r}"
        )
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _UNITS[unit])


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """``{"v2": (root, mount point), "v1": (root, mount point)}`` of the cgroup file systems
    that can hold memory limits, from /proc/self/mountinfo."""
    out: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            out.setdefault("v2", (fields[3], fields[4]))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            out.setdefault("v1", (fields[3], fields[4]))
    return out


def _cgroup_limits() -> list[int]:
    """The memory limits of this process's cgroup and its ancestors (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``)."""
    out: list[int] = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    mounts = _cgroup_mounts()
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hid == "0" and controllers == "" and "v2" in mounts:
            (root, base), name = mounts["v2"], "memory.max"
        elif "memory" in controllers.split(",") and "v1" in mounts:
            (root, base), name = mounts["v1"], "memory.limit_in_bytes"
        else:
            continue
        if root != "/" and path.startswith(root):
            path = path[len(root) :]  # a container's view: its own group is the mount's root
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            try:
                with open(os.path.join(base, *parts[:depth], name)) as f:
                    value = f.read().strip()
            except OSError:
                continue
            if value.isdigit() and int(value) < (1 << 62):  # v1 "no limit" is about 2**63
                out.append(int(value))
    return out


def memory_available() -> int:
    """What this process may use: its cgroup's memory limit, else the machine's RAM."""
    limits = _cgroup_limits()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(limits + [ram])


def rss_limit_bytes(limit: Optional[Limit]) -> int:
    """The ``rss_limit`` argument in bytes (None or 0: no limit).

    Raises:
        ValueError: not a positive size or a percentage in (0, 100].
    """
    if limit is None or (limit == 0 and not isinstance(limit, (bool, str))):
        return 0  # off, as a timeout of 0 is
    if isinstance(limit, bool) or not isinstance(limit, (int, float, str)):
        raise ValueError(f"rss_limit must be bytes, a size or a percentage, got {limit!r}")
    if isinstance(limit, str) and limit.strip().endswith("%"):
        try:
            pct = float(limit.strip()[:-1])
        except ValueError:
            pct = math.nan
        if not 0 < pct <= 100:
            raise ValueError(f"rss_limit percentage must be in (0, 100], got {limit!r}")
        return int(memory_available() * pct / 100)
    n = parse_size(limit, "rss_limit") if isinstance(limit, str) else limit
    if not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0:
        raise ValueError(f"rss_limit must be positive, got {limit!r}")
    return int(n)


def size_bytes(value: Optional[Limit], name: str) -> int:
    """A size argument (bytes, or ``"250M"``-style text) in bytes; None or 0: off.

    Raises:
        ValueError: negative, not a size; the message names the argument.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be bytes or a size like 250M, got {value!r}")
    n = parse_size(value, name) if isinstance(value, str) else value
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return int(n)


def seconds(value: Optional[float], name: str) -> float:
    """A timeout argument: None or 0 → 0 (off), else a positive finite number of seconds.

    Raises:
        ValueError: negative, NaN, infinite or not a number; the message names the argument.
    """
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


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
