"""Triggers: a core on a signal, a crash, an unhandled exception, a hang or a memory limit.

The signal and crash triggers live in C (``gc_handlers.c``): the handler itself freezes the
threads and forks the snapshot child, so ``kill -USR2 PID`` gives a core even when a thread
stuck in C holds the GIL forever. One native helper thread, named ``gencore``
(``gc_reaper.c``), follows the child and publishes the core without the interpreter, and runs
the watchdog (hangs, memory: ``gc_watchdog.c``). No Python thread waits meanwhile (see
:mod:`.delivery` for what happens once a core is done).

This module installs and removes them: :func:`install` checks every argument into one
:class:`~gencore.TriggerConfig`, which becomes the engine's ``trigger`` record; a forked child
(a prefork worker) gets triggers of its own from the same configuration.
"""

from __future__ import annotations

import atexit
import errno
import functools
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .. import _procfs
from .._common import (
    DEFAULT_FILTER,
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_TIMEOUT,
    VERSION,
    PathLike,
    default_directory,
    format_size,
    tz_offset,
)
from ..errors import ADVICE_FREEZE_SIGNAL, FreezeError, GencoreError
from . import caplayout, delivery, engine, metadata, threadstart, watch
from .delivery import TriggerState, state
from .job import filter_argv, wants_pylayout
from .options import Limit, TriggerConfig, check_max_size, freeze_signal

log = logging.getLogger("gencore")

__all__ = ["TriggerConfig", "install", "installed", "uninstall"]

