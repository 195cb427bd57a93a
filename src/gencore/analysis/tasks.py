"""Every asyncio task in a core: its coroutine stack, what it waits on, who waits on it
(``gencore tasks``).

Where the tasks are found:

- Python 3.14+: the ``_asyncio`` module's lists, one per thread state and one per
  interpreter (for tasks of threads that ended), through the module's debug offsets
  (``AsyncioDebug``), as ``python -m asyncio ps`` reads a live process;
- 3.9-3.13: the garbage collector's lists of every interpreter (the GENCORE note's heads, or
  the interpreter state's), keeping the objects whose class is ``_asyncio.Task`` or the
  pure-Python ``asyncio.tasks.Task``, or derives from them.

A task's coroutine stack follows its coroutine and what each one awaits (``cr_await``), frame
by frame. Who awaits a task: on 3.14+ the task's own ``awaited_by``; before, derived as 3.14
records it: a task waiting on it (``_fut_waiter``), on a ``gather`` holding it, on a future its
done-callbacks complete (``shield``, ``wait``, ``wait_for``), or the parent of its
``TaskGroup``. What a pending task is blocked on comes from the future it waits on and the
coroutine frame awaiting it (a ``Lock``, ``Event``, ``Condition``, ``Semaphore``, ``Queue``,
``sleep`` with the time left). What the core does not show is reported as unknown.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..errors import CoreFormatError
from .memory import Unreadable
from .pylayout import TAG_MASK, asyncio_layout
from .pyobjects import Interpreter, PyModel
from .stacks import FrameInfo

if TYPE_CHECKING:
    from .reader import ElfCore

__all__ = ["Blocker", "LoopInfo", "TaskInfo", "TaskReport", "find_tasks"]

_BAD = (
    Unreadable,
    struct.error,
    ValueError,
    IndexError,
    OverflowError,
    UnicodeDecodeError,
    KeyError,
)
MAX_CORO_DEPTH = 256
C_TASK, PY_TASK = "_asyncio.Task", "asyncio.tasks.Task"
C_FUTURE, PY_FUTURE = "_asyncio.Future", "asyncio.futures.Future"
_STATES = {0: "pending", 1: "cancelled", 2: "done"}
_PY_STATES = {"PENDING": "pending", "CANCELLED": "cancelled", "FINISHED": "done"}


@dataclass(frozen=True)
class Blocker:
    """What a pending task waits on, as far as the core tells."""

    kind: str
    """``task``, ``gather``, ``lock``, ``event``, ``condition``, ``semaphore``,
    ``queue.get``, ``queue.put``, ``sleep``, ``taskgroup``, ``shield``, ``wait``,
    ``wait_for``, ``future``, ``running``, ``scheduled`` or ``unknown``."""
    description: str
    address: int = 0
    """The object waited on (a future, or the lock/event/queue...)."""
    waiters: Optional[int] = None
    """How many futures wait on the same primitive, where it has a waiter list."""
    remaining: Optional[float] = None
    """Seconds left (sleep, with the time of the core known)."""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``blocked_on``."""
        doc: dict[str, Any] = {"kind": self.kind, "description": self.description}
        if self.address:
            doc["address"] = hex(self.address)
        if self.waiters is not None:
            doc["waiters"] = self.waiters
        if self.remaining is not None:
            doc["remaining"] = round(self.remaining, 3)
        return doc


