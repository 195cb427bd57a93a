"""Programs for the trigger tests: python triggered.py MODE [ARGS_JSON].

stuck      main thread holds the GIL forever inside a C call (a deadlocked mutex), 4 workers
crash      a worker segfaults (ctypes.string_at(0)); "fh_first"/"fh_after" enable faulthandler
overflow   a C stack overflow (unbounded recursion) in the main thread or a worker
exception  an unhandled exception in a worker ("thread") or in the main thread ("main")
burst      100 signals in a burst against install(max_cores=..., min_interval=...)
uninstall  install/uninstall restore every handler and hook
fork       a forked child gets triggers of its own
exit       exits as soon as a core is being written (200 MiB resident: the write takes a while)
budget     five signal cores of about 100 MiB under install(max_total="250M")
storm      COUNT signal cores INTERVAL s apart under install(**OPTIONS), BALLAST MiB resident;
           prints how long each took to be published (its "done" event)
"""

import ctypes
import faulthandler
import json
import os
import signal
import sys
import threading
import time

from _helpers import children

mode = sys.argv[1]
args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}


def workers(n, prefix="worker"):
    def spin():
        while True:
            time.sleep(0.01)

    for i in range(n):
        threading.Thread(target=spin, name=f"{prefix}-{i}", daemon=True).start()


def stuck_in_c():
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call
    m = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(m, None)
    libc.pthread_mutex_lock(m)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    libc.pthread_mutex_lock(m)  # never returns


def crash_in_worker():
    ctypes.string_at(0)


def fail_in_worker():
    raise ValueError("worker failed on purpose")


def fail_in_main():
    raise RuntimeError("main failed on purpose")


class SigAction(ctypes.Structure):
    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ulong * 16),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


def c_handler(sig):
    act = SigAction()
    ctypes.CDLL(None, use_errno=True).sigaction(sig, None, ctypes.byref(act))
    return act.handler or 0


if mode == "stuck":
    workers(4)
    time.sleep(0.2)
    stuck_in_c()

elif mode == "crash":
    if args.get("fh") == "fh_after":
        faulthandler.enable()
    workers(3, "idle")
    time.sleep(0.2)
    t = threading.Thread(target=crash_in_worker, name="crasher")
    t.start()
    t.join()

elif mode == "overflow":
    # a C stack overflow in the main thread or in a worker started after install
    lib = ctypes.CDLL(args["lib"])
    workers(2, "idle")

    def overflow_in_c():
        lib.overflow_forever(0)  # the first statement: no time for the helper thread's sweep

    if args["where"] == "main":
        overflow_in_c()
    elif args["where"] == "pool":
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pool.submit(overflow_in_c).result()
    elif args["where"] == "thread":  # _thread directly, as some libraries do
        import _thread

        _thread.start_new_thread(overflow_in_c, ())
        time.sleep(60)  # the crash ends the process long before
    else:
        t = threading.Thread(target=overflow_in_c, name="overflowing")
        t.start()
        t.join()

