"""Hold the GIL inside a C call for a while (shared by the integration test programs)."""

import ctypes
import time


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def hold_gil_in_c(seconds: float) -> None:
    """ctypes.PyDLL keeps the GIL during the call; a timed lock of a held mutex waits out its
    deadline (the freeze signal does not end the wait early, as sleep() would)."""
    libc = ctypes.PyDLL(None)
    m = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(m, None)
    libc.pthread_mutex_lock(m)
    until = time.time() + seconds
    libc.pthread_mutex_timedlock(m, ctypes.byref(Timespec(int(until), int(until % 1 * 1e9))))