@dataclass
class TaskInfo:
    """One asyncio task."""

    id: int
    """The task object's address (``python -m asyncio ps``' task id)."""
    name: Optional[str]
    state: str
    """``pending``, ``done``, ``cancelled`` or ``unknown``."""
    coroutine: list[FrameInfo]
    """The coroutine stack, outermost first (innermost last)."""
    loop: int = 0
    thread: Optional[int] = None
    """The TID of the thread running the task's loop, if it runs."""
    interpreter: int = 0
    running: bool = False
    """Executing right now on its loop's thread."""
    blocked_on: Optional[Blocker] = None
    awaiting: list[int] = field(default_factory=list)
    """Tasks this task waits for."""
    awaited_by: list[int] = field(default_factory=list)
    """Tasks waiting for this task."""
    result: Optional[str] = None
    """A finished task's result or exception, shortly."""
    python: bool = False
    """A pure-Python ``asyncio.tasks.Task`` (not ``_asyncio.Task``)."""
    coro_address: int = 0

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of one task in ``gencore tasks --json``."""
        return {
            "id": hex(self.id),
            "name": self.name,
            "state": self.state,
            "thread": self.thread,
            "interpreter": self.interpreter,
            "loop": hex(self.loop) if self.loop else None,
            "running": self.running,
            "coroutine": [
                {"function": f.qualname, "file": f.file, "line": f.line} for f in self.coroutine
            ],
            "blocked_on": self.blocked_on.to_json() if self.blocked_on else None,
            "awaiting": [hex(t) for t in self.awaiting],
            "awaited_by": [hex(t) for t in self.awaited_by],
            "result": self.result,
        }


@dataclass(frozen=True)
class LoopInfo:
    """An event loop that tasks belong to."""

    address: int
    type: str
    thread: Optional[int]
    """The TID of the thread running it (None: not running when the core was taken)."""
    tasks: int
    pending: int


@dataclass
class TaskReport:
    """The tasks of a core, what was read and what could not be."""

    tasks: list[TaskInfo]
    loops: list[LoopInfo]
    source: str
    notes: list[str] = field(default_factory=list)
    """What the answer is missing and why (unreadable objects, omitted memory)."""

    def __iter__(self) -> Iterator[TaskInfo]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def by_id(self) -> dict[int, TaskInfo]:
        """The tasks by address."""
        return {t.id: t for t in self.tasks}

    def cycles(self) -> list[list[int]]:
        """Await cycles among the tasks (each a list of task ids, the first repeated last)."""
        graph = {t.id: list(t.awaiting) for t in self.tasks}
        color: dict[int, int] = {}
        out: list[list[int]] = []
        for root in graph:
            if color.get(root):
                continue
            stack: list[tuple[int, int]] = [(root, 0)]
            path: list[int] = []
            while stack:
                node, i = stack.pop()
                if i == 0:
                    color[node] = 1
                    path.append(node)
                kids = graph.get(node, [])
                if i < len(kids):
                    stack.append((node, i + 1))
                    kid = kids[i]
                    if color.get(kid) == 1:
                        out.append(path[path.index(kid) :] + [kid])
                    elif not color.get(kid):
                        stack.append((kid, 0))
                else:
                    color[node] = 2
                    path.pop()
        return out

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``gencore tasks --json``."""
        return {
            "source": self.source,
            "notes": self.notes,
            "loops": [
                {
                    "address": hex(lp.address),
                    "type": lp.type,
                    "thread": lp.thread,
                    "tasks": lp.tasks,
                    "pending": lp.pending,
                }
                for lp in self.loops
            ],
            "tasks": [t.to_json() for t in self.tasks],
            "cycles": [[hex(t) for t in c] for c in self.cycles()],
        }


