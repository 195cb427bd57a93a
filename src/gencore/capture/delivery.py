"""The triggers' state and what happens after a triggered core: announcing, delivering,
exception cores, and finding another process's triggers.

``gencore trigger PID`` finds a process that installed the triggers through a small state
file, ``$XDG_RUNTIME_DIR/gencore/PID.json`` (else ``/tmp/gencore-UID/PID.json``), and follows
its cores through the events file next to it. When a core is done, the native helper thread
wakes a short-lived probe thread that takes the GIL and hands the finished cores to a
short-lived ``gencore-deliver`` thread, which logs them and calls ``on_core(path)``. An
unhandled exception's core is taken from Python, in the thread that raised it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

from .. import _procfs
from .._common import VERSION, PathLike, plain_name, stem_of, tz_offset
from ..errors import GencoreError
from ..ship.helper import bundle_name, finish_argv
from . import engine
from .options import TriggerConfig
from .snapshot import run_core

log = logging.getLogger("gencore")

__all__ = ["TriggerState", "find_state", "state", "state_dirs"]


class TriggerState:
    """Everything install() set up, undone by uninstall()."""

    def __init__(self) -> None:
        self.config: Optional[TriggerConfig] = None
        self.on_core: Optional[Callable[[Path], None]] = None
        self.dir_fd = -1
        self.events_fd = -1
        self.notify_r = -1
        self.notify_w = -1
        self.prev_excepthook: Optional[Callable[..., Any]] = None
        self.prev_threading_hook: Optional[Callable[..., Any]] = None
        self.our_excepthook: Optional[Callable[..., Any]] = None
        self.our_threading_hook: Optional[Callable[..., Any]] = None
        self.state_file: Optional[Path] = None
        self.events_file: Optional[Path] = None

    def close_fds(self) -> None:
        """Close the descriptors install() opened."""
        for attr in ("dir_fd", "events_fd", "notify_r", "notify_w"):
            fd = getattr(self, attr)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)


state = TriggerState()
lock = threading.RLock()


# -- the state file ---------------------------------------------------------------------------


def state_dirs(env: Optional[dict[str, str]] = None) -> list[Path]:
    """Where state files are announced, in the order they are looked up."""
    env = dict(os.environ) if env is None else env
    dirs = []
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        dirs.append(Path(xdg) / "gencore")
    dirs.append(Path(f"/tmp/gencore-{os.geteuid()}"))
    return dirs


def private_dir(d: Path) -> Path:
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


def open_state_files(st: TriggerState) -> None:
    """This process's state and events files (the events file empty, append-only)."""
    rdir = private_dir(state_dirs()[0])
    remove_stale(rdir)
    st.state_file = rdir / f"{os.getpid()}.json"
    st.events_file = rdir / f"{os.getpid()}.events"
    st.events_fd = os.open(
        st.events_file,
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
        0o600,
    )


