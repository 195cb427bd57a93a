"""Programs for the report tests: python incident.py MODE OUT_DIR [ARGS_JSON].

service   a small service: a pool of identical idle workers, a few threads each in a function
          of its own, an asyncio loop with named tasks, and a heap with five planted types far
          larger than anything else; writes core "before" (the planted heap half grown), then
          core "after" from handle_request(), and OUT_DIR/live.json with what the process saw
          of itself just before each dump: its thread ids (/proc/self/task), the calling
          thread's function, the planted types in order, the task names.
many      ARGS {"threads": N, "distinct": false}: N threads parked in a few different stacks
          (with distinct: each thread at a recursion depth of its own), then one core.
fleet     ARGS {"plan": [[function, count], ...]}: cores written from the named functions
          (handler_a, handler_b), and one unhandled exception in a worker (on_exception).
"""

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import gencore

mode, out = sys.argv[1], Path(sys.argv[2])
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
stop = threading.Event()


class Order:
    __slots__ = ("id", "user", "items", "total", "state", "created", "updated", "note")

    def __init__(self, i):
        self.id = i
        self.user = None
        self.items = None
        self.total = None
        self.state = None
        self.created = None
        self.updated = None
        self.note = None


# Planted heap, largest first by far (the interpreter's own types stay under 3 MiB).
PLANTED = ["bytes", "list", "str", "__main__.Order", "bytearray"]
HEAP = {}


def plant(fraction):
    HEAP["bytes"] = [bytes([i % 251]) * 10240 for i in range(int(4000 * fraction))]
    HEAP["list"] = [[None] * 10000 for _ in range(int(300 * fraction))]
    HEAP["str"] = [f"{i:08d}" + "s" * 2040 for i in range(int(8000 * fraction))]
    HEAP["orders"] = [Order(i) for i in range(int(70000 * fraction))]
    HEAP["bytearray"] = [bytearray(10240) for _ in range(int(500 * fraction))]


def idle_worker(ready):
    ready.release()
    stop.wait()


def parse_feed(ready):
    ready.release()
    stop.wait()


def flush_metrics(ready):
    ready.release()
    stop.wait()


def deep(n, ready):
    if n:
        return deep(n - 1, ready)
    ready.release()
    stop.wait()


TASKS = ["fetch-users", "poll-queue", "refresh-cache"]


async def wait_forever(event):
    await event.wait()


def loop_thread(ready):
    async def main():
        event = asyncio.Event()
        tasks = [asyncio.ensure_future(wait_forever(event)) for _ in TASKS]
        for t, name in zip(tasks, TASKS):
            t.set_name(name)
        await asyncio.sleep(0)
        ready.release()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        event.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def start(target, n, ready, name, *extra):
    for i in range(n):
        t = threading.Thread(target=target, args=(*extra, ready), name=f"{name}-{i}", daemon=True)
        t.start()


def tids():
    return sorted(int(t) for t in os.listdir("/proc/self/task"))


def handle_request(live):
    live["after"] = {"tids": tids(), "function": "handle_request"}
    (out / "live.json").write_text(json.dumps(live))
    return gencore.create_core(directory=out, name="after.core")


def service():
    ready = threading.Semaphore(0)
    start(idle_worker, 12, ready, "pool")
    start(parse_feed, 1, ready, "feed")
    start(flush_metrics, 1, ready, "metrics")
    start(deep, 1, ready, "deep", 40)
    start(loop_thread, 1, ready, "loop")
    for _ in range(16):
        ready.acquire()
    live = {"planted": PLANTED, "orders": 70000, "tasks": TASKS, "pid": os.getpid()}
    plant(0.5)
    live["before"] = {"tids": tids()}
    gencore.create_core(directory=out, name="before.core")
    plant(1.0)
    handle_request(live)
    stop.set()


def many(n, distinct=False):
    sys.setrecursionlimit(n + 1000)
    ready = threading.Semaphore(0)
    kinds = [idle_worker, parse_feed, flush_metrics]
    for i in range(n):
        if distinct:  # every thread a stack of its own: recursion depth i
            args_ = (i, ready)
            target = deep
        elif i % 10 == 9:
            args_ = ((i // 10) % 100, ready)  # 100 recursion depths: distinct stacks
            target = deep
        else:
            args_ = (ready,)
            target = kinds[i % 3]
        threading.Thread(target=target, args=args_, name=f"t-{i}", daemon=True).start()
    for _ in range(n):
        ready.acquire()
    live = {"tids": tids(), "pid": os.getpid()}
    (out / "live.json").write_text(json.dumps(live))
    gencore.create_core(directory=out, name="many.core")
    stop.set()


def handler_a(i):
    return gencore.create_core(directory=out)


def handler_b(i):
    return gencore.create_core(directory=out)


def fleet(plan):
    written = []
    for fn, count in plan:
        for i in range(count):
            path = globals()[fn](i)
            written.append({"core": str(path), "function": fn})
    gencore.install(on_exception=True, directory=str(out))
    (out / "live.json").write_text(json.dumps({"written": written, "pid": os.getpid()}))

    def explode():
        raise KeyError("no such user")

    t = threading.Thread(target=explode, name="explode")
    t.start()
    t.join()


if mode == "service":
    service()
elif mode == "many":
    many(int(args["threads"]), bool(args.get("distinct")))
elif mode == "fleet":
    fleet(args["plan"])