elif mode == "crash2":
    workers(2, "idle")
    barrier = threading.Barrier(2)

    def crash_together():
        barrier.wait()
        ctypes.string_at(0)

    ts = [threading.Thread(target=crash_together, name=f"crasher-{i}") for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

elif mode == "names":
    import datetime

    import gencore
    from gencore import _native

    gencore.install(directory=args["dir"], min_interval=0)
    names = []
    for offset in (0, 5 * 3600 + 1800, -8 * 3600):
        _native.trigger_set_tz(offset)
        now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
        before = set(os.listdir(args["dir"]))
        os.kill(os.getpid(), signal.SIGUSR2)
        while not [n for n in set(os.listdir(args["dir"])) - before if n.endswith(".core")]:
            time.sleep(0.02)
        new = [n for n in set(os.listdir(args["dir"])) - before if n.endswith(".core")][0]
        names.append([new, now.strftime("%Y%m%d.%H%M%S")])
        time.sleep(1.1)
    gencore.uninstall()
    print(json.dumps({"names": names, "pid": os.getpid()}), flush=True)

elif mode == "exception":
    workers(2)
    if args["where"] == "thread":
        t = threading.Thread(target=fail_in_worker, name="failing-worker")
        t.start()
        t.join()
        time.sleep(0.1)
        print(json.dumps({"after_thread": True}), flush=True)
    else:
        fail_in_main()

elif mode == "burst":
    import gencore

    before_fds = sorted(os.listdir("/proc/self/fd"))
    gencore.install(
        directory=args["dir"],
        max_cores=args["max_cores"],
        min_interval=args["min_interval"],
        min_free=args.get("min_free", 0),
    )
    installed_fds = sorted(os.listdir("/proc/self/fd"))
    workers(3)
    for _ in range(args.get("signals", 100)):
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(args.get("gap", 0.0))
    deadline = time.time() + 60
    while time.time() < deadline and any(n.endswith(".partial") for n in os.listdir(args["dir"])):
        time.sleep(0.05)
    time.sleep(0.5)
    counters = gencore.installed().counters
    events = open(gencore.installed().state_file.with_suffix(".events")).read()
    during_fds = sorted(os.listdir("/proc/self/fd"))
    gencore.uninstall()
    print(
        json.dumps(
            {
                "counters": counters,
                "events": events,
                "children": children(),
                "fds_during_same": during_fds == installed_fds,
                "fds_after_same": sorted(os.listdir("/proc/self/fd")) == before_fds,
                "listing": sorted(os.listdir(args["dir"])),
            }
        ),
        flush=True,
    )

elif mode == "exit":
    import gencore

    gencore.install(directory=args["dir"])
    ballast = bytearray(200 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    print(json.dumps({"ready": os.getpid()}), flush=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        n.endswith(".partial") for n in os.listdir(args["dir"])
    ):
        time.sleep(0.001)
    sys.exit(0)  # atexit removes the state and events files; the snapshot child carries on

elif mode == "budget":
    import gencore

    cfg = gencore.install(directory=args["dir"], max_total="250M", min_interval=0)
    ballast = bytearray(os.urandom(1 << 20) * 80)  # incompressible, resident
    workers(2)
    events = cfg.state_file.with_suffix(".events")
    seen = []
    for i in range(5):
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.time() + 120
        while time.time() < deadline and open(events).read().count("finished ") <= i:
            time.sleep(0.05)
        names = sorted(n for n in os.listdir(args["dir"]) if n.startswith("core_"))
        total = sum(os.stat(os.path.join(args["dir"], n)).st_blocks * 512 for n in names)
        seen.append({"names": names, "total": total})
    print(json.dumps({"seen": seen, "events": open(events).read()}), flush=True)

elif mode == "storm":
    import gencore

    cfg = gencore.install(directory=args["dir"], min_interval=0, **args.get("options", {}))
    ballast = bytearray(os.urandom(1 << 20) * args["ballast"])  # incompressible, resident
    workers(2)
    events = cfg.state_file.with_suffix(".events")
    dts = []
    for i in range(args["count"]):
        t0 = time.monotonic()
        os.kill(os.getpid(), signal.SIGUSR2)
        while time.monotonic() - t0 < 30 and open(events).read().count("done ") <= i:
            time.sleep(0.02)
        dts.append(time.monotonic() - t0)
        time.sleep(max(0.0, t0 + args["interval"] - time.monotonic()))
    print(json.dumps({"published_after": dts, "events": open(events).read()}), flush=True)
    gencore.uninstall()

elif mode == "mixed":
    # signal dumps racing with create_core() from a Python thread: the signal may even land
    # in the thread that is taking its own snapshot
    import gencore

    gencore.install(directory=args["dir"], max_cores=0, min_interval=0)
    workers(2)
    made, errors = [], []

    def python_dumps():
        for _ in range(6):
            try:
                made.append(str(gencore.create_core(args["dir"], python_stacks=False)))
            except gencore.GencoreError as e:
                errors.append(str(e))

    t = threading.Thread(target=python_dumps, name="python-dumps")
    t.start()
    while t.is_alive():
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.003)
    deadline = time.time() + 120
    while time.time() < deadline and any(n.endswith(".partial") for n in os.listdir(args["dir"])):
        time.sleep(0.05)
    time.sleep(0.5)
    counters = gencore.installed().counters
    gencore.uninstall()
    print(
        json.dumps(
            {
                "made": made,
                "errors": errors,
                "counters": counters,
                "children": children(),
                "listing": sorted(os.listdir(args["dir"])),
            }
        ),
        flush=True,
    )

elif mode == "uninstall":
    import gencore

    faulthandler.enable()  # a previous C handler for the crash signals
    signal.signal(signal.SIGUSR1, lambda *a: None)  # a previous Python handler
    sigs = [
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGABRT,
    ]
    before = {int(s): c_handler(s) for s in sigs}
    hooks = (sys.excepthook, threading.excepthook)
    fds = sorted(os.listdir("/proc/self/fd"))
    kw = dict(
        signals=(signal.SIGUSR1, signal.SIGUSR2),
        directory=args["dir"],
        on_crash=True,
        on_exception=True,
    )
    gencore.install(**kw)
    changed = {int(s): c_handler(s) != before[int(s)] for s in sigs}
    hooked = (sys.excepthook, threading.excepthook) != hooks
    gencore.install(**kw)  # twice is safe
    state_file = str(gencore.installed().state_file)
    gencore.uninstall()
    after = {int(s): c_handler(s) for s in sigs}
    print(
        json.dumps(
            {
                "changed": changed,
                "hooked": hooked,
                "restored": after == before,
                "hooks_restored": (sys.excepthook, threading.excepthook) == hooks,
                "python_handler": signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL,
                "fds_same": sorted(os.listdir("/proc/self/fd")) == fds,
                "state_file_gone": not os.path.exists(state_file),
                "installed": gencore.installed() is not None,
            }
        ),
        flush=True,
    )

elif mode == "fork":
    import gencore

    gencore.install(directory=args["dir"], min_interval=0)
    workers(2)
    pid = os.fork()
    if pid == 0:
        workers(1, "child")
        cfg = gencore.installed()
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(3)
        print(
            json.dumps(
                {
                    "child": os.getpid(),
                    "state": str(cfg.state_file),
                    "counters": gencore.installed().counters,
                }
            ),
            flush=True,
        )
        os._exit(0)
    os.waitpid(pid, 0)
    print(json.dumps({"parent": os.getpid(), "counters": gencore.installed().counters}), flush=True)
