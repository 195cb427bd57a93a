"""celery (prefork pool): a core of a pool child whose task passes its time limit, before the
pool kills it.

Import it where the app is defined (the worker imports that module)::

    import gencore.integrations.celery   # cores go to $GENCORE_DIR (else the cwd)

- ``worker_process_init``: each pool child installs gencore's triggers (crash cores, the
  dump signal :data:`SIGNAL`: billiard uses SIGUSR1 for soft time limits).
- ``task_prerun`` / ``task_postrun``: a task with a hard time limit (the call's
  ``time_limit``, the task's, or ``task_time_limit``) runs under a :func:`gencore.deadline`
  a margin before it (see :func:`gencore.integrations.deadline_before`), named
  ``task name[task id]``. At the hard limit billiard SIGTERMs and 0.1 s later SIGKILLs the
  child; the deadline is native, so the core is written even while the task holds the GIL
  in C. The core's note names the task.

:func:`configure` changes the ``gencore.install`` arguments. celery is not a dependency of
gencore; this module imports it only to connect its signals.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Optional

from ..capture import triggers, watch
from . import deadline_before

__all__ = ["SIGNAL", "configure", "task_limit"]

SIGNAL = signal.SIGRTMIN + 4
"""The dump signal of the pool children (``gencore trigger`` finds it by itself)."""

_options: dict[str, Any] = {"signals": (SIGNAL,), "on_crash": True, "min_interval": 0.0}
_deadlines: dict[str, watch.Deadline] = {}
log = logging.getLogger("gencore")


def configure(**install_options: Any) -> None:
    """Change what :func:`gencore.install` is called with in the pool children."""
    _options.update(install_options)


def task_limit(task: Any) -> Optional[float]:
    """The hard time limit the pool applies to this task's current run, or None."""
    limits = getattr(task.request, "timelimit", None) or (None, None)
    hard = limits[0] or getattr(task, "time_limit", None)
    if not hard and getattr(task, "app", None) is not None:
        hard = task.app.conf.task_time_limit
    return float(hard) if hard else None


def _arm_child(**_: Any) -> None:
    if triggers.installed() is None:
        triggers.install(**_options)


def _task_started(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None or triggers.installed() is None:
        return
    limit = task_limit(task)
    if limit:
        _deadlines[task_id] = watch.deadline(deadline_before(limit), f"{task.name}[{task_id}]")


def _task_ended(task_id: Optional[str] = None, **_: Any) -> None:
    dl = _deadlines.pop(task_id or "", None)
    if dl is not None and dl.cancel():
        log.warning("gencore: task %s passed its deadline: core %s", task_id, dl.core)


def _connect() -> None:
    from celery import signals

    signals.worker_process_init.connect(_arm_child, weak=False)
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_ended, weak=False)


_connect()
