"""Type stub of the native snapshot engine (src/gencore/_native/*.c).

Every entry point takes keyword arguments (the C side parses them by name).
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

STATUS_SIZE: int
STATUS_MAGIC: int
DEFAULT_FREEZE_SIGNAL: int
SIGRTMIN: int
SIGRTMAX: int
TRIGGER_RESULT_SIZE: int
WATCH_REASON_CAP: int
WATCH_DETAIL_CAP: int
WATCH_LOOPS: int

def snapshot(
    core_fd: int,
    dir_fd: int,
    status_fd: int,
    partial_name: bytes,
    final_name: bytes,
    note: Optional[bytes],
    threads: bool,
    filter: int,
    freeze_timeout: float,
    freeze_signal: int,
    signo: int = ...,
    code: int = ...,
    addr: int = ...,
    sender: int = ...,
    pipe_argv: Optional[tuple[bytes, ...]] = None,
    max_size: int = 0,
    pylayout: Optional[tuple[int, ...]] = None,
) -> dict[str, Any]: ...
def reap(pid: int, block: bool) -> Optional[int]: ...
def dumpable() -> int: ...
def kernel_fork(dir_fd: int, make_dumpable: bool) -> int: ...
def core_stem(time: int, tz_offset: int, pid: int, seq: int) -> str: ...
def next_seq() -> int: ...
def gc_list_tail() -> int: ...
def trigger_install(
    *,
    dir_fd: int,
    events_fd: int,
    notify_fd: int,
    signals: Sequence[int],
    crash_signals: Sequence[int],
    note: bytes,
    note_time_offset: int,
    crash_note: bytes,
    crash_note_time_offset: int,
    filter: int,
    freeze_signal: int,
    freeze_timeout: float,
    timeout: float,
    crash_timeout: float,
    max_cores: int,
    min_interval: float,
    min_free: int,
    tz_offset: int,
    helper_argv: Optional[bytes] = None,
    altstack_signal: int = 0,
    hang_timeout: float = 0.0,
    heartbeat_timeout: float = 0.0,
    rss_limit: int = 0,
    rss_interval: float = 0.5,
    watch_note: bytes = b"",
    watch_note_time_offset: int = -1,
    watch_note_reason_offset: int = -1,
    watch_note_detail_offset: int = -1,
    probe_callback: Optional[Callable[[], None]] = None,
    pipe_argv: Optional[bytes] = None,
    max_size: int = 0,
    pylayout: Optional[tuple[int, ...]] = None,
) -> None: ...
def trigger_quiesce() -> None: ...
def watch_heartbeat() -> None: ...
def watch_loop_beat(slot: int) -> None: ...
def watch_loop_stop(slot: int) -> None: ...
def trigger_uninstall() -> None: ...
def trigger_stats() -> dict[str, int]: ...
def trigger_claim() -> int: ...
def trigger_after_fork_child() -> None: ...
def trigger_set_tz(offset: int) -> None: ...
