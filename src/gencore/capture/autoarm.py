"""The process-start hook: ``gencore run`` arms every Python process it starts.

A forked child re-installs the triggers by itself (``os.register_at_fork``). A fresh
interpreter (multiprocessing's spawn and forkserver, and with ``--children`` any Python
started with ``subprocess``) runs the ``gencore-autoarm.pth`` file that the package puts
next to itself in site-packages, as coverage.py's process-start hook does: with
``$GENCORE_RUN`` set (by ``gencore run``, a JSON document of the ``install`` arguments) it
calls :func:`startup`, which installs the same triggers. Without the variable the ``.pth``
line costs one dictionary lookup.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .. import _procfs

ENV = "GENCORE_RUN"
"""The environment variable ``gencore run`` sets for the processes it starts."""

_OWN = (b"gencore.ship.helper", b"gencore.capture.zpipe")
log = logging.getLogger("gencore")


def environment(install_args: dict[str, Any], children: bool) -> str:
    """The value of ``$GENCORE_RUN`` for these :func:`~gencore.install` arguments."""
    return json.dumps({"install": install_args, "children": children}, separators=(",", ":"))


def multiprocessing_child(argv: list[bytes]) -> bool:
    """Whether this command line is one multiprocessing starts: a spawn child
    (``--multiprocessing-fork``), the forkserver, the resource tracker."""
    if b"--multiprocessing-fork" in argv:
        return True
    # python -c "...from multiprocessing.forkserver import main; main(...)" (3.14 puts
    # "import sys; " first)
    program = argv[argv.index(b"-c") + 1] if b"-c" in argv[:-1] else b""
    return b"from multiprocessing." in program


def gencore_own(argv: list[bytes]) -> bool:
    """gencore's helpers and its own command: never armed."""
    if any(any(o in a for o in _OWN) for a in argv):
        return True
    return len(argv) > 1 and (
        os.path.basename(argv[1]) == b"gencore" or argv[1:3] == [b"-m", b"gencore"]
    )


def wanted(doc: dict[str, Any], argv: list[bytes]) -> bool:
    """Whether a process with this command line is armed under this ``$GENCORE_RUN``."""
    if gencore_own(argv):
        return False
    return bool(doc.get("children")) or multiprocessing_child(argv)


def startup() -> None:
    """Called at interpreter start by the ``.pth`` line: install the triggers ``gencore run``
    asked for, in the processes it arms. Never raises: a program starts in any case."""
    try:
        doc = json.loads(os.environ.get(ENV) or "{}")
        if not isinstance(doc, dict) or not wanted(doc, _procfs.cmdline("self")):
            return
        from .triggers import install, installed

        if installed() is None:
            install(**doc.get("install", {}))
    except Exception as e:  # the program runs on without triggers
        log.warning("gencore: could not arm this process from $%s: %s", ENV, e)
