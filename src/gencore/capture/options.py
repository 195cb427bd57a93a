"""The options of one core and of the triggers: checked once, frozen, carried to the end.

:class:`CoreOptions` is what every function that takes a core accepts (``create_core``,
``collect_core``...); :class:`TriggerConfig` is what :func:`~gencore.install` sets up, and holds
the :class:`CoreOptions` every triggered core is taken with. Both are built by a ``build``
class method that checks every value (a ``ValueError`` naming the argument) before anything is
forked, and both turn themselves into the engine's records (:mod:`.engine`) here, so an option
lives in this module, the C record that carries it, and the code that uses it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypedDict, Union

from .. import _procfs
from .._common import (
    BUNDLE_FORMATS,
    DEFAULT_FILTER,
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_TIMEOUT,
    FILE_KINDS,
    PathLike,
    ProgressCallback,
    core_names,
    core_suffix,
    format_size,
)
from ..errors import FreezeError
from ..ship import crypt
from . import engine, redact

METHODS = ("native", "kernel")
# The snapshot child's page cache: bounded when the memory cgroup's headroom asks for it
# (auto), always, or never ($GENCORE_PAGE_CACHE; the benchmark compares them).
PAGE_CACHE_MODES = {"auto": 0, "bounded": 1, "unbounded": 2}
COMPRESSIONS = (None, "zstd")
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)
_U32_MAX = (1 << 32) - 1
_BYTES_MAX = 1 << 62

Limit = Union[int, float, str]
"""A memory limit: bytes, a size such as ``"300M"`` or ``"2G"``, or ``"80%"`` of the memory
this process may use (its cgroup's limit, else the machine's RAM)."""

# -- parsers ----------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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


def size_bytes(value: Optional[Limit], name: str) -> int:
    """A size argument (bytes, or ``"250M"``-style text) in bytes; None or 0: off.

    Raises:
        ValueError: negative, NaN, too large or not a size; the message names the argument.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be bytes or a size like 250M, got {value!r}")
    n = parse_size(value, name) if isinstance(value, str) else value
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    if n >= _BYTES_MAX:
        raise ValueError(f"{name} is out of range: {value!r}")
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
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def positive_seconds(value: Optional[float], name: str, allow_none: bool = False) -> float:
    """A timeout that must be given: positive and finite (None only when ``allow_none``; then
    0.0, no limit)."""
    if value is None and allow_none:
        return 0.0
    n = seconds(value, name) if value is not None else -1.0
    if n <= 0:
        what = "positive seconds or None" if allow_none else "positive seconds"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return n


def count(value: Any, name: str) -> int:
    """A count argument (``max_cores``): an int from 0 (no limit) to 2**32-1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32_MAX:
        raise ValueError(f"{name} must be a whole number from 0 to {_U32_MAX}, got {value!r}")
    return value


def memory_available() -> int:
    """What this process may use: its cgroup's memory limit, else the machine's RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(_procfs.cgroup_memory_limits() + [ram])


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
    n = size_bytes(limit, "rss_limit")
    if n <= 0:
        raise ValueError(f"rss_limit must be positive, got {limit!r}")
    return n


def max_size_bytes(value: Union[int, float, str, None]) -> int:
    """``max_size`` in bytes (0: no cap) from bytes or text such as ``"64M"`` or ``"2G"``.

    Raises:
        ValueError: negative, zero or not a size.
    """
    if value is None:
        return 0
    n = size_bytes(value, "max_size")
    if n <= 0:
        raise ValueError(f"max_size must be a positive size such as 64M, got {value!r}")
    return n


def freeze_signal(value: Optional[int]) -> int:
    """The real-time signal that parks threads: the argument, ``$GENCORE_FREEZE_SIGNAL`` or
    ``SIGRTMAX-3``."""
    if value is None:
        env = os.environ.get("GENCORE_FREEZE_SIGNAL")
        value = int(env) if env else signal.SIGRTMAX - 3
    sig = int(value)
    if not (signal.SIGRTMIN <= sig <= signal.SIGRTMAX):
        raise FreezeError(
            f"freeze signal {sig} is not a real-time signal",
            advice=f"choose one in {int(signal.SIGRTMIN)}..{int(signal.SIGRTMAX)}",
            stage="preflight",
        )
    return sig


def _ns(value: Optional[float]) -> int:
    return int(value * 1e9) if value else 0


# -- one core ---------------------------------------------------------------------------------


class CoreOptionArgs(TypedDict, total=False):
    """The keyword arguments every core-taking function accepts (see ``create_core``)."""

    name: Optional[str]
    threads: bool
    python_stacks: bool
    filter: int
    freeze_timeout: float
    timeout: Optional[float]
    freeze_signal: Optional[int]
    force: bool
    on_progress: Optional[ProgressCallback]
    method: str
    upload: Optional[str]
    keep_local: bool
    compress: Optional[str]
    max_size: Union[int, str, None]
    redact: Union[bool, str, None]
    encrypt_to: Union[str, list[str], tuple[str, ...], None]


