"""Programs for the watchdog tests, run under `gencore run --on-hang/--on-rss/...`.

gil        the main thread holds the GIL inside a C call for SECONDS (ctypes.PyDLL), 3 workers
loop       asyncio.run: a handler calls time.sleep(SECONDS) (the GIL is free, the loop is not)
heartbeat  a worker calls gencore.heartbeat() every 50 ms, then stops for SECONDS
grow       the resident size grows to MIB MiB in 20 MiB steps, stays there a moment, is freed
leak       grows by STEP MiB every 50 ms until something (the OOM killer) ends it
healthy    a busy service for SECONDS: CPU-bound threads, an asyncio loop with many short
           callbacks, heartbeats; prints what threading and the triggers saw

Prints one JSON line at the end: {"pid": ..., ...}.
"""

import asyncio
import ctypes
import json
import os
import sys
import threading
import time

import gencore

mode = sys.argv[1]
args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
seconds = float(args.get("seconds", 6))
result = {"pid": os.getpid(), "main_tid": threading.get_native_id()}


def workers(n):
    def spin():
        while True:
            time.sleep(0.01)

    for i in range(n):
        threading.Thread(target=spin, name=f"worker-{i}", daemon=True).start()


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def stuck_in_c():
    # PyDLL: the GIL stays held during the call; a timed lock of a held mutex waits out its
    # deadline (signals, such as the freeze's, do not end the wait early)
    libc = ctypes.PyDLL(None)
    m = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(m, None)
    libc.pthread_mutex_lock(m)
    until = time.time() + seconds
    deadline = Timespec(int(until), int(until % 1 * 1e9))
    libc.pthread_mutex_timedlock(m, ctypes.byref(deadline))


def blocking_handler():
    time.sleep(seconds)  # a synchronous call inside a coroutine: the loop cannot run


async def serve_then_block():
    for _ in range(20):
        await asyncio.sleep(0.01)
    blocking_handler()
    await asyncio.sleep(0.1)


def heartbeats():
    result["beat_tid"] = threading.get_native_id()
    for _ in range(40):
        gencore.heartbeat()
        time.sleep(0.05)
    time.sleep(seconds)  # the application stops beating
    for _ in range(10):
        gencore.heartbeat()
        time.sleep(0.05)


def grow():
    blocks = []
    for _ in range(int(args["mib"]) // 20):
        blocks.append(bytearray(20 << 20))  # zero-filled: resident at once
        time.sleep(0.1)
    time.sleep(1.5)
    del blocks
    time.sleep(1.5)


def leak():
    blocks = []
    while True:
        blocks.append(bytearray(int(args["step"]) << 20))  # zero-filled: resident at once
        time.sleep(0.05)


def healthy():
    before = [t.name for t in threading.enumerate()]
    stop = time.monotonic() + seconds

    def cpu():
        n = 0
        while time.monotonic() < stop:
            n += sum(i * i for i in range(1000))

    threads = [threading.Thread(target=cpu, name=f"cpu-{i}") for i in range(2)]
    for t in threads:
        t.start()

    async def requests():
        async def one(i):
            await asyncio.sleep(0)
            return sum(range(i % 500))

        while time.monotonic() < stop:
            await asyncio.gather(*(one(i) for i in range(200)))
            gencore.heartbeat()
            await asyncio.sleep(0.001)

    asyncio.run(requests())
    for t in threads:
        t.join()
    result["threads_before"] = before
    result["threads_after"] = [t.name for t in threading.enumerate()]


if mode == "gil":
    workers(3)
    time.sleep(0.3)
    stuck_in_c()
elif mode == "loop":
    workers(2)
    asyncio.run(serve_then_block())
elif mode == "heartbeat":
    t = threading.Thread(target=heartbeats, name="beater")
    t.start()
    t.join()
elif mode == "grow":
    grow()
elif mode == "leak":
    workers(2)
    leak()
elif mode == "healthy":
    healthy()
else:
    raise SystemExit(f"unknown mode {mode}")
time.sleep(0.5)  # a core started at the very end is published before exit
result["counters"] = gencore.installed().counters
print(json.dumps(result), flush=True)