class _Reader:
    """Reads futures and tasks, C (``_asyncio``) and pure-Python alike."""

    def __init__(self, model: PyModel) -> None:
        self.m = model
        self.L = model.layout.offsets
        self.kinds: dict[int, Optional[str]] = {}
        self._head: Optional[tuple[int, bytes]] = None
        fields = [v for k, v in self.L.items() if k.startswith(("task.", "fut."))]
        self._size = max(fields) + 8 if fields else 0

    def kind(self, obj: int) -> Optional[str]:
        """``c-task``, ``py-task``, ``c-future``, ``py-future`` or None, by the object's
        class (subclasses included)."""
        try:
            tp = self.m.u64(obj + 8)
        except Unreadable:
            return None
        if tp not in self.kinds:
            names = [self.m.type_info(t) for t in self.m.mro(tp)]
            found = [n.name for n in names if n is not None]
            self.kinds[tp] = next(
                (
                    k
                    for name, k in (
                        (C_TASK, "c-task"),
                        (PY_TASK, "py-task"),
                        (C_FUTURE, "c-future"),
                        (PY_FUTURE, "py-future"),
                    )
                    if name in found
                ),
                None,
            )
        return self.kinds[tp]

    def _c(self, obj: int, key: str) -> int:
        head = self._head
        if head is not None and head[0] == obj:
            return int(struct.unpack_from("<Q", head[1], self.L[key])[0]) & TAG_MASK
        return self.m.u64(obj + self.L[key]) & TAG_MASK

    def load(self, obj: int, kind: str) -> None:
        """Read a C task's fields in one go (the next reads of ``obj`` come from it)."""
        self._head = None
        if kind == "c-task" and self._size:
            try:
                self._head = (obj, self.m.mem.raw(obj, self._size))
            except Unreadable:
                pass

    def state(self, obj: int, kind: str) -> str:
        if kind.startswith("c-"):
            return _STATES.get(self.m.i32(obj + self.L["fut.state"]), "unknown")
        text = self.m.str_value(self.m.attr(obj, "_state") or 0, 32)
        return _PY_STATES.get(text or "", "unknown")

    def get(self, obj: int, kind: str, what: str) -> int:
        """A field of a future or task: loop, coro, fut_waiter, name, result, exception."""
        if kind.startswith("c-"):
            key = f"task.{what}" if what in ("coro", "fut_waiter", "name") else f"fut.{what}"
            return self._c(obj, key)
        return self.m.attr(obj, "_" + what) or 0

    def callbacks(self, obj: int, kind: str) -> list[int]:
        """The done-callbacks of a future (each the callable)."""
        out: list[int] = []
        if kind.startswith("c-"):
            first = self._c(obj, "fut.callback0")
            if first:
                out.append(first)
            lst = self._c(obj, "fut.callbacks")
        else:
            lst = self.m.attr(obj, "_callbacks") or 0
        if lst and self.m.type_name(lst) == "list":
            for item in self.m.list_items(lst, 4096):
                if self.m.type_name(item) == "tuple":
                    pair = self.m.tuple_items(item, 2)
                    if pair:
                        out.append(pair[0])
                else:
                    out.append(item)
        return out

    def name(self, task: int, kind: str) -> Optional[str]:
        obj = self.get(task, kind, "name")
        if not obj:
            return None
        text = self.m.str_value(obj, 256)
        if text is not None:
            return text
        number = self.m.int_value(obj)  # 3.12+ names tasks lazily: Task-<n>
        return f"Task-{number}" if number is not None else None


def _gc_heads(core: ElfCore, model: PyModel, interp: Interpreter) -> list[int]:
    L = model.L
    heap = core.metadata.get("heap")
    if interp.id == 0 and isinstance(heap, dict) and isinstance(heap.get("gc_heads"), list):
        return [int(h) for h in heap["gc_heads"]]
    gc = interp.address + L["interp.gc"]
    heads = [gc + L["gc.generations"] + i * L["gc.generation_size"] for i in range(3)]
    return heads + [gc + L["gc.permanent"]]


def _gc_tasks(core: ElfCore, model: PyModel, reader: _Reader, notes: list[str]) -> list[int]:
    """3.9-3.13: the task objects on the collector's lists of every interpreter."""
    mem = model.mem
    mm, offset = getattr(mem, "mm", None), getattr(mem, "offset", None)
    if mm is None or offset is None:
        raise CoreFormatError("the GC walk needs a core's memory")
    unpack = struct.Struct("<QQQQ").unpack_from
    limit = getattr(mem, "dumped", 1 << 40) // 16 + 1
    found: list[int] = []
    wanted: dict[int, bool] = {}
    for interp in model.interpreters():
        for head in _gc_heads(core, model, interp):
            try:
                node, steps = model.u64(head) & ~7, 0
                while node and node != head:
                    steps += 1
                    if steps > limit:
                        raise Unreadable
                    nxt, _, _, tp = unpack(mm, offset(node, 32))
                    hit = wanted.get(tp)
                    if hit is None:
                        hit = wanted[tp] = (reader.kind(node + 16) or "").endswith("-task")
                    if hit:
                        found.append(node + 16)
                    node = nxt & ~7
            except Unreadable:
                notes.append(
                    f"interpreter {interp.id}: a garbage collector list leaves the core "
                    "(a capped core, or damaged): tasks on it are missing"
                )
    return found


