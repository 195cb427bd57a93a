"""An asyncio program whose tasks wait on everything asyncio offers, then parks:
python tasks.py DIR VIEW_JSON [ARGS_JSON].

Tasks: nested TaskGroups (3.11+), a gather, waiters on a Lock, an Event, a Queue and a plain
Future, a two-task await cycle ("cycle": false leaves it out), a wait_for, a shield, a
sleeper, and PARKED (1,000) tasks sleeping. Once every task waits, the program writes what
it sees of itself to VIEW_JSON (asyncio.all_tasks(), each coroutine chain, each task's
awaiters, derived from the live objects as 3.14's awaited_by records them), prints one JSON
line (pid) and waits: the test takes `python -m asyncio ps` (3.14+) and signals SIGUSR2, the
signal trigger writes the core into DIR.

"loop": "uvloop" runs it on uvloop's loop; "hang": true blocks the loop in a handler (the
watchdog's hang: loop core) instead of parking.
"""

import asyncio
import functools
import json
import os
import sys
import threading
import time

import gencore

directory, view_path = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
PARKED = int(args.get("parked", 1000))
tasks = {}


async def sleeper(seconds=3600):
    await asyncio.sleep(seconds)


async def lock_holder(lock):
    async with lock:
        await asyncio.sleep(3600)


async def lock_waiter(lock):
    async with lock:
        pass


async def event_waiter(event):
    await event.wait()


async def queue_getter(queue):
    await queue.get()


async def future_waiter(future):
    await future


async def cycle_member(other):
    while other not in tasks:
        await asyncio.sleep(0)
    await tasks[other]


async def wait_for_user():
    await asyncio.wait_for(sleeper(), timeout=7200)


async def gatherer(event):
    await asyncio.gather(sleeper(), event_waiter(event))


async def shielded(inner):
    await asyncio.shield(inner)


async def nested_group():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sleeper(), name="nested-leaf")


async def outer_group():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(nested_group(), name="nested-group")
        tg.create_task(sleeper(), name="group-leaf")


def spawn(coro, name):
    tasks[name] = asyncio.ensure_future(coro)
    tasks[name].set_name(name)


def chain(coro):
    """A coroutine's chain of frames, outermost first, as cr_await/gi_yieldfrom give it."""
    names = []
    while type(coro).__name__ in ("coroutine", "generator", "async_generator"):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        names.append(coro.__qualname__)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return names


def held_futures(cb):
    """Futures a done-callback holds: a closure's cells, a partial's arguments."""
    if isinstance(cb, functools.partial):
        objs = list(cb.args)
    else:
        objs = [c.cell_contents for c in getattr(cb, "__closure__", None) or ()]
    return [o for o in objs if isinstance(o, asyncio.Future)]


def awaiters(all_tasks):
    """Who awaits each task, derived from the live objects."""
    by_id = {id(t): t for t in all_tasks}
    waiting_on, edges = {}, set()
    for t in all_tasks:
        w = t._fut_waiter
        if w is None:
            continue
        waiting_on.setdefault(id(w), []).append(t)
        if id(w) in by_id:
            edges.add((id(t), id(w)))
        elif type(w).__name__ == "_GatheringFuture":
            edges.update((id(t), id(c)) for c in w._children if id(c) in by_id)
    for t in all_tasks:
        for cb, _ in t._callbacks or ():
            owner = getattr(cb, "__self__", None)
            if type(owner).__name__ == "TaskGroup" and id(owner._parent_task) in by_id:
                edges.add((id(owner._parent_task), id(t)))
            elif not isinstance(owner, asyncio.Task):
                for f in held_futures(cb):
                    edges.update((id(w), id(t)) for w in waiting_on.get(id(f), ()) if f is not t)
    out = {}
    for waiter, awaited in edges:
        out.setdefault(awaited, []).append(by_id[waiter].get_name())
    return out


def own_view():
    everything = asyncio.all_tasks()
    by = awaiters(everything)
    return [
        {
            "id": id(t),
            "name": t.get_name(),
            "coroutine": chain(t.get_coro()),
            "awaited_by": sorted(by.get(id(t), [])),
        }
        for t in everything
    ]


async def main():
    loop = asyncio.get_running_loop()
    asyncio.current_task().set_name("main")
    if args.get("loop") == "uvloop" and args.get("hang_timeout"):
        gencore.watch_loop(loop)
    lock, event, queue = asyncio.Lock(), asyncio.Event(), asyncio.Queue()
    future = loop.create_future()
    spawn(lock_holder(lock), "lock-holder")
    await asyncio.sleep(0)
    spawn(lock_waiter(lock), "lock-waiter")
    spawn(event_waiter(event), "event-waiter")
    spawn(queue_getter(queue), "queue-getter")
    spawn(future_waiter(future), "future-waiter")
    if args.get("cycle", True):
        spawn(cycle_member("cycle-b"), "cycle-a")
        spawn(cycle_member("cycle-a"), "cycle-b")
    spawn(wait_for_user(), "wait-for")
    spawn(gatherer(event), "gatherer")
    spawn(sleeper(), "shield-inner")
    spawn(shielded(tasks["shield-inner"]), "shielded")
    spawn(sleeper(1800), "sleeper")
    if sys.version_info >= (3, 11):
        spawn(outer_group(), "outer-group")
    for i in range(PARKED):
        spawn(sleeper(), f"parked-{i}")
    for _ in range(20):
        await asyncio.sleep(0)  # every task runs to its first wait
    if args.get("hang"):
        print(json.dumps({"pid": os.getpid()}), flush=True)
        time.sleep(3600)  # blocks the loop: the watchdog's hang: loop core
    view = own_view()
    with open(view_path, "w") as f:
        json.dump({"tasks": view, "tid": threading.get_native_id()}, f)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    gencore.install(directory=directory, hang_timeout=args.get("hang_timeout"))
    if args.get("loop") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
