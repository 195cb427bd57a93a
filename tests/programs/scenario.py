"""Small scenarios run in a fresh interpreter by the tests: python scenario.py NAME ARGS_JSON.

Each prints one JSON line with what it observed. Running them in their own process keeps the
test runner's threads and signal handlers out of the picture.
"""

import asyncio
import ctypes
import gc
import json
import mmap
import os
import resource
import signal
import sys
import threading
import time

from _helpers import children

import gencore

args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
out: dict = {}


def report(**kw):
    out.update(kw)


def error_info(e: BaseException) -> dict:
    return {
        "type": type(e).__name__,
        "msg": str(e),
        "errno": getattr(e, "errno", None),
        "stage": getattr(e, "stage", None),
        "written": getattr(e, "written", None),
    }


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def idle_threads(n):
    ev = threading.Event()
    ts = [threading.Thread(target=ev.wait, name=f"idle{i}", daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    return ev


def scenario_basic():
    d = args["dir"]
    kw = args.get("kw", {})
    before = fds()
    try:
        p = gencore.create_core(d, **kw)
        report(
            core=str(p),
            threads=[(t.tid, t.state) for t in p.report.threads],
            incomplete=list(p.report.incomplete),
            written=p.report.written,
        )
    except gencore.GencoreError as e:
        report(error=error_info(e))
    report(
        fds_same=before == fds(),
        children=children(),
        listing=sorted(os.listdir(d)) if os.path.isdir(d) else None,
    )


def thread_body(i, ev):
    """Each thread waits in a function of its own name (thread_body_N): readers show it."""
    fn = {}
    exec(f"def thread_body_{i}(ev):\n    ev.wait()\n", fn)
    fn[f"thread_body_{i}"](ev)


def scenario_many_threads():
    """n threads (main included), each in a function of its own, then one core."""
    ev = threading.Event()
    for i in range(args["n"] - 1):
        threading.Thread(target=thread_body, args=(i, ev), name=f"t{i}", daemon=True).start()
    p = gencore.create_core(args["dir"])
    report(core=str(p), tids=sorted(t.native_id for t in threading.enumerate()))


def scenario_rlimit_core_zero():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    idle_threads(3)
    scenario_basic()
    report(rlimit=resource.getrlimit(resource.RLIMIT_CORE))


def scenario_fsize_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    scenario_basic()


def scenario_sigchld_ignored():
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    idle_threads(3)
    scenario_basic()


def scenario_reaper():
    """Another waitpid(-1) reaper in the application must not steal our child."""
    stolen = []

    def reaper():
        while not stopped.is_set():
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid:
                    stolen.append(pid)
            except ChildProcessError:
                pass
            time.sleep(0.0005)

    stopped = threading.Event()
    t = threading.Thread(target=reaper, daemon=True)
    t.start()
    scenario_basic()
    stopped.set()
    report(stolen=stolen)


def scenario_concurrent():
    n = args["n"]
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = [str(gencore.create_core(args["dir"])), threading.get_native_id()]
        except BaseException as e:
            results[i] = error_info(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    report(results=results, children=children(), listing=sorted(os.listdir(args["dir"])))


def scenario_blocked_signal():
    sig = args.get("sig") or None
    freeze = sig or int(os.environ.get("GENCORE_FREEZE_SIGNAL", 0)) or signal.SIGRTMAX - 3
    ready = threading.Event()
    go = threading.Event()
    info = {}

    def blocker():
        signal.pthread_sigmask(signal.SIG_BLOCK, {freeze})
        info["tid"] = threading.get_native_id()
        ready.set()
        go.wait()
        # the pending freeze signal is delivered now: the process must survive it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {freeze})
        info["survived"] = True

    t = threading.Thread(target=blocker, name="blocker")
    t.start()
    ready.wait()
    idle_threads(2)
    t0 = time.monotonic()
    p = gencore.create_core(args["dir"], freeze_timeout=args["freeze_timeout"])
    report(
        elapsed=time.monotonic() - t0,
        core=str(p),
        blocked_tid=info["tid"],
        incomplete=list(p.report.incomplete),
        pause=p.report.pause_s,
    )
    go.set()
    t.join()
    time.sleep(0.2)
    report(survived=info.get("survived", False))


def scenario_stdout_eof():
    # enough memory that writing takes a while, then leave while the child writes
    blob = bytearray(os.urandom(1 << 20)) * args.get("mib", 768)
    fut = gencore.start_core(args["dir"])
    # The child closes what it inherited first thing; on a loaded machine it may not have
    # run yet. Stop it only once our stdout is no longer among its descriptors.
    ours = os.readlink("/proc/self/fd/1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            fds = os.listdir(f"/proc/{fut.child_pid}/fd")
            theirs = {os.readlink(f"/proc/{fut.child_pid}/fd/{fd}") for fd in fds}
        except OSError:
            theirs = set()
        if ours not in theirs:
            break
        time.sleep(0.001)
    # Keep the child from finishing before the test looks (the kernel may continue it when
    # this process group is orphaned; the size alone then keeps it busy long enough).
    os.kill(fut.child_pid, signal.SIGSTOP)
    print(json.dumps({"child": fut.child_pid, "blob": len(blob)}), flush=True)
    os._exit(0)


def scenario_async():
    idle_threads(2)

    async def main():
        t0 = time.monotonic()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        tk = asyncio.ensure_future(ticker())
        p = await gencore.create_core_async(args["dir"])
        tk.cancel()
        return p, ticks, time.monotonic() - t0

    p, ticks, el = asyncio.run(main())
    report(
        core=str(p),
        ticks=ticks,
        threads=len(p.report.threads),
        thread_names=[t.name for t in threading.enumerate()],
    )


def scenario_async_cancel():
    blob = bytearray(os.urandom(1 << 20)) * 64  # noqa: F841

    async def main():
        task = asyncio.ensure_future(gencore.create_core_async(args["dir"]))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    report(
        outcome=asyncio.run(main()), children=children(), listing=sorted(os.listdir(args["dir"]))
    )


def scenario_start_core():
    got = []
    done = threading.Event()

    def cb(err, path):
        got.append((repr(err), str(path)))
        done.set()

    fut = gencore.start_core(args["dir"], callback=cb)
    p = fut.result(60)
    done.wait(10)
    report(core=str(p), callback=got)


def scenario_not_dumpable():
    libc = ctypes.CDLL(None)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    try:
        gencore.create_core(args["dir"])
        report(refused=False)
    except gencore.NotDumpableError as e:
        report(refused=True, error=error_info(e))
    p = gencore.create_core(args["dir"], force=True)
    report(forced=str(p))


def scenario_reservations():
    """Huge virtual reservations must not cost blocks or writing."""
    mmap_ = ctypes.CDLL(None).mmap
    mmap_.restype = ctypes.c_void_p
    mmap_.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    MAP_PRIVATE, MAP_ANON, MAP_NORESERVE = 0x02, 0x20, 0x4000
    keep = []
    if args.get("reserve"):
        # 2 GiB read-write, a few pages touched
        big = mmap.mmap(-1, 2 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        for off in range(0, 2 << 30, 256 << 20):
            big[off] = 1
        keep.append(big)
        # 64 GiB PROT_NONE
        addr = mmap_(None, 64 << 30, 0, MAP_PRIVATE | MAP_ANON | MAP_NORESERVE, -1, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
    p = gencore.create_core(args["dir"])
    st = os.stat(p)
    report(
        core=str(p),
        blocks=st.st_blocks * 512,
        apparent=st.st_size,
        written=p.report.written,
        elapsed=p.report.elapsed_s,
    )


def scenario_threads_false():
    idle_threads(3)
    p = gencore.create_core(args["dir"], threads=False)
    report(
        core=str(p),
        threads=[(t.tid, t.state) for t in p.report.threads],
        me=threading.get_native_id(),
    )


class _LocalCycle:
    """Cyclic garbage that holds a thread-local: clearing it takes the thread-list lock."""

    def __init__(self) -> None:
        self.me = self
        self.local = threading.local()
        self.local.value = 1


def scenario_gc_during_current_frames():
    """Every collection finds a thread-local in cyclic garbage, and every allocation collects.

    That is the unlucky instant of CPython gh-106883, made certain: a collection started while
    the thread list is walked, clearing a thread-local, hangs the process on 3.9-3.11.
    """
    idle_threads(3)

    def plant(phase, info):
        if phase == "start":
            _LocalCycle()

    gc.callbacks.append(plant)
    gc.set_threshold(1)
    try:
        p = gencore.create_core(args["dir"])
    finally:
        gc.callbacks.remove(plant)
        gc.set_threshold(700)
    report(core=str(p), gc_enabled=gc.isenabled())


def scenario_timeout():
    blob = bytearray(os.urandom(1 << 20)) * 128  # noqa: F841
    try:
        gencore.create_core(args["dir"], timeout=0.0001)
        report(timed_out=False)
    except gencore.CoreTimeoutError as e:
        report(timed_out=True, error=error_info(e))
    time.sleep(0.1)
    report(children=children(), listing=sorted(os.listdir(args["dir"])))


def scenario_kernel_reference():
    """Our core, then the kernel's core of the same process (abort in a scratch directory)."""
    idle_threads(3)
    p = gencore.create_core(args["dir"])
    print(json.dumps({"core": str(p), "pid": os.getpid()}), flush=True)
    os.chdir(args["kdir"])
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    with open("/proc/self/coredump_filter", "w") as f:
        f.write("0xff")
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


def kernel_caller_frame():
    """A recognisable Python frame on the caller's stack for method='kernel'."""
    return gencore.create_core(args["dir"], method="kernel")


def scenario_kernel_method():
    import faulthandler

    if args.get("faulthandler"):
        faulthandler.enable()
    if args.get("pattern_file"):
        import gencore.capture.kernel

        gencore.capture.kernel.CORE_PATTERN_FILE = args["pattern_file"]
    idle_threads(args.get("threads", 2))
    before = fds()
    t0 = time.monotonic()
    try:
        p = kernel_caller_frame()
    except gencore.GencoreError as e:
        report(error=error_info(e), elapsed=time.monotonic() - t0)
    else:
        pid = p.report.child_pid
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        report(core=str(p), child_pid=pid, child_alive=alive)
    report(children=children(), fds_same=fds() == before, listing=sorted(os.listdir(args["dir"])))


def scenario_bundle_timeout():
    blob = bytearray(os.urandom(1 << 20)) * 64  # noqa: F841 - something to compress
    core = gencore.create_core(args["dir"])
    try:
        gencore.bundle_core(core, timeout=0.05)
        report(timed_out=False)
    except gencore.BundleError as e:
        report(timed_out=True, error=error_info(e))
    time.sleep(0.2)
    report(children=children(), listing=sorted(os.listdir(args["dir"])), core=str(core))


def scenario_doctor():
    import ctypes

    from gencore.cli import main

    if args.get("dumpable0"):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    if args.get("core0"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    argv = ["doctor", "--json"] + (["--directory", args["dir"]] if args.get("dir") else [])
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    report(rc=rc, checks=json.loads(buf.getvalue()))


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
    print(json.dumps(out), flush=True)
