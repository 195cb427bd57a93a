"""Triggers: a core on a signal, a crash, an unhandled exception, a hang or a memory limit.

The signal and crash triggers live in C (``gc_trigger.c``): the handler itself freezes the
threads and forks the snapshot child, so ``kill -USR2 PID`` gives a core even when a thread
stuck in C holds the GIL forever. One native helper thread, named ``gencore``, follows the
child and publishes the core without the interpreter, and runs the watchdog (hangs, memory).
No Python thread waits meanwhile: when a core is done, a short-lived probe thread takes the
GIL and starts a short-lived ``gencore-deliver`` thread that logs it and calls
``on_core(path)``.

``gencore trigger PID`` finds a process that installed the trigger through a small state
file, ``$XDG_RUNTIME_DIR/gencore/PID.json`` (else ``/tmp/gencore-UID/PID.json``), and follows
its dumps through the events file next to it.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

from .._common import (
    BUNDLE_FORMATS,
    DEFAULT_FILTER,
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_TIMEOUT,
    VERSION,
    PathLike,
    format_size,
    tz_offset,
)
from ..errors import ADVICE_FREEZE_SIGNAL, FreezeError, GencoreError
from ..ship.helper import bundle_name, finish_argv
from . import caplayout as _caplayout
from . import engine as _engine
from . import job as _job
from . import metadata as _metadata
from . import watch as _watch
from .options import CoreOptions, check_max_size, freeze_signal, max_size_bytes

log = logging.getLogger("gencore")

CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)
_TIME_PLACEHOLDER = "9999999999.999999"  # 17 characters the handler overwrites in place


@dataclass(frozen=True)
class TriggerConfig:
    """The triggers in force (see :func:`install`); ``counters`` are filled by :func:`installed`."""

    signals: tuple[int, ...]
    directory: Path
    collect: bool
    format: str
    on_crash: bool
    on_exception: bool
    max_cores: int
    min_interval: float
    min_free: int
    crash_timeout: float
    state_file: Optional[Path]
    hang_timeout: float = 0.0
    heartbeat_timeout: float = 0.0
    rss_limit: int = 0
    rss_interval: float = 0.5
    on_memory_error: bool = False
    upload: Optional[str] = None
    keep_local: bool = False
    max_total: int = 0
    keep_free: int = 0
    compress: Optional[str] = None
    max_size: int = 0
    counters: dict[str, int] = field(default_factory=dict)


class _State:
    """Everything install() set up, undone by uninstall()."""

    def __init__(self) -> None:
        self.config: Optional[TriggerConfig] = None
        self.kwargs: dict[str, Any] = {}
        self.dir_fd = -1
        self.events_fd = -1
        self.notify_r = -1
        self.notify_w = -1
        self.on_core: Optional[Callable[[Path], None]] = None
        self.prev_excepthook: Optional[Callable[..., Any]] = None
        self.prev_threading_hook: Optional[Callable[..., Any]] = None
        self.our_excepthook: Optional[Callable[..., Any]] = None
        self.our_threading_hook: Optional[Callable[..., Any]] = None
        self.state_file: Optional[Path] = None
        self.events_file: Optional[Path] = None


_lock = threading.RLock()
_state = _State()
_fork_hook_registered = False


def state_dirs(env: Optional[dict[str, str]] = None) -> list[Path]:
    """Where state files are announced, in the order they are looked up."""
    env = dict(os.environ) if env is None else env
    dirs = []
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        dirs.append(Path(xdg) / "gencore")
    dirs.append(Path(f"/tmp/gencore-{os.geteuid()}"))
    return dirs


def _private_dir(d: Path) -> Path:
    """Create ``d`` 0700, or check that an existing one is ours, private and no symlink."""
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.geteuid():
        raise GencoreError(
            f"{d} is not a private directory of this user",
            stage="install",
            advice="remove it, or set XDG_RUNTIME_DIR to a private directory",
        )
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


def _start_time(pid: int) -> Optional[int]:
    """The process start time in clock ticks (/proc/PID/stat field 22): tells pid reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, start_time: Optional[int]) -> bool:
    """True while process ``pid`` is the one that started at ``start_time`` (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return False
    if rest[0] in (b"Z", b"X"):
        return False
    return start_time is None or int(rest[19]) == start_time


def _note(reason: str, extra: Optional[dict[str, Any]] = None) -> tuple[bytes, int]:
    doc = json.loads(
        _metadata.build_note(
            reason=reason, version=VERSION, with_stacks=False, extra=extra, heap_counts=False
        )
    )
    doc["time"] = 0.0
    raw = json.dumps(doc, separators=(",", ":"))
    raw = raw.replace('"time":0.0', '"time":' + _TIME_PLACEHOLDER, 1)
    data = raw.encode()
    return data, data.find(_TIME_PLACEHOLDER.encode())


def _watch_note() -> tuple[bytes, int, int, int]:
    """The watchdog's note: fixed-width places for the time, the reason and what was seen,
    filled in by the helper thread (JSON padded with spaces)."""
    reason_cap, detail_cap = _engine.native.WATCH_REASON_CAP, _engine.native.WATCH_DETAIL_CAP
    reason_mark, detail_mark = "R" * (reason_cap - 2), "D" * (detail_cap - 2)
    data, time_off = _note(reason_mark, {"watch": detail_mark})
    reason_off = data.find(f'"{reason_mark}"'.encode())
    detail_off = data.find(f'"{detail_mark}"'.encode())
    return data, time_off, reason_off, detail_off


def _signal_numbers(signals: Any) -> tuple[int, ...]:
    if isinstance(signals, (int, signal.Signals)):
        signals = (signals,)
    out = []
    for s in signals or ():
        n = int(s)
        if n in (signal.SIGKILL, signal.SIGSTOP) or n in CRASH_SIGNALS:
            raise ValueError(f"signal {n} cannot be a dump trigger")
        out.append(n)
    return tuple(out)


def install(
    signals: Any = (signal.SIGUSR2,),
    directory: Optional[PathLike] = None,
    *,
    collect: bool = False,
    format: str = "tar.gz",
    on_crash: bool = False,
    on_exception: bool = False,
    max_cores: int = 10,
    min_interval: float = 1.0,
    min_free: int = 0,
    on_core: Optional[Callable[[Path], None]] = None,
    filter: int = DEFAULT_FILTER,
    freeze_signal: Optional[int] = None,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    crash_timeout: float = 60.0,
    hang_timeout: Optional[float] = None,
    heartbeat_timeout: Optional[float] = None,
    rss_limit: Optional[_watch.Limit] = None,
    rss_interval: float = 0.5,
    on_memory_error: bool = False,
    upload: Optional[str] = None,
    keep_local: bool = False,
    max_total: Optional[_watch.Limit] = None,
    keep_free: Optional[_watch.Limit] = None,
    compress: Optional[str] = None,
    max_size: Optional[_watch.Limit] = None,
) -> TriggerConfig:
    """Write a core when this process is signalled, crashes, dies of an exception, hangs or
    grows past a memory limit.

    Args:
        signals: signals that dump (default ``SIGUSR2``); ``()`` for none. Handled in C: a
            core is written even when the thread holding the GIL never returns from C.
        directory: where cores go (default ``$GENCORE_DIR``, else the current directory).
        collect: also pack each core into a bundle (see :func:`~gencore.collect_core`), once
            the interpreter can run again; the loose core is kept.
        format: the bundle format, ``tar.gz`` or ``tar.zst``.
        on_crash: on SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT, write a core with the real
            signal and the faulting thread first, then die exactly as before (previous handler,
            e.g. faulthandler's, or the default action and the kernel's core).
        on_exception: on an unhandled exception (``sys.excepthook``, ``threading.excepthook``)
            write a core with reason ``exception`` and the traceback in its metadata, then
            run the previous hook.
        max_cores: at most this many cores from triggers in this process (0: no limit).
        min_interval: seconds between two triggered cores; signals in between are ignored.
            A signal that arrives while a dump runs is merged into it.
        min_free: bytes that must stay free in ``directory`` beyond the process's resident
            size, else a trigger is skipped.
        on_core: called with the path of each core (or bundle) written by a trigger, from a
            gencore thread, once the interpreter can run.
        filter, freeze_signal, freeze_timeout, timeout: as for :func:`~gencore.create_core`.
        crash_timeout: the longest a crash waits for its core before dying.
        hang_timeout: seconds; one core (reason ``hang: gil``) when no thread could take
            the GIL for this long (a thread holds it and never lets go, e.g. stuck in C),
            and one (``hang: loop``) when a watched asyncio loop runs no callback for this
            long: the loop ``asyncio.run`` runs in the main thread, and loops given to
            :func:`~gencore.watch_loop`. Checked by the native ``gencore`` thread, which
            needs no GIL; a short-lived probe thread tries to take the GIL every
            ``min(1, hang_timeout / 4)`` seconds.
        heartbeat_timeout: seconds; once :func:`~gencore.heartbeat` has been called, one
            core (``hang: heartbeat``) when it is not called again for this long.
        rss_limit: one core (``memory: rss``) when the resident size passes this: bytes, a
            size such as ``"300M"`` or ``"2G"``, or ``"80%"`` of the cgroup's memory limit
            (else of the machine's RAM). Armed again once the size falls below 90% of it.
        rss_interval: seconds between two reads of the resident size.
        on_memory_error: a core (reason ``memory: error``) when a MemoryError goes
            unhandled, even without ``on_exception``.
        upload: an fsspec URL (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``): each
            core (its bundle with ``collect``) goes to ``URL/<hostname>/<name>`` with a JSON
            manifest next to it, from the helper process, and the local copy is removed;
            a failed upload leaves the file in place, is an ``upload-error`` event, and is
            retried after the next core (or with ``gencore upload --pending``).
        keep_local: keep the local file after a successful upload.
        max_total, keep_free: after each core, remove the oldest gencore files in the
            directory until they total at most ``max_total`` and the file system has
            ``keep_free`` free (bytes or sizes such as ``"250M"``); never the newest one.
        compress: ``"zstd"`` writes every core as ``<stem>.core.zst`` (see
            :func:`~gencore.create_core`).
        max_size: every core is at most this big (bytes or ``"64M"``-style; see
            :func:`~gencore.create_core`).

    Each stall or crossing gives one core, whatever its length; every trigger obeys
    ``max_cores``, ``min_interval`` and ``min_free``. Calling install again replaces the
    configuration. Returns the :class:`TriggerConfig`.

    Raises:
        ValueError: an invalid limit or timeout (the message names the argument).
        GencoreError: the helper thread could not start.
    """
    _engine.require()
    if format not in BUNDLE_FORMATS:
        raise ValueError(f"format must be tar.gz or tar.zst, got {format!r}")
    hang = _watch.seconds(hang_timeout, "hang_timeout")
    beat = _watch.seconds(heartbeat_timeout, "heartbeat_timeout")
    rss = _watch.rss_limit_bytes(rss_limit)
    interval = _watch.seconds(rss_interval, "rss_interval")
    if rss and not interval:
        raise ValueError("rss_interval must be positive when rss_limit is set")
    budget = {
        name: _watch.size_bytes(value, name)
        for name, value in (("max_total", max_total), ("keep_free", keep_free))
    }
    if upload is not None and (not isinstance(upload, str) or "://" not in upload):
        raise ValueError(f"upload must be a URL such as s3://bucket/prefix/, got {upload!r}")
    kwargs: dict[str, Any] = dict(
        signals=_signal_numbers(signals),
        directory=directory,
        collect=collect,
        format=format,
        on_crash=on_crash,
        on_exception=on_exception,
        max_cores=max_cores,
        min_interval=min_interval,
        min_free=min_free,
        on_core=on_core,
        filter=filter,
        freeze_signal=freeze_signal,
        freeze_timeout=freeze_timeout,
        timeout=timeout,
        crash_timeout=crash_timeout,
        hang_timeout=hang,
        heartbeat_timeout=beat,
        rss_limit=rss,
        rss_interval=interval,
        on_memory_error=on_memory_error,
        upload=upload,
        keep_local=keep_local,
        compress=compress,
        max_size=max_size_bytes(max_size),
        **budget,
    )
    CoreOptions(
        filter=filter, freeze_timeout=freeze_timeout, timeout=timeout, compress=compress
    ).validate()
    with _lock:
        uninstall()
        return _install(_state, kwargs)


def _install(st: _State, kwargs: dict[str, Any]) -> TriggerConfig:
    """Open the files, hand the configuration to C (which starts the helper thread), watch
    event loops, hook exceptions, announce."""
    global _fork_hook_registered
    fsig = freeze_signal(kwargs["freeze_signal"])
    d, st.dir_fd = _job.open_directory(kwargs["directory"])
    try:
        rdir = _private_dir(state_dirs()[0])
        _remove_stale(rdir)
        st.state_file = rdir / f"{os.getpid()}.json"
        st.events_file = rdir / f"{os.getpid()}.events"
        st.events_fd = os.open(
            st.events_file,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
        st.notify_r, st.notify_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        _native_install(st, kwargs, d, fsig)
    except BaseException:
        _close_fds(st)
        raise
    st.kwargs = kwargs
    st.on_core = kwargs["on_core"]
    fields = {f.name for f in dataclasses.fields(TriggerConfig)}
    given = {k: v for k, v in kwargs.items() if k in fields}
    st.config = TriggerConfig(**{**given, "directory": d, "state_file": st.state_file})
    if kwargs["hang_timeout"]:
        _watch.start_loops(kwargs["hang_timeout"])
    if kwargs["on_exception"] or kwargs["on_memory_error"]:
        _hook_exceptions(st)
    _announce(st, fsig)
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_at_exit)
        _fork_hook_registered = True
    log.info(
        "gencore triggers installed: signals %s, crash %s, exception %s, hang %s s, "
        "heartbeat %s s, rss limit %s, cores to %s",
        [signal.Signals(s).name for s in kwargs["signals"]],
        kwargs["on_crash"],
        kwargs["on_exception"],
        kwargs["hang_timeout"] or "off",
        kwargs["heartbeat_timeout"] or "off",
        format_size(kwargs["rss_limit"]) if kwargs["rss_limit"] else "off",
        d,
    )
    return st.config


def _native_install(st: _State, kw: dict[str, Any], directory: Path, fsig: int) -> None:
    """The C side: handlers, prebuilt notes, guards, the reaper and its helper command."""
    note, note_off = _note("signal")
    crash_note, crash_off = _note("crash")
    check_max_size(kw["max_size"], max(len(note), len(crash_note)))
    watch_note, watch_time, watch_reason, watch_detail = _watch_note()
    helper = None
    argv = _finish_argv(kw, directory, st.events_file)
    if argv is not None:
        helper = b"".join(os.fsencode(a) + b"\0" for a in argv)
    pipe = None
    if kw["compress"]:
        pipe = b"".join(a + b"\0" for a in _job.compressor_argv())
    try:
        _engine.native.trigger_install(
            **_trigger_args(st, kw, note, note_off, crash_note, crash_off, fsig, helper),
            hang_timeout=kw["hang_timeout"],
            heartbeat_timeout=kw["heartbeat_timeout"],
            rss_limit=kw["rss_limit"],
            rss_interval=kw["rss_interval"],
            watch_note=watch_note,
            watch_note_time_offset=watch_time,
            watch_note_reason_offset=watch_reason,
            watch_note_detail_offset=watch_detail,
            probe_callback=_wake,
            pipe_argv=pipe,
            max_size=kw["max_size"],
            pylayout=_caplayout.layout() if kw["max_size"] else None,
        )
    except OSError as e:
        if e.errno not in (errno.EEXIST,):
            raise GencoreError(
                f"the gencore triggers could not be installed: {os.strerror(e.errno or 0)}",
                errno=e.errno,
                stage="install",
                advice="check the process's thread and memory limits (ulimit -u, -v)",
            ) from e
        raise FreezeError(
            f"signal {fsig - 1} (the crash handler's alternate-stack signal, the freeze signal "
            "minus one) already has a handler in this process",
            errno=e.errno,
            stage="install",
            advice=ADVICE_FREEZE_SIGNAL,
        ) from None


def _finish_argv(
    kw: dict[str, Any], directory: Path, events: Optional[Path]
) -> Optional[list[str]]:
    """The helper run after each core (bundle, upload, budget), or None when none is due."""
    if not (kw["collect"] or kw["upload"] or kw["max_total"] or kw["keep_free"]):
        return None
    if not sys.executable:
        return None
    return finish_argv(
        sys.executable,
        directory,
        fmt=kw["format"] if kw["collect"] else None,
        pid=os.getpid(),
        events=events,
        upload=kw["upload"],
        keep_local=kw["keep_local"],
        max_total=kw["max_total"],
        keep_free=kw["keep_free"],
    )


def _trigger_args(
    st: _State,
    kw: dict[str, Any],
    note: bytes,
    note_off: int,
    crash_note: bytes,
    crash_off: int,
    fsig: int,
    helper: Optional[bytes],
) -> dict[str, Any]:
    """The signal and crash triggers' part of ``trigger_install``'s arguments."""
    return dict(
        dir_fd=st.dir_fd,
        events_fd=st.events_fd,
        notify_fd=st.notify_w,
        signals=kw["signals"],
        crash_signals=CRASH_SIGNALS if kw["on_crash"] else (),
        note=note,
        note_time_offset=note_off,
        crash_note=crash_note,
        crash_note_time_offset=crash_off,
        filter=kw["filter"],
        freeze_signal=fsig,
        freeze_timeout=kw["freeze_timeout"],
        timeout=kw["timeout"] or 0.0,
        crash_timeout=kw["crash_timeout"],
        max_cores=kw["max_cores"],
        min_interval=kw["min_interval"],
        min_free=kw["min_free"],
        tz_offset=tz_offset(),
        helper_argv=helper,
        # the crash handler runs on an alternate stack (a stack overflow gets a core too),
        # given to each thread through this private signal
        altstack_signal=fsig - 1 if kw["on_crash"] else 0,
    )


def _announce(st: _State, fsig: int) -> None:
    assert st.state_file is not None and st.config is not None
    doc = {
        "pid": os.getpid(),
        "start_time": _start_time(os.getpid()),
        "signal": st.config.signals[0] if st.config.signals else None,
        "signals": list(st.config.signals),
        "directory": str(st.config.directory),
        "events": str(st.events_file),
        "collect": st.config.collect,
        "format": st.config.format,
        "gencore": VERSION,
        "freeze_signal": fsig,
        "hang_timeout": st.config.hang_timeout,
        "heartbeat_timeout": st.config.heartbeat_timeout,
        "rss_limit": st.config.rss_limit,
        "upload": st.config.upload,
    }
    tmp = st.state_file.with_name(f".{st.state_file.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, st.state_file)


def _at_exit() -> None:
    """Interpreter exit: no more probe threads (they would need the GIL of an interpreter
    being finalized); the announcement goes; the handlers stay for crashes during shutdown."""
    if _engine.native is not None:
        _engine.native.trigger_quiesce()
    _remove_state_files()


def _remove_state_files() -> None:
    st = _state
    if st.config is None or st.state_file is None or os.getpid() != _announced_pid(st):
        return
    for p in (st.state_file, st.events_file):
        try:
            if p is not None:
                p.unlink()
        except OSError:
            pass


def _announced_pid(st: _State) -> int:
    try:
        return int(st.state_file.stem) if st.state_file is not None else -1
    except ValueError:
        return -1


def _remove_stale(d: Path) -> None:
    """State files of processes that are gone (killed before they could clean up)."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        stem, _, ext = n.partition(".")
        if ext in ("json", "events") and stem.isdigit() and not os.path.exists(f"/proc/{stem}"):
            try:
                os.unlink(d / n)
            except OSError:
                pass


def _close_fds(st: _State) -> None:
    for attr in ("dir_fd", "events_fd", "notify_r", "notify_w"):
        fd = getattr(st, attr)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
            setattr(st, attr, -1)


def uninstall() -> None:
    """Remove the triggers: every previous signal handler and exception hook comes back.

    A dump in flight is finished first. Handlers or hooks that someone else replaced since
    install() are left alone.
    """
    with _lock:
        st = _state
        if st.config is None:
            return
        _engine.native.trigger_uninstall()
        if st.our_excepthook is not None and sys.excepthook is st.our_excepthook:
            sys.excepthook = st.prev_excepthook  # type: ignore[assignment]
        if st.our_threading_hook is not None and threading.excepthook is st.our_threading_hook:
            threading.excepthook = st.prev_threading_hook  # type: ignore[assignment]
        st.our_excepthook = st.our_threading_hook = None
        _watch.stop_loops()
        _deliver_records(st.config, _drain(st))  # cores finished but not yet delivered
        for p in (st.state_file, st.events_file):
            if p is not None:
                try:
                    p.unlink()
                except OSError:
                    pass
        _close_fds(st)
        st.config = None
        st.state_file = st.events_file = None


def installed() -> Optional[TriggerConfig]:
    """The configuration in force with its counters, or None when no trigger is installed."""
    with _lock:
        if _state.config is None:
            return None
        counters = dict(_engine.native.trigger_stats())
        counters.pop("last_start_ns", None)
        return TriggerConfig(**{**asdict(_state.config), "counters": counters})


def _after_fork_in_child() -> None:
    """A forked child (a prefork worker) gets triggers of its own, with its own state file."""
    _engine.native.trigger_after_fork_child()
    st = _state
    if st.config is None:
        return
    kwargs: dict[str, Any] = dict(st.kwargs)
    kwargs["max_size"] = kwargs.get("max_size") or None  # stored as 0 when there is no cap
    st.config = None
    _watch.stop_loops()
    st.our_excepthook = st.our_threading_hook = None
    _close_fds(st)
    st.state_file = st.events_file = None
    try:
        install(**kwargs)
    except Exception:
        log.exception("could not install the gencore triggers in the forked child")


def _append_event(line: str) -> None:
    fd = _state.events_fd
    if fd >= 0:
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        except OSError:
            pass


def _deliver(config: TriggerConfig, path: Path, bundled: bool = False) -> None:
    """Bundle if asked (unless the helper process did), then call on_core (from the
    ``gencore-deliver`` thread, or the thread with the unhandled exception)."""
    result = path
    argv = _finish_argv(_state.kwargs, config.directory, _state.events_file)
    if argv is not None and not bundled:
        # a core written from Python (an exception): the same helper as after a signal dump
        try:
            subprocess.run(
                [*argv, path.name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=600,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            _append_event(f"bundle-error {e}")
            log.error("the helper after %s failed: %s", path, e)
    if config.collect:
        bundle = path.with_name(bundle_name(path.name, config.format))
        result = bundle if bundle.exists() else path
    if argv is not None:
        _log_helper_events(path)
    cb = _state.on_core
    if cb is not None:
        try:
            cb(result)
        except Exception:
            log.exception("on_core callback failed")


def _log_helper_events(core: Path) -> None:
    """The helper's outcome for this core (uploads, removals, bundles) to the logger; the
    events file has it already."""
    try:
        lines = _state.events_file.read_text().splitlines() if _state.events_file else []
    except OSError:
        return
    stem = core.name[: -len(".core")] if core.name.endswith(".core") else core.name
    start = max((i for i, x in enumerate(lines) if x == f"done {core.name}"), default=0)
    for line in lines[start:]:
        word, _, rest = line.partition(" ")
        if word == "upload" and rest.startswith(stem):
            log.info("%s uploaded to %s", *rest.split(" ", 1))
        elif word in ("upload-error", "bundle-error"):
            log.error("%s: %s", word, rest)
        elif word == "removed":
            log.info("%s removed to keep the core directory's budget", rest)
        elif word == "finished" and rest == core.name:
            break


def _drain(st: _State) -> list[tuple[Any, ...]]:
    """The result records waiting in the notify pipe (non-blocking)."""
    data = b""
    while st.notify_r >= 0:
        try:
            chunk = os.read(st.notify_r, 65536)
        except OSError:  # EAGAIN: all read; EBADF: uninstalled meanwhile
            break
        if not chunk:
            break
        data += chunk
    size = _engine.TRIGGER_RESULT.size
    return [
        _engine.TRIGGER_RESULT.unpack(data[i : i + size])
        for i in range(0, len(data), size)
        if i + size <= len(data)
    ]


def _wake() -> None:
    """Called by a probe thread (native, with the GIL) when the helper thread has news.

    It must not log or call ``threading.current_thread()`` (that would leave a dummy thread
    in ``threading.enumerate()``): it refreshes the time zone used in core names and hands
    finished cores to a short-lived ``gencore-deliver`` thread.
    """
    st = _state
    config = st.config
    if config is None:
        return
    _engine.native.trigger_set_tz(offset=tz_offset())  # core names follow DST changes
    records = _drain(st)
    if records:
        threading.Thread(
            target=_deliver_records, args=(config, records), name="gencore-deliver", daemon=True
        ).start()


def _deliver_records(config: Optional[TriggerConfig], records: list[tuple[Any, ...]]) -> None:
    """Log each core the helper thread finished, then bundle/on_core (see _deliver)."""
    for kind, err, stage, _, written, total, _, elapsed, name in records:
        if config is None:
            return
        path = config.directory / name.split(b"\0", 1)[0].decode()
        if kind == 1:
            log.info("core %s written by a trigger in %.2f s", path, elapsed / 1e9)
            _deliver(config, path, bundled=True)
        else:
            log.error(
                "a triggered core failed: %s (stage %d, wrote %d of %d bytes)",
                os.strerror(err),
                stage,
                written,
                total,
            )


# -- exceptions -----------------------------------------------------------------------------


def _exception_core(
    exc_type: type[BaseException],
    exc: Optional[BaseException],
    tb: Optional[TracebackType],
    thread: Optional[threading.Thread],
) -> None:
    config = _state.config
    if config is None or exc_type in (SystemExit, KeyboardInterrupt):
        return
    memory = issubclass(exc_type, MemoryError)
    if not (config.on_exception or (memory and config.on_memory_error)):
        return
    skipped = _engine.native.trigger_claim()
    if skipped:
        guard = {1: "max_cores", 2: "min_interval", 3: "min_free"}.get(skipped, "a guard")
        log.warning("unhandled %s: no core (%s)", exc_type.__name__, guard)
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    extra = {
        "exception": {
            "type": f"{exc_type.__module__}.{exc_type.__qualname__}",
            "message": str(exc),
            "text": text,
            "thread": thread.name if thread is not None else threading.current_thread().name,
        }
    }
    try:
        opts = CoreOptions(
            config.directory,
            filter=_state.kwargs.get("filter", DEFAULT_FILTER),
            reason="memory: error" if memory else "exception",
            extra=extra,
            compress=_state.kwargs.get("compress"),
            max_size=_state.kwargs.get("max_size", 0),
        )
        path = _job.run(opts)
    except GencoreError as e:
        log.error("core for an unhandled %s failed: %s", exc_type.__name__, e)
        return
    log.info("core %s written for an unhandled %s", path, exc_type.__name__)
    _append_event(f"done {path.name}")
    _deliver(config, path)


def _hook_exceptions(st: _State) -> None:
    st.prev_excepthook = sys.excepthook
    st.prev_threading_hook = threading.excepthook

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]
    ) -> None:
        try:
            _exception_core(exc_type, exc, tb, None)
        finally:
            (st.prev_excepthook or sys.__excepthook__)(exc_type, exc, tb)

    def threading_hook(args: Any) -> None:
        try:
            _exception_core(args.exc_type, args.exc_value, args.exc_traceback, args.thread)
        finally:
            (st.prev_threading_hook or threading.__excepthook__)(args)

    st.our_excepthook, st.our_threading_hook = excepthook, threading_hook
    sys.excepthook = excepthook
    threading.excepthook = threading_hook


def find_state(pid: int, state: Optional[PathLike] = None) -> dict[str, Any]:
    """The state file announced by process ``pid`` (for ``gencore trigger``).

    Raises:
        GencoreError: no such process, or it has not installed the trigger.
    """
    if not os.path.exists(f"/proc/{pid}"):
        raise GencoreError(f"no process {pid}", stage="trigger", advice="check the pid")
    candidates = [Path(state)] if state else []
    if not state:
        env: dict[str, str] = {}
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                for item in f.read().split(b"\0"):
                    k, _, v = item.partition(b"=")
                    if k == b"XDG_RUNTIME_DIR":
                        env["XDG_RUNTIME_DIR"] = v.decode(errors="replace")
        except OSError:
            pass
        for d in state_dirs(env) + state_dirs():
            candidates.append(d / f"{pid}.json")
    for c in candidates:
        try:
            doc = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(doc, dict)
            and doc.get("pid") == pid
            and doc.get("start_time") == _start_time(pid)
        ):
            doc["state_file"] = str(c)
            return doc
    raise GencoreError(
        f"process {pid} has not installed the gencore trigger",
        stage="trigger",
        advice="call gencore.install() in it, or start it with `gencore run`",
    )
