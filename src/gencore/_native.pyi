"""Type stub of the native snapshot engine (src/gencore/_native/*.c)."""

from typing import Any, Optional

STATUS_SIZE: int
STATUS_MAGIC: int
DEFAULT_FREEZE_SIGNAL: int
SIGRTMIN: int
SIGRTMAX: int

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
) -> dict[str, Any]: ...
def reap(pid: int, block: bool) -> Optional[int]: ...
def dumpable() -> int: ...
def kernel_fork(dir_fd: int, make_dumpable: bool) -> int: ...
