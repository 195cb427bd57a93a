"""A WSGI app for the gunicorn tests: /block holds the GIL in C inside blocking_view (after
writing the worker's pid and thread id to $APP_OUT/block.json); anything else answers ok."""

import json
import os
import threading

from gil import hold_gil_in_c


def blocking_view() -> None:
    with open(os.path.join(os.environ["APP_OUT"], "block.json"), "w") as f:
        json.dump({"pid": os.getpid(), "tid": threading.get_native_id()}, f)
    hold_gil_in_c(60)


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/block":
        blocking_view()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"ok {os.getpid()}\n".encode()]
