"""A program with a heap to census: python heapy.py MODE DIR [ARGS_JSON].

It holds 123,457 instances of its own class Order (each with a float and a str attribute),
5,000 Quote instances whose float sits in __slots__,
300,000 floats in a list and 400 bytes objects of 100 KiB, then dumps itself. The truth it
prints is counted in-process right before each core: gc.get_objects() per type, and the
distinct float and bytes objects it holds.

create   two cores with create_core, 1,000 more orders (each with a new float) between them
trigger  one core from the signal trigger (install, then SIGUSR2 to itself)
bundle   one bundle from collect_core
"""

import gc
import json
import os
import signal
import sys
import threading

import gencore

mode, directory = sys.argv[1], sys.argv[2]  # ARGS_JSON: orders, floats, blobs (counts)
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}


class Order:
    def __init__(self, i):
        self.number = i
        self.price = i * 0.5 + 0.25
        self.customer = f"customer-{i % 977}"


class Quote:  # attributes in __slots__, not in a dict
    __slots__ = ("order", "amount")

    def __init__(self, order):
        self.order, self.amount = order, order.price * 1.2


orders = [Order(i) for i in range(args.get("orders", 123_457))]
quotes = [Quote(o) for o in orders[:5000]]
floats = [float(i) + 0.1 for i in range(args.get("floats", 300_000))]
blobs = [bytes([i % 256]) * (100 * 1024) for i in range(args.get("blobs", 400))]


def truth() -> dict:
    # garbage of earlier calls (cycles left by the first use of gencore's modules) is not
    # counted: the collector may free it before the core, which then rightly lacks it
    gc.collect()
    by_type: dict = {}
    for o in gc.get_objects():
        t = type(o)
        name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        by_type[name] = by_type.get(name, 0) + 1
    held_floats = (
        {id(x) for x in floats} | {id(o.price) for o in orders} | {id(q.amount) for q in quotes}
    )
    return {
        "gc_types": by_type,
        "orders": len(orders),
        "floats": len(held_floats),
        "blobs": len(blobs),
        "blob_bytes": sum(sys.getsizeof(b) for b in blobs),
    }


out: dict = {"pid": os.getpid(), "cores": [], "truth": []}
if mode == "create":
    out["truth"].append(truth())
    out["cores"].append(str(gencore.create_core(directory)))
    orders.extend(Order(10_000_000 + i) for i in range(1000))
    out["truth"].append(truth())
    out["cores"].append(str(gencore.create_core(directory)))
elif mode == "trigger":
    done = threading.Event()
    gencore.install(directory=directory, on_core=lambda path: done.set())
    out["truth"].append(truth())
    os.kill(os.getpid(), signal.SIGUSR2)
    done.wait(120)
    out["cores"] = [
        os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".core")
    ]
elif mode == "bundle":
    out["truth"].append(truth())
    out["cores"].append(str(gencore.collect_core(directory)))
print(json.dumps(out), flush=True)