@dataclass(frozen=True)
class CoreOptions:
    """How to take one core; built (and checked) by :meth:`build` before anything is forked.

    ``reason`` and ``extra`` are set by the triggers, not by the public API; ``max_total`` and
    ``keep_free`` too: the snapshot child makes room for a triggered core before it appears.
    """

    directory: Optional[PathLike] = None
    name: Optional[str] = None
    threads: bool = True
    python_stacks: bool = True
    filter: int = DEFAULT_FILTER
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    timeout: Optional[float] = DEFAULT_TIMEOUT
    freeze_signal: Optional[int] = None
    force: bool = False
    on_progress: Optional[ProgressCallback] = None
    method: str = "native"
    upload: Optional[str] = None
    keep_local: bool = False
    compress: Optional[str] = None
    max_size: int = 0
    max_total: int = 0
    keep_free: int = 0
    redact: Optional[str] = None
    encrypt_to: tuple[str, ...] = ()
    reason: str = "api"
    extra: Optional[dict[str, Any]] = None

    @classmethod
    def build(
        cls, directory: Optional[PathLike], options: CoreOptionArgs, **internal: Any
    ) -> CoreOptions:
        """Check the public options (unknown names are a ``TypeError``, bad values a
        ``ValueError``) and return the frozen options."""
        for key in options:
            if key not in CoreOptionArgs.__annotations__:
                raise TypeError(f"unexpected keyword argument {key!r}")
        values: dict[str, Any] = {**options, **internal}
        values["max_size"] = max_size_bytes(values.get("max_size"))
        values["redact"] = redact.policy(values.get("redact"))
        values["encrypt_to"] = crypt.parse_recipients(values.get("encrypt_to"))
        opts = cls(directory=directory, **values)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise ``ValueError`` for impossible values."""
        if self.method not in METHODS:
            raise ValueError(f"method must be 'native' or 'kernel', got {self.method!r}")
        if (
            isinstance(self.filter, bool)
            or not isinstance(self.filter, int)
            or not 0 <= self.filter <= 0x1FF
        ):
            raise ValueError(f"filter must be coredump_filter bits 0..0x1ff, got {self.filter!r}")
        if self.name is not None:
            core_names(self.name)
        positive_seconds(self.timeout, "timeout", allow_none=True)
        seconds(self.freeze_timeout, "freeze_timeout")
        if self.upload is not None and (
            not isinstance(self.upload, str) or "://" not in self.upload
        ):
            raise ValueError(
                f"upload must be a URL such as s3://bucket/prefix/, got {self.upload!r}"
            )
        if self.compress not in COMPRESSIONS:
            raise ValueError(f"compress must be None or 'zstd', got {self.compress!r}")
        if self.max_size and self.method == "kernel":
            raise ValueError("max_size needs method='native': the kernel writes whole cores")
        if self.compress and self.method == "kernel":
            raise ValueError("compress='zstd' needs method='native': the kernel writes plain cores")
        if (self.redact or self.encrypt_to) and self.method == "kernel":
            raise ValueError(
                "redact= and encrypt_to= need method='native': the kernel writes the whole "
                "process, in the clear"
            )

    def replace(self, **changes: Any) -> CoreOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def suffix(self) -> str:
        """The file name's suffix: ``.core``, ``.core.zst``, ``.core.age``, ``.core.zst.age``."""
        return core_suffix(self.compress, bool(self.encrypt_to))

    def record(
        self,
        note: bytes,
        pipe_argv: Optional[tuple[bytes, ...]],
        pylayout: Optional[dict[str, Any]],
    ) -> tuple[dict[str, Any], bytes]:
        """The engine's ``core`` record (as fields) and its data blob: the GENCORE ``note``,
        the filter's command (compressor, encryptor), the file name's suffix, the kinds of
        gencore's files (the budget's), the memory cgroup, for a capped core the Python layout,
        and what redaction needs."""
        kinds = b"".join(k.encode() + b"\0" for k in FILE_KINDS)
        cgroup = _procfs.cgroup_memory()
        scrub, lists = redact.record_fields(self.redact)
        parts = dict(
            note=note,
            pipe=engine.argv_bytes(pipe_argv),
            suffix=self.suffix.encode() + b"\0",
            kinds=kinds,
            cgroup=os.fsencode(cgroup.path) + b"\0" if cgroup else b"",
        )
        head = sum(len(p) for p in parts.values())
        # the lists are read as 64-bit words
        data, where = engine.blob(**parts, pad=bytes(-head % 8), lists=lists)
        scrub["list_off"] = where.pop("lists_off")
        for k in ("lists_len", "pad_off", "pad_len"):
            where.pop(k)
        fields = dict(
            abi=engine.ABI_VERSION,
            filter=self.filter,
            want_threads=int(bool(self.threads)),
            freeze_signal=freeze_signal(self.freeze_signal),
            freeze_timeout_ns=_ns(self.freeze_timeout),
            timeout_ns=_ns(self.timeout),
            max_size=self.max_size,
            max_total=self.max_total,
            keep_free=self.keep_free,
            uploads=int(self.upload is not None),
            cgroup_version=int(cgroup.version[1]) if cgroup else 0,
            page_cache=PAGE_CACHE_MODES.get(os.environ.get("GENCORE_PAGE_CACHE", "auto"), 0),
            have_pylayout=int(pylayout is not None),
            pylayout=pylayout or {},
            redact=scrub,
            **where,
        )
        return fields, data


