"""An ASGI app for the uvicorn test: /block calls a synchronous function that blocks the event
loop (after writing the worker's pid and thread id to $APP_OUT/block.json)."""

import json
import os
import threading
import time


def blocking_handler() -> None:
    with open(os.path.join(os.environ["APP_OUT"], "block.json"), "w") as f:
        json.dump({"pid": os.getpid(), "tid": threading.get_native_id()}, f)
    time.sleep(6)  # a synchronous call in a coroutine: the loop cannot run


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        blocking_handler()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"ok {os.getpid()}".encode()})
