"""A process holding secrets everywhere values live, taking plain and redacted cores of itself.

``python secretive.py CONFIG_JSON RESULT_JSON``. Every secret is the word SECRET, an
underscore and random hex text, built at run time (no constant, and no text of this file,
holds the prefix: constants are code, code's strings stay in a redacted core, and the
file's text may stay in freed memory). The secrets sit in a str local of a
parked thread's frame, a bytes value in a dict, an object's attribute, ``os.environ``, a
bytearray, a thread's argument, a closure, a 4 MiB bytes object and tuples whose items
look like a code object, type or module pointing to one; buffers full of a
marker (``HIDDEN`` and an underscore, then random text) are given to ``gencore.exclude``.

Config: ``coredir``; ``cores``: a list of ``[name, options]`` taken in order after warming
up (the same call site for each, with the collector off and nothing kept in between, so
that consecutive cores show the same objects). The result: the cores' paths, the secrets
and the threads (name, native id).
"""

from __future__ import annotations

import array
import gc
import json
import mmap
import os
import sys
import threading
import types

import gencore

PREFIX = "TERCES"[::-1] + "_"  # made at run time: not even this file's text holds it


def plant(buf):
    """Fill buf with the marker and random hex, byte by byte: the text is nowhere else."""
    marker = [ord(c) for c in reversed("_NEDDIH")] + list(os.urandom(8).hex().encode())
    for i in range(len(buf) // len(marker) * len(marker)):
        buf[i] = marker[i % len(marker)]
    return buf


def secret() -> str:
    return PREFIX + os.urandom(16).hex()


class Account:
    def __init__(self, token: str) -> None:
        self.token = token


KEPT: list = []
ready = threading.Barrier(3)
release = threading.Event()


def holder_with_local() -> None:
    local_secret = secret()  # a str local in a live frame
    ready.wait()
    release.wait()
    assert local_secret


def holder_with_argument(arg: str) -> None:
    ready.wait()
    release.wait()
    assert arg


def make_closure():
    captured = secret()

    def inner() -> str:
        return captured

    return inner


def take(cfg: dict, name: str, options: dict) -> str:
    # the same keywords for every core: a call's keyword names are a tuple the heap holds
    redact, filter_ = options.get("redact"), options.get("filter", 0xFF)
    return str(gencore.create_core(cfg["coredir"], name=name, redact=redact, filter=filter_))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    secrets = {
        "attribute": secret(),
        "dict_bytes": secret(),
        "environ": secret(),
        "bytearray": secret(),
        "argument": secret(),
    }
    account = Account(secrets["attribute"])
    store = {"key": secrets["dict_bytes"].encode()}
    os.environ["GENCORE_TEST_TOKEN"] = secrets["environ"]
    buffer = bytearray(secrets["bytearray"].encode())
    big = (secret() * (4 << 20 >> 5)).encode()  # one large object (mmapped by malloc)
    KEPT.append(big)  # reachable from the module: the heap census finds it
    closure = make_closure()
    # a type's pointer followed by a secret, as a tuple's items are: memory that looks like
    # a code object, type or module whose fields point to the secret
    lookalikes = tuple((t, secret()) for t in (types.CodeType, type, types.ModuleType))
    hidden_small = plant(bytearray(23))
    hidden_big = plant(mmap.mmap(-1, 3 * mmap.PAGESIZE + 100))
    hidden_arr = plant(array.array("b", bytes(230)))
    for obj in (hidden_small, hidden_big, hidden_arr):
        gencore.exclude(obj)
    threads = [
        threading.Thread(target=holder_with_local, name="holder-local"),
        threading.Thread(
            target=holder_with_argument, args=(secrets["argument"],), name="holder-arg"
        ),
    ]
    for t in threads:
        t.start()
    try:
        ready.wait()
        result = take_all(cfg)
    finally:
        release.set()
    for t in threads:
        t.join()
    result["threads"] = {t.name: t.native_id for t in threads}
    result["threads"]["MainThread"] = threading.main_thread().native_id
    result["secrets"] = list(secrets.values()) + [closure(), big[:40].decode()]
    result["secrets"] += [value for _, value in lookalikes]
    result["hidden"] = hidden_small.decode()
    assert account.token and store and buffer and big and hidden_big and hidden_arr  # alive
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


def take_all(cfg: dict) -> dict:
    warm = [{"redact": True}, {}]
    for i in range(3):  # caches, specialised call sites and imports settle
        for options in warm:
            os.unlink(take(cfg, f"warm{i}{len(options)}", options))
    gc.collect()
    gc.disable()
    for name, options in cfg["cores"]:  # nothing kept between two cores: the same objects
        take(cfg, name, options)
    gc.enable()
    cores = {
        name: {"path": os.path.join(cfg["coredir"], name + ".core")} for name, _ in cfg["cores"]
    }
    return {"cores": cores}


if __name__ == "__main__":
    main()