def check_max_size(max_size: int, note_len: int) -> None:
    """Raise ``ValueError`` when ``max_size`` cannot hold even this process's headers and
    notes (before anything is forked)."""
    if not max_size:
        return
    engine.require()
    need = int(engine.native.min_core_size(note_len=note_len, max_size=max_size))
    if max_size < need:
        raise ValueError(
            f"max_size {format_size(max_size)} ({max_size} bytes) is below the "
            f"{format_size(need)} ({need} bytes) this process's headers and notes need: pass "
            "at least that"
        )


# -- the triggers -----------------------------------------------------------------------------


def _signal_list(signals: Any, what: str, refused: tuple[int, ...], why: str) -> tuple[int, ...]:
    """Signal numbers from a signal or an iterable of them: real signals of this system, none
    of ``refused`` (the message says ``why``), at most 8."""
    if isinstance(signals, (int, signal.Signals)):
        signals = (signals,)
    out = []
    for s in signals or ():
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"{what} must be signal numbers, got {s!r}")
        n = int(s)
        if not 0 < n <= signal.SIGRTMAX:
            raise ValueError(f"signal {n} is not a signal of this system")
        if n in (signal.SIGKILL, signal.SIGSTOP) or n in refused:
            raise ValueError(f"signal {n} {why}")
        out.append(n)
    if len(out) > 8:
        raise ValueError(f"at most 8 {what.replace('_', ' ')}")
    return tuple(out)


def signal_numbers(signals: Any) -> tuple[int, ...]:
    """The trigger signals as numbers: no crash signal (``on_crash`` handles those), no
    SIGKILL/SIGSTOP, at most 8."""
    return _signal_list(signals, "signals", CRASH_SIGNALS, "cannot be a dump trigger")


FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)


def chain_signal_numbers(signals: Any, trigger_signals: tuple[int, ...]) -> tuple[int, ...]:
    """The chained signals as numbers: signals the application (or a server) handles, such
    as gunicorn's worker-timeout SIGABRT; no fault signal, no trigger signal, at most 8."""
    out = _signal_list(
        signals, "chain_signals", FAULT_SIGNALS, "cannot be chained (on_crash handles faults)"
    )
    both = set(out) & set(trigger_signals)
    if both:
        raise ValueError(f"signal {min(both)} is both a trigger signal and a chained signal")
    return out


