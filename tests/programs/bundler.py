"""A multi-threaded program that packs itself into a bundle: python bundler.py ARGS_JSON.

One thread blocks inside a private copy of libstackmark.so (loaded from a temp dir); the
library can be deleted or replaced on disk before the bundle is made. Prints one JSON line.
"""

import asyncio
import ctypes
import json
import os
import shutil
import sys
import threading
import time

import gencore

args = json.loads(sys.argv[1])
lib_path = args["lib_copy"]
shutil.copy(args["stackmark"], lib_path)
lib = ctypes.CDLL(lib_path)
r, w = os.pipe()


def bundled_worker_in_c():
    lib.stackmark_park(b"marker", 6, r, b"xxxxxx")


def bundled_worker_sleeping():
    time.sleep(300)


for target in (bundled_worker_in_c, bundled_worker_sleeping, bundled_worker_sleeping):
    threading.Thread(target=target, name=target.__name__, daemon=True).start()
time.sleep(0.3)

if args.get("lib_state") == "deleted":
    os.unlink(lib_path)
elif args.get("lib_state") == "replaced":
    os.unlink(lib_path)
    with open(lib_path, "wb") as f:
        f.write(b"\x7fELF" + b"\0" * 4000)  # another file at the same path

kw = {"format": args.get("format", "tar.gz")}
if args.get("mode") == "async":
    path = asyncio.run(gencore.collect_core_async(args["dir"], **kw))
elif args.get("mode") == "start":
    path = gencore.start_collect(args["dir"], **kw).result(timeout=300)
else:
    path = gencore.collect_core(args["dir"], **kw)
cpu = os.times()
print(
    json.dumps(
        {
            "bundle": str(path),
            "pid": os.getpid(),
            "manifest_files": len(path.manifest["files"]),
            "threads": [t.name for t in threading.enumerate()],
            "children": open(f"/proc/self/task/{os.getpid()}/children").read().split(),
            "listing": sorted(os.listdir(args["dir"])),
        }
    )
)
os.write(w, b"x")