def _llist(model: PyModel, head: int, node_offset: int, limit: int) -> Iterator[int]:
    """The tasks on one of 3.14's intrusive lists (``struct llist_node``: next, prev)."""
    node, n = model.u64(head), 0
    while node and node != head and n < limit:
        n += 1
        yield node - node_offset
        node = model.u64(node)


def _list_tasks(model: PyModel, notes: list[str]) -> list[int]:
    """3.14+: the tasks on every thread state's and every interpreter's task list."""
    L = model.L
    found: list[int] = []
    limit = 1 << 24
    for interp in model.interpreters():
        heads = [interp.address + L["interp.asyncio_tasks_head"]]
        try:
            heads += [
                ts.address + L["tstate.asyncio_tasks_head"] for ts in model.thread_states(interp)
            ]
        except Unreadable:
            notes.append(f"interpreter {interp.id}: its thread list leaves the core")
        for head in heads:
            try:
                found.extend(_llist(model, head, L["task.node"], limit))
            except Unreadable:
                notes.append("a task list leaves the core: tasks on it are missing")
    return found


@dataclass
class _Raw:
    """What one task's object says, before the relations are worked out."""

    kind: str
    waiter: int
    callbacks: list[int]
    frames: list[Any]
    """(FrameInfo, frame address) of the coroutine stack, outermost first."""
    awaited: int
    """What the innermost coroutine awaits (a future, its iterator, or 0)."""


def _coroutine(model: PyModel, coro: int) -> tuple[list[Any], int, bool]:
    """A task's coroutine stack: (FrameInfo, frame address) outermost first, what the
    innermost one awaits, and whether it is executing now."""
    frames: list[Any] = []
    obj, seen = coro, set[int]()
    while obj and obj not in seen and len(seen) < MAX_CORO_DEPTH:
        seen.add(obj)
        if model.type_name(obj) not in ("coroutine", "generator", "async_generator"):
            return frames, obj, False
        address, running, awaited = model.gen_info(obj)
        if not address:
            return frames, 0, False
        frame = next(model.frames(address, 1), None)
        if frame is None or frame.code is None:
            return frames, 0, False
        code = frame.code
        qualname = code.qualname
        if model.v < (3, 11):  # code objects have no qualified name yet: the coroutine has
            qualname = model.str_value(model.u64(obj + model.L["gen.qualname"]), 256) or qualname
        frames.append((FrameInfo(code.name, qualname, code.filename, frame.line), frame))
        if running:
            return frames, 0, True
        obj = awaited
    return frames, 0, False


def _read_task(reader: _Reader, addr: int, kind: str) -> tuple[TaskInfo, _Raw]:
    m = reader.m
    reader.load(addr, kind)
    coro = reader.get(addr, kind, "coro")
    frames, awaited, running = _coroutine(m, coro) if coro else ([], 0, False)
    state = reader.state(addr, kind)
    info = TaskInfo(
        addr,
        reader.name(addr, kind),
        state,
        [f for f, _ in frames],
        loop=reader.get(addr, kind, "loop"),
        running=running,
        python=kind == "py-task",
        coro_address=coro,
    )
    if state == "done":
        exc = reader.get(addr, kind, "exception")
        info.result = (
            f"raised {m.type_name(exc)}" if exc else m.short_repr(reader.get(addr, kind, "result"))
        )
    raw = _Raw(
        kind,
        reader.get(addr, kind, "fut_waiter") if state == "pending" else 0,
        reader.callbacks(addr, kind),
        frames,
        awaited,
    )
    return info, raw


def _callback_targets(reader: _Reader, cb: int) -> Iterator[tuple[str, int]]:
    """What a done-callback leads to: ``("taskgroup", tg)`` for a TaskGroup's bound method,
    ``("future", f)`` for futures it holds (a closure's cells, a partial's arguments)."""
    m, L = reader.m, reader.L
    name = m.type_name(cb)
    if name == "method":
        owner = m.u64(cb + L["method.self"])
        if m.is_instance(owner, ("asyncio.taskgroups.TaskGroup",)):
            yield "taskgroup", owner
        return
    held: list[int] = []
    if name == "functools.partial":
        args = m.u64(cb + 24)
        held = m.tuple_items(args, 64) if args else []
    elif name == "function":
        closure = m.u64(cb + L["func.closure"])
        cells = m.tuple_items(closure, 64) if closure else []
        held = [m.u64(c + L["cell.ref"]) for c in cells if m.type_name(c) == "cell"]
    for obj in held:
        if obj and reader.kind(obj):
            yield "future", obj


