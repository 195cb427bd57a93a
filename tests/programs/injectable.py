"""A Python program that never imports gencore, for ``gencore trigger --inject``.

Usage: python injectable.py MODE   (MODE: loop | blocked)

Four workers sleep in functions with recognisable names. The main thread loops (safe points
every 50 ms) or, in "blocked", waits in C (pause()) until a signal. Every SIGUSR1 makes the
main loop print one JSON line: open fds, threads, and the modules imported since start-up.
"""

import json
import os
import signal
import sys
import threading
import time

START_MODULES = set(sys.modules)


def inj_worker_0():
    while True:
        time.sleep(0.05)


def inj_worker_1():
    while True:
        time.sleep(0.05)


def inj_worker_2():
    while True:
        time.sleep(0.05)


def inj_worker_3():
    while True:
        time.sleep(0.05)


def report(*_):
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "fds": sorted(os.listdir("/proc/self/fd")),
                "threads": sorted(t.name for t in threading.enumerate()),
                "native_threads": len(os.listdir("/proc/self/task")),
                "new_modules": sorted(set(sys.modules) - START_MODULES),
            }
        ),
        flush=True,
    )


wanted = []


def main_loop():
    while True:
        if wanted:
            wanted.pop()
            report()
        time.sleep(0.05)


# the handler only asks: printing from it could re-enter a print in progress
signal.signal(signal.SIGUSR1, lambda *_: wanted.append(1))
for i, f in enumerate((inj_worker_0, inj_worker_1, inj_worker_2, inj_worker_3)):
    threading.Thread(target=f, name=f"inj-{i}", daemon=True).start()
START_MODULES = set(sys.modules)  # what the program itself needs, reporting included
time.sleep(0.1)
report()
if sys.argv[1] == "blocked":
    import ctypes  # in "blocked" only: the loop mode never loads ctypes (nor libffi)

    ctypes.CDLL(None).pause()  # the main thread in C until a signal arrives
main_loop()
