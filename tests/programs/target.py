"""A multi-threaded program that dumps itself with gencore; used by the test suite.

Usage: python target.py CONFIG_JSON RESULT_JSON

Threads park in distinct places (time.sleep, a lock, select, socket recv, a pure-Python busy
loop, a C call through ctypes that released the GIL, a 500-frame recursion); one more thread
calls create_core(). Markers are planted in heap objects, a bytearray, an anonymous mmap, a
thread's C stack and a modified MAP_PRIVATE file mapping, and overwritten right after
create_core() returns. The result file says where they were and what the process saw.
"""

import ctypes
import json
import mmap
import os
import random
import select
import signal
import socket
import sys
import threading
import time

from _helpers import children

import gencore

cfg = json.loads(sys.argv[1])
result_path = sys.argv[2]
rng = random.Random(cfg.get("seed", 1234))
results: dict = {"errors": [], "threads": {}}
stop = threading.Event()
release = threading.Event()


def record(name, fn):
    def run():
        try:
            results["threads"][name] = {
                "native_id": threading.get_native_id(),
                "ident": threading.get_ident(),
                "ok": fn(),
            }
        except BaseException as e:  # any exception here is a test failure
            results["errors"].append(f"{name}: {type(e).__name__}: {e}")

    return run


# ---------------------------------------------------------------- threads
def worker_sleep():
    n = 0
    while not stop.is_set():
        t = time.monotonic()
        time.sleep(0.2)
        if time.monotonic() - t < 0.19:
            return f"sleep returned early after {time.monotonic() - t:.3f} s"
        n += 1
    return True


lock = threading.Lock()
lock.acquire()


def worker_lock():
    return lock.acquire(timeout=120)


sel_a, sel_b = socket.socketpair()


def worker_select():
    r, _, _ = select.select([sel_a], [], [], 120)
    return r == [sel_a] and sel_a.recv(1) == b"s"


recv_a, recv_b = socket.socketpair()


def worker_recv():
    return recv_a.recv(1) == b"r"


busy_count = [0]


def worker_busy():
    x = 0
    while not stop.is_set():
        x += 1
        busy_count[0] = x
    return x > 0


cpipe_r, cpipe_w = os.pipe()
stack_marker = bytes(rng.getrandbits(8) for _ in range(2048))
stack_after = bytes(rng.getrandbits(8) for _ in range(2048))


def worker_cblocked():
    lib = ctypes.CDLL(cfg["stackmark"])
    lib.stackmark_park.restype = ctypes.c_long
    lib.stackmark_park.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p]
    results["stackmark_lib"] = cfg["stackmark"]
    global stackmark_lib
    stackmark_lib = lib
    r = lib.stackmark_park(stack_marker, len(stack_marker), cpipe_r, stack_after)
    return r == 1


def worker_recursive(depth=500):
    if depth > 0:
        return worker_recursive(depth - 1)
    return release.wait(120)


def main_wait(t):
    t.join(120)


# ---------------------------------------------------------------- markers
samples: list = []


def sample_region(kind, base, size, count):
    for _ in range(count):
        off = rng.randrange(0, size - 16)
        samples.append({"kind": kind, "addr": base + off, "len": 16})


def plant():
    regions = {}
    # heap objects: many small ctypes buffers (malloc heap) and bytes objects
    heap = [
        ctypes.create_string_buffer(bytes(rng.getrandbits(8) for _ in range(256)), 256)
        for _ in range(64)
    ]
    for b in heap:
        sample_region("heap", ctypes.addressof(b), 256, 4)
    # a bytearray
    ba = bytearray(rng.getrandbits(8) for _ in range(1 << 16))
    ba_addr = ctypes.addressof((ctypes.c_char * len(ba)).from_buffer(ba))
    sample_region("bytearray", ba_addr, len(ba), 250)
    # an anonymous mmap
    anon = mmap.mmap(-1, 8 << 20)
    for off in range(0, 8 << 20, 4096):
        anon[off : off + 64] = rng.getrandbits(512).to_bytes(64, "little")
    anon_addr = ctypes.addressof((ctypes.c_char * len(anon)).from_buffer(anon))
    for _ in range(250):
        page = rng.randrange(0, (8 << 20) // 4096)
        samples.append(
            {"kind": "mmap", "addr": anon_addr + page * 4096 + rng.randrange(0, 48), "len": 16}
        )
    # a modified MAP_PRIVATE file mapping
    fpath = os.path.join(cfg["workdir"], "private.bin")
    with open(fpath, "wb") as f:
        f.write(b"\xab" * (1 << 20))
    with open(fpath, "r+b") as f:
        priv = mmap.mmap(f.fileno(), 1 << 20, access=mmap.ACCESS_COPY)
    priv[:] = bytes(rng.getrandbits(8) for _ in range(1 << 20))
    priv_addr = ctypes.addressof((ctypes.c_char * len(priv)).from_buffer(priv))
    sample_region("private-file", priv_addr, 1 << 20, 250)
    # the C stack of the ctypes thread
    while stackmark_lib_addr() == 0:
        time.sleep(0.01)
    sample_region("stack", stackmark_lib_addr(), len(stack_marker), 100)
    regions.update(heap=heap, ba=ba, anon=anon, priv=priv)
    for s in samples:
        s["expect"] = ctypes.string_at(s["addr"], s["len"]).hex()
    return regions


def stackmark_lib_addr():
    lib = globals().get("stackmark_lib")
    return ctypes.c_size_t.in_dll(lib, "stackmark_addr").value if lib else 0


def overwrite(regions):
    for b in regions["heap"]:
        ctypes.memset(b, 0x5A, 256)
    regions["ba"][:] = b"\x5a" * len(regions["ba"])
    regions["anon"][:] = b"\x5a" * len(regions["anon"])
    regions["priv"][:] = b"\x5a" * len(regions["priv"])


def plant_secret():
    """A DONTDUMP region filled with a pattern that exists nowhere else in memory."""
    m = mmap.mmap(-1, 1 << 16)
    m.madvise(mmap.MADV_DONTDUMP)
    x = cfg.get("secret_seed", 99991)
    for i in range(1 << 16):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        m[i] = (x >> 16) & 0xFF
    return m


# ---------------------------------------------------------------- state probes
def fd_count():
    return len(os.listdir("/proc/self/fd"))


def sig_state():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: fields[k].strip() for k in ("SigCgt", "SigIgn", "SigBlk")} | {
        "py": {
            s.name: repr(signal.getsignal(s))
            for s in signal.Signals
            if s not in (signal.SIGKILL, signal.SIGSTOP)
        }
    }


