"""Programs for why memory is kept: python heapwhy.py MODE DIR.

Each mode builds a heap, writes what the process itself knows of it right before its core
(the truth), dumps itself with create_core, and prints {"core", "truth", ...} as JSON.

zoo      objects of more than 150 types, 800 parked generators, 300 coroutines and 200 async
         generators; truth: sys.getsizeof of every one and of every object gc.get_objects()
         returns, and whether the census can know it (heapzoo.sizeof_known)
roots    five roots (a cache dict of lists sharing one 50 MB bytes object, a class-level
         registry, a closure cell, a thread-local, a frame local); truth: guppy3's domisize
         of each (where guppy3 builds) and the bytes each one alone keeps, found in-process
paths    objects held in nested containers, a closure, a frame; after its core the program
         asks gencore heap --path about them and checks every edge with gc.get_referents
dups     10,000 copies of one 1 KiB str and 3,000 of one 2 KiB bytes
leak     a module-level cache of 40,000 sessions that retains most of the heap, and 5,000
         self-referencing lists the collector (off) has not collected
subinterp  a subinterpreter with 5,000 objects of its own class; truth: its id
capped   a 16 MiB core (max_size) of a process with about 100 MB of objects
"""

import gc
import json
import subprocess
import sys
import threading

import heapzoo

import gencore

mode, directory = sys.argv[1], sys.argv[2]


