"""Tests run by an inner pytest with the gencore plugin (tests/integration/test_pytest_plugin.py).

Each writes its pid, thread id and start time to $SUITE_OUT/<name>.json before it acts.
"""

import ctypes
import json
import os
import threading
import time

from gil import hold_gil_in_c


def _started(name: str) -> None:
    doc = {"pid": os.getpid(), "tid": threading.get_native_id(), "time": time.time()}
    with open(os.path.join(os.environ["SUITE_OUT"], f"{name}.json"), "w") as f:
        json.dump(doc, f)


def test_quick():
    _started("quick")


def test_stuck_in_c():
    _started("stuck_in_c")
    hold_gil_in_c(float(os.environ.get("SUITE_HOLD", "3")))


def test_stuck_in_c_too():
    _started("stuck_in_c_too")
    hold_gil_in_c(float(os.environ.get("SUITE_HOLD", "3")))


def test_segfault():
    _started("segfault")
    ctypes.string_at(0)