def _relate(reader: _Reader, infos: dict[int, TaskInfo], raws: dict[int, _Raw]) -> None:
    """Who awaits whom, as 3.14's ``awaited_by`` records it (see the module's doc)."""
    m = reader.m
    edges: set[tuple[int, int]] = set()  # (awaiter, awaited)
    waiting_on: dict[int, list[int]] = {}
    for tid, raw in raws.items():
        if not raw.waiter:
            continue
        waiting_on.setdefault(raw.waiter, []).append(tid)
        if raw.waiter in infos:
            edges.add((tid, raw.waiter))
        elif m.is_instance(raw.waiter, ("asyncio.tasks._GatheringFuture",)):
            children = m.attr(raw.waiter, "_children")
            for child in m.list_items(children, 1 << 16) if children else []:
                if child in infos:
                    edges.add((tid, child))
    for tid, raw in raws.items():
        for cb in raw.callbacks:
            try:
                for what, obj in _callback_targets(reader, cb):
                    if what == "taskgroup":
                        parent = m.attr(obj, "_parent_task")
                        if parent in infos:
                            edges.add((parent, tid))
                    elif obj != tid:
                        edges.update((waiter, tid) for waiter in waiting_on.get(obj, ()))
            except _BAD:
                continue
    _apply(infos, edges)


def _apply(infos: dict[int, TaskInfo], edges: set[tuple[int, int]]) -> None:
    for awaiter, awaited in sorted(edges):
        if awaiter in infos and awaited in infos:
            infos[awaiter].awaiting.append(awaited)
            infos[awaited].awaited_by.append(awaiter)


def _awaited_by_314(reader: _Reader, infos: dict[int, TaskInfo]) -> None:
    """3.14+: each task's own ``awaited_by`` (one waiter, or a set of them)."""
    m, L = reader.m, reader.L
    edges: set[tuple[int, int]] = set()
    for tid in infos:
        try:
            holder = m.u64(tid + L["task.awaited_by"]) & TAG_MASK
            if not holder:
                continue
            is_set = m.u8(tid + L["task.awaited_by_is_set"])
            waiters = m.set_items(holder, 1 << 16) if is_set else [holder]
            edges.update((w, tid) for w in waiters if w in infos)
        except _BAD:
            continue
    _apply(infos, edges)


# the frame awaiting a future -> what it means: (kind, attribute holding its waiters)
_PRIMITIVES = {
    "Lock.acquire": ("lock", "_waiters"),
    "Event.wait": ("event", "_waiters"),
    "Condition.wait": ("condition", "_waiters"),
    "Semaphore.acquire": ("semaphore", "_waiters"),
    "BoundedSemaphore.acquire": ("semaphore", "_waiters"),
    "Queue.get": ("queue.get", "_getters"),
    "Queue.put": ("queue.put", "_putters"),
    "Barrier._block": ("barrier", ""),
    "Barrier._wait": ("barrier", ""),
}


def _count(m: PyModel, obj: int) -> Optional[int]:
    """How many items a waiter list (a deque, set or list) holds; 0 for None."""
    if not obj or m.type_name(obj) == "NoneType":
        return 0
    return m.length(obj)