def tname(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def warm_up() -> None:
    """One throwaway core first: what create_core imports and caches exists before the
    truth is taken, so the objects measured do not change under it."""
    import os

    os.unlink(gencore.create_core(directory))
    gc.collect()


# -- zoo ------------------------------------------------------------------------------------


def parked():
    def g(i):
        a, b = [i], str(i)
        yield a
        yield b

    async def c(i):
        x = [i]
        await __import__("asyncio").sleep(0)
        return x

    async def ag(i):
        y = i * 2
        yield y

    gens = [g(i) for i in range(800)]
    for x in gens[:400]:
        next(x)
    coros = [c(i) for i in range(300)]
    agens = [ag(i) for i in range(200)]
    return gens, coros, agens


def zoo() -> dict:
    warm_up()
    objs = heapzoo.make()
    gens, coros, agens = parked()
    records: list = []
    seen: set = set()
    mine = {id(records), id(seen)}
    for o in [*objs, *gens, *coros, *agens, *gc.get_objects()]:
        if id(o) in seen or id(o) in mine:
            continue
        seen.add(id(o))
        t = type(o)
        records.append([id(o), tname(t), sys.getsizeof(o), heapzoo.sizeof_known(t)])
    truth = {
        "records": records,
        "zoo": [id(o) for o in objs],
        "zoo_types": len({type(o) for o in objs}),
        "generator_bytes": sum(map(sys.getsizeof, gens)),
        "coroutine_bytes": sum(map(sys.getsizeof, coros)),
        "async_generator_bytes": sum(map(sys.getsizeof, agens)),
    }
    core = str(gencore.create_core(directory))
    for c in coros:
        c.close()
    return {"core": core, "truth": truth}


# -- retained bytes --------------------------------------------------------------------------


def referents(o: object) -> list:
    refs = gc.get_referents(o)
    if isinstance(o, dict):
        refs += list(o)
    return refs


def immortal(o: object) -> bool:
    return sys.version_info >= (3, 12) and sys.getrefcount(o) > 1 << 30


def reach(x: object) -> dict:
    """Every object x reaches, by address (type objects and modules left out: they are
    roots of their own)."""
    S = {id(x): x}
    stack = [x]
    while stack and len(S) < 500_000:
        for r in referents(stack.pop()):
            if id(r) not in S and not immortal(r) and not isinstance(r, (type, type(sys))):
                S[id(r)] = r
                stack.append(r)
    return S


def inside_counts(S: dict) -> dict:
    """How many references each object gets from the objects in S."""
    inside: dict = {}
    for o in S.values():
        for r in referents(o):
            inside[id(r)] = inside.get(id(r), 0) + 1
    return inside


def held_elsewhere(S: dict, i: int, inside: dict) -> bool:
    # the references sys.getrefcount sees beyond those inside S: the dict S, the argument
    return sys.getrefcount(S[i]) - 2 - inside.get(i, 0) > 0


def alone(x: object) -> int:
    """The bytes only x keeps: the objects x reaches that nothing outside them refers to (by
    their reference counts), to a fixed point."""
    S = reach(x)
    changed = True
    while changed:
        inside = inside_counts(S)
        drop = [i for i in S if i != id(x) and held_elsewhere(S, i, inside)]
        for i in drop:
            del S[i]
        changed = bool(drop)
    return sum(map(sys.getsizeof, S.values()))


def domisizes(found: dict) -> dict:
    """guppy3's domisize of each object (nothing where guppy3 does not build), its state
    released before the core."""
    try:
        from guppy import hpy
    except ImportError:
        return {}
    h = hpy()
    return {k: h.iso(o).domisize for k, o in found.items()}


def roots() -> dict:
    warm_up()
    ns: dict = {}
    code = """
big = b"x" * (50 << 20)
CACHE = {f"k{i}": [big, i, str(i) * 5] for i in range(500)}
del big
class Registry:
    items = [object() for _ in range(2000)]
def make():
    data = [str(i) * 3 for i in range(3000)]
    def reader():
        return data
    return reader
reader = make()
cell = reader.__closure__[0]
import threading
tl = threading.local()
"""
    exec(code, ns)
    ready, stop = threading.Event(), threading.Event()
    box: dict = {}

    def worker() -> None:
        ns["tl"].payload = [i * 1.5 for i in range(5000)]
        pending = [bytearray(100) for _ in range(1000)]
        box["pending"] = id(pending)
        ready.set()
        stop.wait()

    t = threading.Thread(target=worker, name="holder", daemon=True)
    t.start()
    ready.wait()
    found = {
        "cache": ns["CACHE"],
        "registry": ns["Registry"].items,
        "cell": ns["cell"],
        "local": ns["tl"],
        "frame": next(o for o in gc.get_objects() if id(o) == box["pending"]),
    }
    truth = {k: {"id": id(o), "alone": alone(o)} for k, o in found.items()}
    guppy = domisizes(found)
    for k, n in guppy.items():
        truth[k]["guppy"] = n
    del found
    gc.collect()
    sys.modules.pop("guppy.heapy.Use", None)
    core = str(gencore.create_core(directory))
    stop.set()
    t.join()
    return {"core": core, "truth": truth, "guppy": bool(guppy)}


# -- paths -----------------------------------------------------------------------------------


class Session:
    def __init__(self, i):
        self.user = f"user-{i}"
        self.items = [i] * 3


def all_frames():
    for f in sys._current_frames().values():
        while f is not None:
            yield f
            f = f.f_back


def check_path(path: dict) -> dict:
    """Each edge of a path as the live process sees it (objects by address: the process has
    not changed since its core), and whether its root is one."""
    import ctypes

    steps = path["steps"]
    objs = [ctypes.cast(s["address"], ctypes.py_object).value for s in steps]
    edges = []
    for a, b in zip(objs, objs[1:]):
        refs = gc.get_referents(a) + (list(a) if isinstance(a, dict) else [])
        edges.append(any(r is b for r in refs))
    root = path["root"]
    if root.startswith("module "):
        parts = root.split()
        mod = sys.modules[parts[1]]
        ok = getattr(mod, parts[3]) is objs[0] if len(parts) == 4 else mod is objs[0]
    elif root.startswith("thread "):
        name = root.split("local ")[1].strip("'")
        ok = any(f.f_locals.get(name) is objs[0] for f in all_frames())
    else:
        ok = False
    return {"edges": edges, "root_ok": ok}


def make_handler():
    secret = [Session(1000)]

    def handle():
        return secret

    return handle


def hold_pending(ready, stop, box) -> None:
    pending = {"batch": [Session(2000 + i) for i in range(3)]}
    box["pending"] = hex(id(pending["batch"][1]))
    ready.set()
    stop.wait()


def paths() -> dict:
    global CACHE, handler
    warm_up()
    CACHE = {"users": [Session(i) for i in range(20)], "other": {"x": [Session(99)]}}
    handler = make_handler()
    ready, stop, box = threading.Event(), threading.Event(), {}
    t = threading.Thread(target=hold_pending, args=(ready, stop, box), name="worker", daemon=True)
    t.start()
    ready.wait()
    targets = {
        "cache": hex(id(CACHE["users"][7])),
        "closure": hex(id(handler.__closure__[0].cell_contents[0])),
        "frame": box.pop("pending"),
    }
    core = str(gencore.create_core(directory))
    results = {}
    for k, addr in targets.items():
        p = subprocess.run(
            [sys.executable, "-m", "gencore", "heap", core, "--path", addr, "--json"],
            capture_output=True,
            text=True,
        )
        doc = json.loads(p.stdout) if p.returncode == 0 else {"path": None, "err": p.stderr}
        path = doc.get("path")
        results[k] = {"path": path, "err": doc.get("err")}
        if path:
            results[k]["check"] = check_path(path)
    stop.set()
    t.join()
    return {"core": core, "truth": {"targets": targets}, "results": results}


# -- duplicates, a leak, a subinterpreter ----------------------------------------------------


def dups() -> dict:
    global TEXTS, BLOBS
    warm_up()
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1024  # not a constant of the code object
    base = "d" * (n - 1) + "!"
    blob = b"b" * (2 * n - 1) + b"!"
    TEXTS = ["".join(base) for _ in range(10_000)]
    BLOBS = [bytes(bytearray(blob)) for _ in range(3_000)]
    assert len({id(s) for s in TEXTS}) == 10_000
    truth = {"str_size": sys.getsizeof(TEXTS[0]), "bytes_size": sys.getsizeof(BLOBS[0])}
    del base, blob  # only the copies hold the values
    return {"core": str(gencore.create_core(directory)), "truth": truth}


def cycles(n: int) -> int:
    """n lists that hold themselves and nothing else does: garbage the collector has not
    collected yet (it is off); their bytes."""
    total = 0
    for _ in range(n):
        a: list = []
        a.append(a)
        total += sys.getsizeof(a)
    return total


def leak() -> dict:
    global SESSIONS
    warm_up()
    gc.disable()
    SESSIONS = {f"s{i}": Session(i) for i in range(40_000)}
    garbage = cycles(5000)
    truth = {"sessions": len(SESSIONS), "cache": id(SESSIONS), "garbage_bytes": garbage}
    return {"core": str(gencore.create_core(directory)), "truth": truth}


def subinterp() -> dict:
    try:
        import _interpreters as interpreters  # 3.13+
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.9-3.12
    sid = interpreters.create()
    code = "class SubThing:\n    pass\nthings = [SubThing() for _ in range(5000)]\n"
    run = getattr(interpreters, "run_string", None) or interpreters.exec
    run(sid, code)
    warm_up()
    core = str(gencore.create_core(directory))
    return {"core": core, "truth": {"id": int(sid), "things": 5000}}


def capped() -> dict:
    global BALLAST
    warm_up()
    BALLAST = [[i, str(i) * 4, float(i)] for i in range(400_000)]
    core = str(gencore.create_core(directory, max_size=16 << 20))
    return {"core": core, "truth": {"lists": len(BALLAST)}}


MODES = {
    "capped": capped,
    "zoo": zoo,
    "roots": roots,
    "paths": paths,
    "dups": dups,
    "leak": leak,
    "subinterp": subinterp,
}
print(json.dumps(MODES[mode]()), flush=True)