_TIME_PLACEHOLDER = "9999999999.999999"  # 17 characters the handler overwrites in place
_fork_hook_registered = False


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
    rss_limit: Optional[Limit] = None,
    rss_interval: float = 0.5,
    on_memory_error: bool = False,
    on_memory_high: bool = False,
    upload: Optional[str] = None,
    keep_local: bool = False,
    max_total: Optional[Limit] = None,
    keep_free: Optional[Limit] = None,
    compress: Optional[str] = None,
    max_size: Optional[Limit] = None,
    chain_signals: Any = (),
    redact: Union[bool, str, None] = None,
    encrypt_to: Union[str, list[str], tuple[str, ...], None] = None,
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
        on_memory_high: a core (reason ``memory: high``) when the process's memory cgroup
            (v2) counts a breach of its ``memory.high`` (throttling: the step before the OOM
            killer), one per episode; checked every ``rss_interval`` by the native thread.
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
        redact, encrypt_to: every core is redacted and encrypted (see
            :func:`~gencore.create_core`).
        chain_signals: signals that write a core in their C handler and then run the
            handler that was there before, or that the application installs later with
            ``signal.signal`` (it stays on top): a prefork server's timeout signal, such as
            gunicorn's SIGABRT to a timed-out worker, whose own handler cannot run while
            the worker is stuck. The handler waits for the core (at most
            ``crash_timeout``) before the previous one runs; under the default action the
            process then dies (or stops) as it would have. Not a fault signal; overrides
            ``on_crash`` for SIGABRT.

    Each stall or crossing gives one core, whatever its length; every trigger obeys
    ``max_cores``, ``min_interval`` and ``min_free``. Calling install again replaces the
    configuration. Returns the :class:`TriggerConfig`.

    Raises:
        ValueError: an invalid limit, count or timeout (the message names the argument):
            negative, NaN or out of range.
        GencoreError: the helper thread could not start.
    """
    engine.require()
    given = dict(locals())
    directory_arg = given.pop("directory")
    given.pop("signals")
    given.pop("on_core")
    d = Path(directory_arg) if directory_arg is not None else default_directory()
    d = d if d.is_absolute() else Path.cwd() / d
    config = TriggerConfig.build(signals, d, **given)
    if config.on_memory_high:
        cg = _procfs.cgroup_memory()
        if cg is None or cg.version != "v2":
            log.warning("on_memory_high: this process's memory cgroup is not v2; no memory.high")
    with delivery.lock:
        uninstall()
        return _install(config, on_core)


def _note(
    reason: str, extra: Optional[dict[str, Any]] = None, redact: Optional[str] = None
) -> tuple[bytes, int]:
    """A prebuilt GENCORE note and where its 17-character time goes."""
    doc = json.loads(
        metadata.build_note(
            reason=reason,
            version=VERSION,
            with_stacks=False,
            extra=extra,
            heap_counts=False,
            redact=redact,
        )
    )
    doc["time"] = 0.0
    raw = json.dumps(doc, separators=(",", ":"))
    raw = raw.replace('"time":0.0', '"time":' + _TIME_PLACEHOLDER, 1)
    data = raw.encode()
    return data, data.find(_TIME_PLACEHOLDER.encode())


def _watch_note(redact: Optional[str]) -> tuple[bytes, dict[str, int]]:
    """The watchdog's note: fixed-width places for the time, the reason and what was seen,
    filled in by the helper thread (JSON padded with spaces)."""
    reason_cap, detail_cap = engine.native.WATCH_REASON_CAP, engine.native.WATCH_DETAIL_CAP
    reason_mark, detail_mark = "R" * (reason_cap - 2), "D" * (detail_cap - 2)
    data, time_off = _note(reason_mark, {"watch": detail_mark}, redact)
    return data, {
        "watch_note_time_offset": time_off,
        "watch_note_reason_offset": data.find(f'"{reason_mark}"'.encode()),
        "watch_note_detail_offset": data.find(f'"{detail_mark}"'.encode()),
    }


def _native_install(st: TriggerState, config: TriggerConfig) -> None:
    """The C side: handlers, prebuilt notes, guards, the helper thread and its command."""
    redact = config.core.redact
    note, note_off = _note("signal", redact=redact)
    crash_note, crash_off = _note("crash", redact=redact)
    watch_note, watch_places = _watch_note(redact)
    check_max_size(config.max_size, max(len(note), len(crash_note)))
    core = config.core
    pipe = filter_argv(core)
    layout = caplayout.layout() if wants_pylayout(core) else None
    core_fields, core_data = core.record(note, pipe, layout)
    argv = delivery.helper_argv(config, st.events_file)
    helper = engine.argv_bytes(tuple(os.fsencode(a) for a in argv) if argv else None)
    # the core record's blob comes first, so its offsets hold in the whole blob
    extra, where = engine.blob(
        pad=core_data, crash_note=crash_note, watch_note=watch_note, helper=helper
    )
    where.pop("pad_off"), where.pop("pad_len")
    fields = config.record(
        {"dir_fd": st.dir_fd, "events_fd": st.events_fd, "notify_fd": st.notify_w},
        tz_offset(),
        note_time_offset=note_off,
        crash_note_time_offset=crash_off,
        core=core_fields,
        **watch_places,
        **where,
    )
    try:
        engine.native.trigger_install(
            config=engine.record("trigger").pack(**fields),
            data=extra,
            probe_callback=delivery.wake,
        )
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise GencoreError(
                f"the gencore triggers could not be installed: {os.strerror(e.errno or 0)}",
                errno=e.errno,
                stage="install",
                advice="check the process's thread and memory limits (ulimit -u, -v)",
            ) from e
        fsig = freeze_signal(core.freeze_signal)
        raise FreezeError(
            f"signal {fsig - 1} (the crash handler's alternate-stack signal, the freeze signal "
            "minus one) already has a handler in this process",
            errno=e.errno,
            stage="install",
            advice=ADVICE_FREEZE_SIGNAL,
        ) from None


def _install(config: TriggerConfig, on_core: Optional[Callable[[Path], None]]) -> TriggerConfig:
    """Open the files, hand the configuration to C (which starts the helper thread), watch
    event loops, hook exceptions, announce."""
    global _fork_hook_registered
    st = state
    fsig = freeze_signal(config.core.freeze_signal)
    d, st.dir_fd = _open_directory(config.directory)
    config = config.replace(directory=d)
    try:
        delivery.open_state_files(st)
        st.notify_r, st.notify_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        _native_install(st, config)
    except BaseException:
        st.close_fds()
        raise
    st.on_core = on_core
    st.config = config.replace(state_file=st.state_file)
    if config.hang_timeout:
        watch.start_loops(config.hang_timeout)
    if config.on_exception or config.on_memory_error:
        delivery.hook_exceptions(st)
    if config.chain_signals:
        _keep_chains_on_top()
    if config.on_crash:
        threadstart.start()
    delivery.announce(st, fsig)
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_at_exit)
        _fork_hook_registered = True
    log.info(
        "gencore triggers installed: signals %s, crash %s, exception %s, hang %s s, "
        "heartbeat %s s, rss limit %s, cores to %s",
        [_signal_name(s) for s in config.signals],
        config.on_crash,
        config.on_exception,
        config.hang_timeout or "off",
        config.heartbeat_timeout or "off",
        format_size(config.rss_limit) if config.rss_limit else "off",
        d,
    )
    return st.config


_original_signal: Optional[Callable[..., Any]] = None


def _keep_chains_on_top() -> None:
    """``signal.signal`` for a chained signal (gunicorn's worker sets its SIGABRT handler
    after the fork) puts gencore's C handler back on top, the new handler chained."""
    global _original_signal
    if _original_signal is not None:
        return
    original = signal.signal

    def gencore_signal(signalnum: Any, handler: Any) -> Any:
        previous = original(signalnum, handler)
        config = state.config
        if config is not None and int(signalnum) in config.chain_signals:
            engine.native.trigger_rechain()
        return previous

    functools.update_wrapper(gencore_signal, original)
    _original_signal = original
    signal.signal = gencore_signal