class _Blockers:
    """Says what each pending task is blocked on."""

    def __init__(self, reader: _Reader, infos: dict[int, TaskInfo], now: Optional[float]) -> None:
        self.r, self.m, self.infos, self.now = reader, reader.m, infos, now

    def of(self, info: TaskInfo, raw: _Raw) -> Optional[Blocker]:
        if info.state != "pending":
            return None
        if info.running:
            return Blocker("running", "running now on its loop's thread")
        waiter = raw.waiter
        if not waiter:
            return Blocker("scheduled", "ready to run: waits for its turn on the loop")
        if waiter in self.infos:
            return Blocker("task", f"task {self.infos[waiter].name}", waiter)
        m = self.m
        if m.is_instance(waiter, ("asyncio.tasks._GatheringFuture",)):
            children = m.attr(waiter, "_children")
            n = m.length(children) if children else None
            return Blocker("gather", f"gather of {n if n is not None else '?'} awaitables", waiter)
        if raw.frames:
            found = self._by_frame(raw.frames[-1][1], raw.frames[-1][0].qualname, waiter)
            if found is not None:
                return found
        return self._by_callbacks(waiter)

    def _by_frame(self, frame: Any, qual: str, waiter: int) -> Optional[Blocker]:
        m = self.m
        code = frame.code
        local = {name: value for name, value, _ in m.locals(frame)}
        if qual in _PRIMITIVES:
            kind, attr = _PRIMITIVES[qual]
            owner = local.get("self", 0)
            if not owner:
                return None
            waiting = _count(m, m.attr(owner, attr) or 0) if attr else None
            what = m.type_of(owner)
            text = f"{what.name if what else kind} at {owner:#x}"
            if waiting is not None:
                text += f" ({waiting} waiting)"
            return Blocker(kind, text, owner, waiting)
        if qual == "sleep" and code.filename.endswith(("asyncio/tasks.py",)):
            return self._sleep(local)
        if qual in ("TaskGroup._aexit", "TaskGroup.__aexit__"):
            owner = local.get("self", 0)
            left = _count(m, m.attr(owner, "_tasks") or 0) if owner else None
            return Blocker("taskgroup", f"TaskGroup with {left} tasks left", owner)
        if qual == "_wait":
            fs = local.get("fs", 0)
            return Blocker(
                "wait", f"asyncio.wait on {m.length(fs) if fs else '?'} awaitables", waiter
            )
        if qual == "wait_for":
            timeout = local.get("timeout", 0)
            text = m.short_repr(timeout) if timeout else "?"
            return Blocker("wait_for", f"wait_for with timeout {text}", waiter)
        return None

    def _sleep(self, local: dict[str, int]) -> Blocker:
        m = self.m
        delay = local.get("delay", 0)
        handle = local.get("h", 0)
        text = f"sleep({m.short_repr(delay) if delay else '?'})"
        remaining = None
        when_obj = m.attr(handle, "_when") if handle else None
        if when_obj and m.type_name(when_obj) == "float":
            when = m.float_value(when_obj)
            if self.now is not None:
                remaining = max(when - self.now, 0.0)
                text += f", {remaining:.3f} s left"
            else:
                text += f", until loop time {when:.3f} (the core's time is unknown)"
        return Blocker("sleep", text, handle, remaining=remaining)

    def _by_callbacks(self, waiter: int) -> Blocker:
        m, r = self.m, self.r
        kind = r.kind(waiter) or "unknown"
        for cb in r.callbacks(waiter, kind) if kind != "unknown" else []:
            if m.type_name(cb) != "function":
                continue
            qual = m.str_value(m.u64(cb + r.L["func.qualname"]), 256) or ""
            if qual.startswith("shield."):
                return Blocker("shield", f"shield of a future at {waiter:#x}", waiter)
        return Blocker("future", f"{m.type_name(waiter)} at {waiter:#x}", waiter)


def _clock(core: ElfCore) -> Optional[float]:
    """The monotonic clock (asyncio's loop time) when the core was taken, from the note."""
    clock, stamp = core.metadata.get("clock"), core.metadata.get("time")
    if not isinstance(clock, dict) or not isinstance(stamp, (int, float)):
        return None
    try:
        return float(clock["monotonic"]) + float(stamp) - float(clock["time"])
    except (KeyError, TypeError, ValueError):
        return None


def _loops(model: PyModel, infos: list[TaskInfo], notes: list[str]) -> list[LoopInfo]:
    running: dict[int, tuple[int, int]] = {}
    try:
        for interp in model.interpreters():
            for ts in model.thread_states(interp):
                if ts.asyncio_running_loop:
                    running[ts.asyncio_running_loop] = (ts.native_id or 0, interp.id)
    except Unreadable:
        notes.append("the thread states leave the core: loops' threads may be missing")
    by_loop: dict[int, list[TaskInfo]] = {}
    for t in infos:
        by_loop.setdefault(t.loop, []).append(t)
        t.thread, t.interpreter = running.get(t.loop, (None, t.interpreter))
    return [
        LoopInfo(
            loop,
            model.type_name(loop) if loop else "?",
            running.get(loop, (None, 0))[0],
            len(ts),
            sum(t.state == "pending" for t in ts),
        )
        for loop, ts in by_loop.items()
    ]