def announce(st: TriggerState, fsig: int) -> None:
    """Write the state file `gencore trigger` reads (atomically: a temporary, then rename)."""
    config = st.config
    assert st.state_file is not None and config is not None
    doc = {
        "pid": os.getpid(),
        "start_time": _procfs.start_time(os.getpid()),
        "signal": config.signals[0] if config.signals else None,
        "signals": list(config.signals),
        "directory": str(config.directory),
        "events": str(st.events_file),
        "collect": config.collect,
        "format": config.format,
        "gencore": VERSION,
        "freeze_signal": fsig,
        "hang_timeout": config.hang_timeout,
        "heartbeat_timeout": config.heartbeat_timeout,
        "rss_limit": config.rss_limit,
        "upload": config.upload,
    }
    tmp = st.state_file.with_name(f".{st.state_file.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, st.state_file)


def remove_state_files(st: TriggerState, only_if_ours: bool = False) -> None:
    """Remove the state and events files (with ``only_if_ours``: unless a forked child
    inherited them from the process that announced them)."""
    if only_if_ours and (st.state_file is None or st.state_file.stem != str(os.getpid())):
        return
    for p in (st.state_file, st.events_file):
        try:
            if p is not None:
                p.unlink()
        except OSError:
            pass


def remove_stale(d: Path) -> None:
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


def find_state(pid: int, state_path: Optional[PathLike] = None) -> dict[str, Any]:
    """The state file announced by process ``pid`` (for ``gencore trigger``).

    Raises:
        GencoreError: no such process, or it has not installed the trigger.
    """
    if not os.path.exists(f"/proc/{pid}"):
        raise GencoreError(f"no process {pid}", stage="trigger", advice="check the pid")
    candidates = [Path(state_path)] if state_path else []
    if not state_path:
        env: dict[str, str] = {}
        xdg = _procfs.environ(pid).get(b"XDG_RUNTIME_DIR")
        if xdg is not None:
            env["XDG_RUNTIME_DIR"] = xdg.decode(errors="replace")
        for d in state_dirs(env) + state_dirs():
            candidates.append(d / f"{pid}.json")
    started = _procfs.start_time(pid)
    for c in candidates:
        try:
            doc = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("pid") == pid and doc.get("start_time") == started:
            doc["state_file"] = str(c)
            return doc
    raise GencoreError(
        f"process {pid} has not installed the gencore trigger",
        stage="trigger",
        advice="call gencore.install() in it, or start it with `gencore run`",
    )


# -- events and delivery ----------------------------------------------------------------------


def append_event(line: str) -> None:
    """One line to this process's events file (what `gencore trigger` follows)."""
    fd = state.events_fd
    if fd >= 0:
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        except OSError:
            pass


def helper_argv(config: TriggerConfig, events: Optional[Path]) -> Optional[list[str]]:
    """The helper run after each core (bundle, upload, budget), or None when none is due."""
    if not (config.collect or config.upload or config.max_total or config.keep_free):
        return None
    if not sys.executable:
        return None
    return finish_argv(
        sys.executable,
        config.directory,
        fmt=config.format if config.collect else None,
        pid=os.getpid(),
        events=events,
        upload=config.upload,
        keep_local=config.keep_local,
        max_total=config.max_total,
        keep_free=config.keep_free,
        encrypt_to=config.core.encrypt_to,
    )


def _run_helper_for(config: TriggerConfig, path: Path) -> None:
    """A core written from Python (an exception): the same helper as after a signal core."""
    argv = helper_argv(config, state.events_file)
    if argv is None:
        return
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
        append_event(f"bundle-error {e}")
        log.error("the helper after %s failed: %s", path, e)


def deliver(config: TriggerConfig, path: Path, bundled: bool = False) -> None:
    """Bundle if asked (unless the helper process did), then call on_core (from the
    ``gencore-deliver`` thread, or the thread with the unhandled exception)."""
    if not bundled:
        _run_helper_for(config, path)
    result = path
    if config.collect:
        bundle = path.with_name(bundle_name(path.name, config.format, bool(config.core.encrypt_to)))
        result = bundle if bundle.exists() else path
    if helper_argv(config, state.events_file) is not None:
        _log_helper_events(path)
    cb = state.on_core
    if cb is not None:
        try:
            cb(result)
        except Exception:
            log.exception("on_core callback failed")


def _log_helper_events(core: Path) -> None:
    """The helper's outcome for this core (uploads, removals, bundles) to the logger; the
    events file has it already."""
    try:
        lines = state.events_file.read_text().splitlines() if state.events_file else []
    except OSError:
        return
    stem = stem_of(stem_of(plain_name(core.name), ".zst"))
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


def drain(st: TriggerState) -> list[dict[str, Any]]:
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
    rec = engine.record("trigger_result")
    size = rec.size
    return [rec.unpack(data[i : i + size]) for i in range(0, len(data) - size + 1, size)]


def wake() -> None:
    """Called by a probe thread (native, with the GIL) when the helper thread has news.

    It must not log or call ``threading.current_thread()`` (that would leave a dummy thread
    in ``threading.enumerate()``): it refreshes the time zone used in core names and hands
    finished cores to a short-lived ``gencore-deliver`` thread.
    """
    config = state.config
    if config is None:
        return
    engine.native.trigger_set_tz(offset=tz_offset())  # core names follow DST changes
    records = drain(state)
    if records:
        threading.Thread(
            target=deliver_records, args=(config, records), name="gencore-deliver", daemon=True
        ).start()


def deliver_records(config: Optional[TriggerConfig], records: list[dict[str, Any]]) -> None:
    """Log each core the helper thread finished, then on_core (see :func:`deliver`)."""
    for r in records:
        if config is None:
            return
        name = r["name"].split(b"\0", 1)[0].decode(errors="replace")
        if r["kind"] == 3:
            log.warning("a trigger was not honoured: %s", name)
            continue
        path = config.directory / name
        if r["kind"] == 1:
            log.info("core %s written by a trigger in %.2f s", path, r["elapsed_ns"] / 1e9)
            deliver(config, path, bundled=True)
        else:
            log.error(
                "a triggered core failed: %s (stage %d, wrote %d of %d bytes)",
                os.strerror(r["err"]),
                r["stage"],
                r["written"],
                r["total"],
            )


# -- exceptions -------------------------------------------------------------------------------

_GUARDS = {1: "max_cores", 2: "min_interval", 3: "min_free"}


def exception_core(
    exc_type: type[BaseException],
    exc: Optional[BaseException],
    tb: Optional[TracebackType],
    thread: Optional[threading.Thread],
) -> None:
    """A core for an unhandled exception (or MemoryError), with its traceback in the note,
    taken with the options the triggers were installed with."""
    config = state.config
    if config is None or exc_type in (SystemExit, KeyboardInterrupt):
        return
    memory = issubclass(exc_type, MemoryError)
    if not (config.on_exception or (memory and config.on_memory_error)):
        return
    skipped = engine.native.trigger_claim()
    if skipped:
        log.warning(
            "unhandled %s: no core (%s)", exc_type.__name__, _GUARDS.get(skipped, "a guard")
        )
        return
    extra = {
        "exception": {
            "type": f"{exc_type.__module__}.{exc_type.__qualname__}",
            "message": str(exc),
            "text": "".join(traceback.format_exception(exc_type, exc, tb)),
            "thread": thread.name if thread is not None else threading.current_thread().name,
        }
    }
    opts = config.core.replace(
        reason="memory: error" if memory else "exception", extra=extra, python_stacks=True
    )
    try:
        path = run_core(opts)
    except GencoreError as e:
        log.error("core for an unhandled %s failed: %s", exc_type.__name__, e)
        return
    log.info("core %s written for an unhandled %s", path, exc_type.__name__)
    append_event(f"done {path.name}")
    deliver(config, path)


def hook_exceptions(st: TriggerState) -> None:
    """``sys.excepthook`` and ``threading.excepthook`` take a core, then run the previous hook."""
    st.prev_excepthook = sys.excepthook
    st.prev_threading_hook = threading.excepthook

    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]
    ) -> None:
        try:
            exception_core(exc_type, exc, tb, None)
        finally:
            (st.prev_excepthook or sys.__excepthook__)(exc_type, exc, tb)

    def threading_hook(args: Any) -> None:
        try:
            exception_core(args.exc_type, args.exc_value, args.exc_traceback, args.thread)
        finally:
            (st.prev_threading_hook or threading.__excepthook__)(args)

    st.our_excepthook, st.our_threading_hook = excepthook, threading_hook
    sys.excepthook = excepthook
    threading.excepthook = threading_hook


def unhook_exceptions(st: TriggerState) -> None:
    """The previous hooks come back, unless someone replaced ours since."""
    if st.our_excepthook is not None and sys.excepthook is st.our_excepthook:
        sys.excepthook = st.prev_excepthook  # type: ignore[assignment]
    if st.our_threading_hook is not None and threading.excepthook is st.our_threading_hook:
        threading.excepthook = st.prev_threading_hook  # type: ignore[assignment]
    st.our_excepthook = st.our_threading_hook = None


def reap_helpers(pids: list[int]) -> None:
    """Helper processes still uploading when the triggers were removed: a short-lived thread
    waits for them (their uploads are bounded in time), so none is left a zombie."""
    if not pids:
        return

    def wait() -> None:
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # an application reaper took it

    threading.Thread(target=wait, name="gencore-reap", daemon=True).start()