def _release_signal_function() -> None:
    global _original_signal
    if _original_signal is not None and getattr(signal.signal, "__wrapped__", None) is (
        _original_signal
    ):
        signal.signal = _original_signal  # type: ignore[assignment]
        _original_signal = None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # real-time signals have no name of their own
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"


def _open_directory(directory: Path) -> tuple[Path, int]:
    from .preflight import open_directory

    return open_directory(directory)


def _at_exit() -> None:
    """Interpreter exit: no more probe threads (they would need the GIL of an interpreter
    being finalized); the announcement goes; the handlers stay for crashes during shutdown."""
    if engine.native is not None:
        engine.native.trigger_quiesce()
    if state.config is not None:
        delivery.remove_state_files(state, only_if_ours=True)


def uninstall() -> None:
    """Remove the triggers: every previous signal handler and exception hook comes back.

    A core in flight is finished first. Handlers or hooks that someone else replaced since
    install() are left alone.
    """
    with delivery.lock:
        st = state
        if st.config is None:
            return
        delivery.reap_helpers(engine.native.trigger_uninstall())
        threadstart.stop()
        delivery.unhook_exceptions(st)
        _release_signal_function()
        watch.stop_loops()
        delivery.deliver_records(st.config, delivery.drain(st))  # done, not yet delivered
        delivery.remove_state_files(st)
        st.close_fds()
        st.config = None
        st.state_file = st.events_file = None


def rechain() -> int:
    """Put gencore's handler back on top of every chained signal whose handler was replaced
    without ``signal.signal`` (which does it by itself); returns how many."""
    return int(engine.native.trigger_rechain()) if state.config is not None else 0


def last_core() -> Optional[str]:
    """The file name of the last core a trigger started in this process, or None."""
    try:
        lines = state.events_file.read_text().splitlines() if state.events_file else []
    except OSError:
        return None
    names = [line.split()[1] for line in lines if line.startswith("start ") and " " in line]
    return names[-1] if names else None


def installed() -> Optional[TriggerConfig]:
    """The configuration in force with its counters, or None when no trigger is installed."""
    with delivery.lock:
        if state.config is None:
            return None
        counters = dict(engine.native.trigger_stats())
        counters.pop("last_start_ns", None)
        return state.config.replace(counters=counters)


def _after_fork_in_child() -> None:
    """A forked child (a prefork worker) gets triggers of its own, with its own state file,
    from the configuration in force."""
    engine.native.trigger_after_fork_child()
    st = state
    config, on_core = st.config, st.on_core
    if config is None:
        return
    st.config = None
    watch.stop_loops()
    st.our_excepthook = st.our_threading_hook = None
    st.close_fds()
    st.state_file = st.events_file = None
    try:
        with delivery.lock:
            _install(config.replace(counters={}, state_file=None), on_core)
    except Exception:
        log.exception("could not install the gencore triggers in the forked child")