@dataclass(frozen=True)
class TriggerConfig:
    """The triggers in force (see :func:`~gencore.install`); ``core`` holds the options every
    triggered core is taken with; ``counters`` are filled by :func:`~gencore.installed`."""

    signals: tuple[int, ...]
    directory: Path
    core: CoreOptions
    collect: bool = False
    format: str = "tar.gz"
    on_crash: bool = False
    on_exception: bool = False
    max_cores: int = 10
    min_interval: float = 1.0
    min_free: int = 0
    crash_timeout: float = 60.0
    state_file: Optional[Path] = None
    hang_timeout: float = 0.0
    heartbeat_timeout: float = 0.0
    rss_limit: int = 0
    rss_interval: float = 0.5
    on_memory_error: bool = False
    chain_signals: tuple[int, ...] = ()
    on_memory_high: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def upload(self) -> Optional[str]:
        """Where each core goes (``upload=``), or None."""
        return self.core.upload

    @property
    def keep_local(self) -> bool:
        """Whether the local file stays after an upload."""
        return self.core.keep_local

    @property
    def compress(self) -> Optional[str]:
        """``"zstd"`` when cores are written as ``.core.zst``."""
        return self.core.compress

    @property
    def max_size(self) -> int:
        """The cap of every triggered core in bytes (0: none)."""
        return self.core.max_size

    @property
    def max_total(self) -> int:
        """The directory's budget for gencore's files in bytes (0: none)."""
        return self.core.max_total

    @property
    def keep_free(self) -> int:
        """Bytes the directory's file system keeps free (0: no floor)."""
        return self.core.keep_free

    @classmethod
    def build(cls, signals: Any, directory: Path, **kw: Any) -> TriggerConfig:
        """Check every argument of :func:`~gencore.install` (``ValueError`` naming the
        argument) and return the frozen configuration."""
        core = CoreOptions(
            directory,
            filter=kw.pop("filter", DEFAULT_FILTER),
            freeze_signal=kw.pop("freeze_signal", None),
            freeze_timeout=kw.pop("freeze_timeout", DEFAULT_FREEZE_TIMEOUT),
            timeout=kw.pop("timeout", DEFAULT_TIMEOUT),
            upload=kw.pop("upload", None),
            keep_local=bool(kw.pop("keep_local", False)),
            compress=kw.pop("compress", None),
            max_size=max_size_bytes(kw.pop("max_size", None)),
            max_total=size_bytes(kw.pop("max_total", None), "max_total"),
            keep_free=size_bytes(kw.pop("keep_free", None), "keep_free"),
            redact=redact.policy(kw.pop("redact", None)),
            encrypt_to=crypt.parse_recipients(kw.pop("encrypt_to", None)),
            python_stacks=False,  # triggered cores read their stacks from memory
        )
        core.validate()
        freeze_signal(core.freeze_signal)
        fmt = kw.pop("format", "tar.gz")
        if fmt not in BUNDLE_FORMATS:
            raise ValueError(f"format must be tar.gz or tar.zst, got {fmt!r}")
        rss = rss_limit_bytes(kw.pop("rss_limit", None))
        interval = seconds(kw.pop("rss_interval", 0.5), "rss_interval")
        if rss and not interval:
            raise ValueError("rss_interval must be positive when rss_limit is set")
        values = dict(
            collect=bool(kw.pop("collect", False)),
            format=fmt,
            on_crash=bool(kw.pop("on_crash", False)),
            on_exception=bool(kw.pop("on_exception", False)),
            max_cores=count(kw.pop("max_cores", 10), "max_cores"),
            min_interval=seconds(kw.pop("min_interval", 1.0), "min_interval"),
            min_free=size_bytes(kw.pop("min_free", 0), "min_free"),
            crash_timeout=positive_seconds(kw.pop("crash_timeout", 60.0), "crash_timeout"),
            hang_timeout=seconds(kw.pop("hang_timeout", None), "hang_timeout"),
            heartbeat_timeout=seconds(kw.pop("heartbeat_timeout", None), "heartbeat_timeout"),
            rss_limit=rss,
            rss_interval=interval or 0.5,
            on_memory_error=bool(kw.pop("on_memory_error", False)),
            on_memory_high=bool(kw.pop("on_memory_high", False)),
        )
        sigs = signal_numbers(signals)
        chain = chain_signal_numbers(kw.pop("chain_signals", ()), sigs)
        if kw:
            raise TypeError(f"unexpected keyword argument {next(iter(kw))!r}")
        return cls(sigs, directory, core, chain_signals=chain, **values)

    def replace(self, **changes: Any) -> TriggerConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def record(self, fds: dict[str, int], tz_offset: int, **blob: Any) -> dict[str, Any]:
        """The engine's ``trigger`` record (as fields) without its blob's places: ``fds`` are
        ``dir_fd``, ``events_fd`` and ``notify_fd``; ``blob`` the note offsets and places."""
        # a chained signal (SIGABRT from a server's timeout) is not also a crash signal
        crash = [s for s in CRASH_SIGNALS if s not in self.chain_signals] if self.on_crash else []
        return dict(
            abi=engine.ABI_VERSION,
            signals=list(self.signals),
            nsignals=len(self.signals),
            crash_signals=crash,
            ncrash=len(crash),
            chain_signals=list(self.chain_signals),
            nchain=len(self.chain_signals),
            # the crash handler runs on an alternate stack (a stack overflow gets a core
            # too), given to each thread through this private signal
            altstack_signal=freeze_signal(self.core.freeze_signal) - 1 if self.on_crash else 0,
            max_cores=self.max_cores,
            min_interval_ns=_ns(self.min_interval),
            min_free_bytes=self.min_free,
            crash_timeout_ns=_ns(self.crash_timeout),
            tz_offset=tz_offset,
            hang_timeout_ns=_ns(self.hang_timeout),
            heartbeat_timeout_ns=_ns(self.heartbeat_timeout),
            rss_limit_bytes=self.rss_limit,
            rss_interval_ns=_ns(self.rss_interval),
            memory_high=int(self.on_memory_high),
            **fds,
            **blob,
        )
