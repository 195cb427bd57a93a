"""A celery app on a filesystem broker (no server) for tests/integration/test_celery.py:
stuck_task holds the GIL in C past its 3 s hard time limit. $APP_OUT holds the broker's
folders and what the task writes."""

import json
import os
import threading

from celery import Celery
from gil import hold_gil_in_c

import gencore.integrations.celery  # noqa: F401  (arms the pool children)

OUT = os.environ["APP_OUT"]
BROKER = os.path.join(OUT, "broker")
os.makedirs(BROKER, exist_ok=True)

app = Celery("celery_app", broker="filesystem://")
app.conf.broker_transport_options = {"data_folder_in": BROKER, "data_folder_out": BROKER}
app.conf.worker_hijack_root_logger = False


@app.task(time_limit=3)
def stuck_task() -> None:
    with open(os.path.join(OUT, "task.json"), "w") as f:
        json.dump({"pid": os.getpid(), "tid": threading.get_native_id()}, f)
    hold_gil_in_c(30)
