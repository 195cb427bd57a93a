"""The application's side of the helper process: start it, read its JSON lines, wait.

Bundling and uploading run in a helper process (:mod:`gencore.ship.helper`), so the
application's interpreter does no compression, hashing or network I/O: it starts the helper,
reads one JSON document per line from its stdout (progress, then a result) and waits, with a
deadline, blocking or through the event loop. A helper that misses the deadline (or whose
caller is cancelled) is killed.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from ..capture.options import CoreOptions
from ..errors import GencoreError, UploadError, describe_errno
from .helper import finish_argv

__all__ = ["HelperCall", "HelperRun", "run_helper", "run_helper_async", "upload", "upload_async"]

LineHandler = Callable[[dict[str, Any]], None]


class HelperRun:
    """What one helper run said: its JSON documents (in order), exit status and stderr."""

    def __init__(self, on_doc: Optional[LineHandler]) -> None:
        self.on_doc = on_doc
        self.docs: list[dict[str, Any]] = []
        self.returncode = -1
        self.stderr = b""

    def line(self, raw: bytes) -> None:
        """One line of the helper's stdout."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        self.docs.append(doc)
        if self.on_doc is not None:
            self.on_doc(doc)


def _start_error(what: str, e: OSError, error: type[GencoreError]) -> GencoreError:
    return error(
        f"cannot start the {what} helper: {describe_errno(e.errno)}",
        errno=e.errno,
        stage=what,
        advice="check that the interpreter can start processes",
    )


def _deadline_error(what: str, timeout: Optional[float], error: type[GencoreError]) -> GencoreError:
    return error(
        f"the {what} was not finished within {timeout or 0:g} s",
        errno=errno_mod.ETIMEDOUT,
        stage=what,
        advice="pass a larger timeout=",
    )


@dataclass(frozen=True)
class HelperCall:
    """One run of the helper: its command line, what it does (``"bundle"``, ``"upload"``: for
    messages), its deadline, what to do with each JSON document, how to clean up after a
    killed helper, and the error class of a failure to start or finish."""

    argv: list[str]
    what: str
    timeout: Optional[float]
    on_doc: Optional[LineHandler] = None
    on_kill: Optional[Callable[[], None]] = None
    error: type[GencoreError] = GencoreError


def run_helper(call: HelperCall) -> HelperRun:
    """Run the helper to its end, handing each JSON line to ``call.on_doc``.

    Raises:
        GencoreError: (``call.error``) it could not start, or did not finish within
            ``call.timeout`` seconds (it is killed, then ``call.on_kill`` cleans up).
    """
    argv, what, timeout, on_kill, error = (
        call.argv,
        call.what,
        call.timeout,
        call.on_kill,
        call.error,
    )
    run = HelperRun(call.on_doc)
    try:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise _start_error(what, e, error) from None
    assert p.stdout is not None and p.stderr is not None
    err_buf: list[bytes] = []
    stderr = p.stderr
    t = threading.Thread(target=lambda: err_buf.append(stderr.read()), daemon=True)
    t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for raw in p.stdout:
            run.line(raw)
            if deadline is not None and time.monotonic() > deadline:
                raise _deadline_error(what, timeout, error)
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        run.returncode = p.wait(timeout=left)
    except BaseException:
        p.kill()
        p.wait()
        if on_kill is not None:
            on_kill()
        raise
    t.join(5)
    run.stderr = b"".join(err_buf)
    return run


async def run_helper_async(call: HelperCall) -> HelperRun:
    """:func:`run_helper` through the running event loop: no thread."""
    run = HelperRun(call.on_doc)
    what, timeout, on_kill, error = call.what, call.timeout, call.on_kill, call.error
    try:
        proc = await asyncio.create_subprocess_exec(
            *call.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise _start_error(what, e, error) from None
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout

    async def lines() -> None:
        async for raw in stdout:
            run.line(raw)

    err_task = asyncio.ensure_future(proc.stderr.read())
    try:
        try:
            await asyncio.wait_for(lines(), timeout)
        except asyncio.TimeoutError:
            raise _deadline_error(what, timeout, error) from None
        run.returncode = await proc.wait()
        run.stderr = await err_task
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            if on_kill is not None:
                on_kill()
        err_task.cancel()
        raise
    return run


# -- uploads (upload=URL) ---------------------------------------------------------------------

_P = TypeVar("_P", bound=Path)


def _upload_argv(path: Path, opts: CoreOptions) -> list[str]:
    assert opts.upload is not None
    argv = finish_argv(
        sys.executable,
        path.parent,
        fmt=None,
        pid=None,
        events=None,
        upload=opts.upload,
        keep_local=opts.keep_local,
        max_total=0,
        keep_free=0,
    )
    return [*argv, path.name]


def _upload_error(path: Path, message: str) -> UploadError:
    err = UploadError(
        f"{path.name} was written but not uploaded: {message}",
        stage="upload",
        advice=f"the file stays in {path.parent}; gencore upload --pending {path.parent} URL "
        "tries again",
    )
    err.path = path
    return err


def _uploaded(path: _P, run: HelperRun) -> _P:
    """The helper's reply: the object's URL on ``path.url``, or the failure raised."""
    for doc in run.docs:
        if doc.get("file") != path.name:
            continue  # an earlier pending file the helper uploaded on the way
        if "uploaded" in doc:
            path.url = doc["uploaded"]  # type: ignore[attr-defined]
            return path
        if "upload_error" in doc:
            raise _upload_error(path, doc["upload_error"])
    raise _upload_error(path, "the upload helper gave no result")


def upload(path: _P, opts: CoreOptions) -> _P:
    """Upload a finished core or bundle when ``opts.upload`` asks for it (helper process)."""
    if opts.upload is None:
        return path
    try:
        run = run_helper(HelperCall(_upload_argv(path, opts), "upload", opts.timeout))
    except GencoreError as e:
        raise _upload_error(path, str(e)) from None
    return _uploaded(path, run)


async def upload_async(path: _P, opts: CoreOptions) -> _P:
    """:func:`upload` through the event loop."""
    if opts.upload is None:
        return path
    try:
        run = await run_helper_async(HelperCall(_upload_argv(path, opts), "upload", opts.timeout))
    except GencoreError as e:
        raise _upload_error(path, str(e)) from None
    return _uploaded(path, run)
