"""gunicorn server hooks: a core of every worker gunicorn times out, and of any process of the
server on demand.

In a gunicorn config file (``gunicorn -c gunicorn.conf.py app:app``)::

    from gencore.integrations.gunicorn import *   # cores go to $GENCORE_DIR (else the cwd)

- ``on_starting`` (the arbiter) installs gencore's triggers: the dump signal
  :data:`SIGNAL` (a real-time signal: gunicorn's arbiter uses SIGUSR2 to upgrade itself),
  crash cores, and SIGABRT as a *chained* signal. Forked workers install their own
  (``post_fork``). ``gencore trigger PID`` and ``gencore trigger --tree ARBITER`` work on
  every process of the server.
- When a worker passes ``--timeout``, the arbiter sends it SIGABRT and SIGKILLs it about a
  second later; gunicorn's own handler (``worker_abort``) cannot run while the worker is
  stuck in C. gencore's C handler writes the core first, then runs gunicorn's handler. The
  snapshot child and the helper process are not the worker's threads: a core whose worker
  is killed meanwhile is still completed and published.
- ``worker_abort`` logs where the core is, through the worker's logger.

To combine with hooks of your own, call these from yours. :func:`configure` changes what
the triggers are installed with (``gencore.install`` arguments) before the server starts.
gunicorn is not a dependency of gencore; this module does not import it.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from ..capture import triggers

__all__ = ["on_starting", "post_fork", "post_worker_init", "worker_abort"]

SIGNAL = signal.SIGRTMIN + 4
"""The dump signal of gunicorn's processes (``gencore trigger`` finds it by itself)."""

_options: dict[str, Any] = {
    "signals": (SIGNAL,),
    "chain_signals": (signal.SIGABRT,),
    "on_crash": True,
    "min_interval": 0.0,
}
log = logging.getLogger("gencore")


def configure(**install_options: Any) -> None:
    """Change what :func:`gencore.install` is called with in the server's processes (for
    example ``collect=True``, ``hang_timeout=30``, ``directory="/var/cores"``); call it in
    the config file, after the import."""
    _options.update(install_options)


def _arm() -> None:
    """Install the triggers in this process unless they are in force (a forked worker has
    them from the arbiter's fork hook)."""
    if triggers.installed() is None:
        triggers.install(**_options)


def on_starting(server: Any) -> None:
    """gunicorn hook, in the arbiter before it forks: install the triggers."""
    _arm()


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook, in a new worker: its own triggers (installed by the fork hook when the
    arbiter had them)."""
    _arm()


def post_worker_init(worker: Any) -> None:
    """gunicorn hook, once the worker installed its signal handlers: gencore's SIGABRT
    handler goes back on top, with gunicorn's chained after the core."""
    _arm()
    triggers.rechain()


def worker_abort(worker: Any) -> None:
    """gunicorn hook, when a timed-out worker could still run Python: say where its core
    is (it was written by the C handler before this runs)."""
    config = triggers.installed()
    if config is None:
        return
    name = triggers.last_core()
    where = config.directory / name if name else config.directory
    getattr(worker, "log", log).warning("gencore: worker %s timed out: core %s", os.getpid(), where)
