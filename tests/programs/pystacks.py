"""A process whose Python stacks are known, dumped every way a core is taken:
python pystacks.py MODE DIR [ARGS_JSON].

Threads: "deep" (recursion DEPTH frames deep), "locals" (a frame holding simple values),
"sleeper" (time.sleep), and on 3.12+ one thread running in a subinterpreter (but for
inject). The main thread
then takes or waits for the core:

api      gencore.create_core(DIR)
kernel   gencore.create_core(DIR, method="kernel")
capped   gencore.create_core(DIR, max_size="24M")
signal   gencore.install(SIGUSR2), then holds the GIL in C forever (the test signals it)
hang     gencore.install(hang_timeout=1), then holds the GIL in C forever
crash    gencore.install(on_crash=True), then a thread segfaults
foreign  never imports gencore; holds the GIL in C (the test sends SIGABRT: the kernel's core)
inject   never imports gencore; sleeps in Python (the test runs `gencore trigger --inject`)

A line of JSON on stdout says the process is ready: pid, the threads' native ids by name.
"""

import ctypes
import json
import os
import sys
import threading
import time

mode, directory = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
DEPTH = int(args.get("depth", 150))
# sys.remote_exec (inject) runs its script in the newest interpreter's main thread: a
# subinterpreter sleeping in C would never get there
SUB = sys.version_info >= (3, 12) and mode != "inject"
ready = threading.Barrier(5 if SUB else 4)
forever = threading.Event()
tids = {}


def hold(name):
    tids[name] = threading.get_native_id()
    ready.wait()
    forever.wait()


def recurse(n):
    if n == 0:
        hold("deep")
    else:
        recurse(n - 1)


def with_locals(text, number, *rest, flag=True, **extra):
    big = 2**100
    negative = -7
    ratio = 1.5
    blob = b"bytes\x00here"
    nothing = None
    items = [1, 2, 3]
    table = {"a": 1}
    pair = (1, 2)
    members = {1, 2}
    unicode = "h\xe9llo \u20ac"
    hold("locals")
    return big, negative, ratio, blob, nothing, items, table, pair, members, unicode


def sleeper():
    tids["sleeper"] = threading.get_native_id()
    ready.wait()
    while True:
        time.sleep(3600)


SUB_CODE = """
import time, threading
def sub_sleeper():
    time.sleep(3600)
sub_sleeper()
"""


def in_subinterpreter():
    tids["subinterpreter"] = threading.get_native_id()
    ready.wait()
    if sys.version_info >= (3, 14):
        from concurrent import interpreters

        interpreters.create().exec(SUB_CODE)
    elif sys.version_info >= (3, 13):
        import _interpreters

        _interpreters.run_string(_interpreters.create(), SUB_CODE)
    else:
        import _xxsubinterpreters

        _xxsubinterpreters.run_string(_xxsubinterpreters.create(), SUB_CODE)


def stuck_in_c():
    """The main thread holds the GIL inside a C call that never returns."""
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call
    m = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(m, None)
    libc.pthread_mutex_lock(m)
    announce()
    libc.pthread_mutex_lock(m)


def crash():
    ctypes.string_at(0)


def announce(**extra):
    """The ready line: pid, native ids by thread name, and each parked thread's own view of
    its stack (function names, innermost first)."""
    tids["main"] = threading.get_native_id()
    native = {t.ident: t.native_id for t in threading.enumerate()}
    own = {}
    for ident, frame in sys._current_frames().items():
        if native.get(ident) in (tids["main"], None):
            continue
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        own[native[ident]] = names
    print(json.dumps({"pid": os.getpid(), "tids": tids, "own": own, **extra}), flush=True)


def start_threads():
    threading.Thread(target=recurse, args=(DEPTH,), name="deep", daemon=True).start()
    threading.Thread(
        target=with_locals,
        args=("some text", 42, "rest"),
        kwargs={"k": 1},
        name="locals",
        daemon=True,
    ).start()
    threading.Thread(target=sleeper, name="sleeper", daemon=True).start()
    if SUB:
        threading.Thread(target=in_subinterpreter, name="subinterpreter", daemon=True).start()
    ready.wait()
    time.sleep(0.5)  # the subinterpreter reaches its sleep


def main():
    start_threads()
    if mode in ("foreign", "inject"):
        if mode == "foreign":
            stuck_in_c()
        announce()
        while True:
            time.sleep(0.05)  # safe points for sys.remote_exec
    import gencore

    if mode in ("api", "kernel", "capped"):
        opts = {"method": "kernel"} if mode == "kernel" else {}
        if mode == "capped":
            opts["max_size"] = "24M"
        path = gencore.create_core(directory, **opts)
        announce(core=str(path))
        return
    if mode == "signal":
        gencore.install(directory=directory)
        stuck_in_c()
    elif mode == "hang":
        gencore.install((), directory=directory, hang_timeout=1.0)
        stuck_in_c()
    elif mode == "crash":
        gencore.install((), directory=directory, on_crash=True)
        announce()
        threading.Thread(target=crash, name="crasher").start()
        forever.wait()


main()