def main():
    atfork = {"n": 0}
    os.register_at_fork(
        before=lambda: atfork.__setitem__("n", atfork["n"] + 1), after_in_child=lambda: os._exit(99)
    )
    if cfg.get("sigchld_ignore"):
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    workers = [
        ("sleeper", worker_sleep),
        ("locker", worker_lock),
        ("selecter", worker_select),
        ("receiver", worker_recv),
        ("busy", worker_busy),
        ("cblocked", worker_cblocked),
        ("recursive", worker_recursive),
    ]
    threads = [threading.Thread(target=record(n, f), name=n, daemon=True) for n, f in workers]
    for t in threads:
        t.start()
    secret = plant_secret() if cfg.get("secret") else None
    # memory that makes a core larger than its max_size: random, so that it is really there
    ballast = [os.urandom(1 << 20) for _ in range(cfg.get("ballast_mb", 0))]
    results["ballast_mb"] = len(ballast)
    regions = plant()
    time.sleep(0.2)  # everyone blocked where they should be
    before = {"fds": fd_count(), "sig": sig_state(), "children": children()}
    out: dict = {}

    main_ident = threading.get_ident()
    expected = {t.ident: f.__name__ for t, (_, f) in zip(threads, workers)}
    expected[main_ident] = "main_wait"

    def in_function(frame, name):
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False

    def settled():
        """Every thread is inside its function (a loaded machine can be slow to get there)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            frames = sys._current_frames()
            if all(in_function(frames.get(i), n) for i, n in expected.items()):
                return
            time.sleep(0.01)
        results["errors"].append("threads did not reach their functions")

    def snap():
        settled()
        out["snapshotter_native_id"] = threading.get_native_id()
        out["snapshotter_ident"] = threading.get_ident()
        try:
            p = gencore.create_core(
                cfg["coredir"],
                freeze_timeout=2.0,
                compress=cfg.get("compress"),
                max_size=cfg.get("max_size"),
            )
            out["core"] = str(p)
            out["report"] = {
                "threads": [(t.tid, t.state) for t in p.report.threads],
                "pause_s": p.report.pause_s,
                "written": p.report.written,
                "file_size": p.report.file_size,
                "compressed_size": p.report.compressed_size,
            }
            overwrite(regions)
        except BaseException as e:
            results["errors"].append(f"create_core: {type(e).__name__}: {e}")

    caller = threading.Thread(target=snap, name="snapshotter")
    caller.start()
    main_wait(caller)
    busy_before = busy_count[0]
    after = {"fds": fd_count(), "sig": sig_state(), "children": children()}
    # release everyone and check they finish normally
    lock.release()
    sel_b.send(b"s")
    recv_b.send(b"r")
    os.write(cpipe_w, b"c")
    release.set()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    results.update(
        out,
        samples=samples,
        before=before,
        after=after,
        atfork=atfork["n"],
        busy_progressed=busy_count[0] > busy_before,
        alive=[t.name for t in threads if t.is_alive()],
        pid=os.getpid(),
        main_native_id=threading.get_native_id(),
        main_ident=threading.get_ident(),
        python_version=sys.version.split()[0],
        executable=sys.executable,
        stack_marker=stack_marker.hex(),
        secret=secret is not None,
    )
    with open(result_path, "w") as f:
        json.dump(results, f)


main()