def _uses_asyncio(model: PyModel) -> bool:
    """Whether any interpreter imported asyncio (else there is nothing to look for)."""
    try:
        for interp in model.interpreters():
            modules = model.u64(interp.address + model.L["interp.modules"])
            if not modules or model.dict_get(modules, "asyncio"):
                return True
        return False
    except _BAD:
        return True


def find_tasks(core: ElfCore, model: PyModel, include_done: bool = False) -> TaskReport:
    """Every asyncio task in the core's memory (pending ones, or all with
    ``include_done``), with their coroutine stacks and relations.

    Raises:
        PythonUnavailableError: the interpreter cannot be read (from ``core.python()``).
    """
    notes: list[str] = []
    reader = _Reader(model)
    if not _uses_asyncio(model):
        return TaskReport([], [], "no interpreter imported asyncio", notes)
    if model.layout.version >= (3, 14):
        where = asyncio_layout(core, model.mem, model.layout)
        source = f"the interpreter's task lists ({where})"
        addresses = _list_tasks(model, notes)
    else:
        source = "the garbage collector's lists"
        addresses = _gc_tasks(core, model, reader, notes)
    infos: dict[int, TaskInfo] = {}
    raws: dict[int, _Raw] = {}
    unreadable = 0
    for addr in dict.fromkeys(addresses):
        kind = reader.kind(addr)
        if kind is None or not kind.endswith("-task"):
            unreadable += 1
            continue
        try:
            infos[addr], raws[addr] = _read_task(reader, addr, kind)
        except _BAD:
            unreadable += 1
    if unreadable:
        notes.append(f"{unreadable} task objects could not be read")
    if model.layout.version >= (3, 14):
        _awaited_by_314(reader, infos)
    else:
        _relate(reader, infos, raws)
    blockers = _Blockers(reader, infos, _clock(core))
    for addr, info in infos.items():
        try:
            info.blocked_on = blockers.of(info, raws[addr])
        except _BAD:
            info.blocked_on = Blocker("unknown", "the future it waits on is not readable")
    tasks = [t for t in infos.values() if include_done or t.state == "pending"]
    return TaskReport(tasks, _loops(model, tasks, notes), source, notes)


@dataclass
class TreeNode:
    """A node of the await tree: a task, or a coroutine frame of the task above it."""

    label: str
    task: Optional[int] = None
    children: list[TreeNode] = field(default_factory=list)
    cycle: bool = False
    """This task was already drawn above it: an await cycle, not followed again."""


def _frame_label(f: FrameInfo) -> str:
    return f"{f.qualname} {f.file}:{f.line}"


def await_tree(report: TaskReport) -> list[TreeNode]:
    """The await tree ``python -m asyncio pstree`` draws: each task, under it the coroutine
    frames of its stack (outermost first) down to the tasks it awaits there; a task that
    awaits nothing ends with its own stack. Roots are the tasks nobody awaits; tasks in an
    await cycle with no other root are drawn from the cycle's first task, and a task met
    again on its own path is marked as a cycle."""
    by_id = report.by_id()
    order = list(by_id)
    roots = [t for t in order if not by_id[t].awaited_by]
    placed: set[int] = set()

    def build(tid: int, path: tuple[int, ...]) -> TreeNode:
        task = by_id[tid]
        node = TreeNode(f"(T) {task.name}", tid)
        placed.add(tid)
        if tid in path:
            node.cycle = True
            return node
        frames = task.coroutine
        head = node
        for f in frames:  # outermost first: the awaiter's stack, then the awaited tasks
            kid = TreeNode(_frame_label(f))
            head.children.append(kid)
            head = kid
        for child in task.awaiting:
            if child in by_id:
                head.children.append(build(child, (*path, tid)))
        return node

    out = [build(t, ()) for t in roots]
    for tid in order:  # what only cycles reach
        if tid not in placed:
            out.append(build(tid, ()))
    return out
