"""A two-worker multiprocessing.Pool whose workers wait in worker_function: argv[1] is the
start method (fork, spawn, forkserver or default), argv[2] a file for the workers' pids."""

import json
import multiprocessing
import os
import sys
import time


def worker_function(path: str) -> int:
    with open(path, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}) + "\n")
    time.sleep(60)
    return os.getpid()


def main() -> None:
    method, path = sys.argv[1], sys.argv[2]
    ctx = multiprocessing.get_context(None if method == "default" else method)
    print("start method", ctx.get_start_method(), flush=True)
    with ctx.Pool(2) as pool:
        pool.map_async(worker_function, [path, path], chunksize=1)
        time.sleep(60)
        pool.terminate()


if __name__ == "__main__":
    main()
