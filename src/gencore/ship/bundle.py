"""Bundles: a core packed with the executable, its shared libraries and a manifest.

A bundle lets a core be analysed on another machine that does not have the exact interpreter
and libraries. :func:`collect_core` writes a core and then packs it in a helper process
(:mod:`gencore.ship.helper`), so the application's interpreter does no compression or hashing:

    <stem>.tar.gz
      <stem>/<stem>.core
      <stem>/manifest.json
      <stem>/usr/lib/x86_64-linux-gnu/libc.so.6       (every file-backed ELF mapping)
      <stem>/root/.pyenv/versions/3.12.1/bin/python3.12 (the executable)
      <stem>/.../python3.12-gdb.py                    (when the interpreter has one)

Libraries deleted or replaced since they were loaded are taken from ``/proc/PID/map_files``
while the process lives; the manifest lists any that could not be recovered. Reading bundles
back is :mod:`gencore.ship.extract` (``extract_bundle``) and :func:`~gencore.open_core`.
"""

from __future__ import annotations

import concurrent.futures
import errno as errno_mod
import os
import sys
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._common import (
    BUNDLE_FORMATS,
    DEFAULT_TIMEOUT,
    PathLike,
    ProgressCallback,
    in_thread,
)
from ..capture import job as _job
from ..capture.options import CoreOptions
from ..capture.result import SnapshotReport
from ..capture.snapshot import run_core
from ..errors import BundleError, exists_error
from .client import HelperCall, HelperRun, run_helper, run_helper_async, upload, upload_async
from .crypt import Recipients, parse_recipients
from .extract import ExtractedBundle, extract_bundle, import_zstandard, is_bundle
from .helper import bundle_argv, bundle_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..capture.options import CoreOptionArgs

__all__ = [
    "BundleError",
    "BundlePath",
    "ExtractedBundle",
    "bundle_core",
    "collect_core",
    "collect_core_async",
    "extract_bundle",
    "is_bundle",
    "start_collect",
]


class BundlePath(PosixPath):
    """A :class:`pathlib.Path` to a finished bundle.

    ``report`` is the core's :class:`~gencore.SnapshotReport`; ``manifest`` the bundle's
    manifest (what is in it, build-ids, sha256, missing files); ``url`` the object's URL
    when it was uploaded (``upload=``).
    """

    report: Optional[SnapshotReport] = None
    url: Optional[str] = None
    manifest: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance


def _check_format(fmt: str) -> None:
    if fmt not in BUNDLE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(BUNDLE_FORMATS)}, got {fmt!r}")
    if fmt == "tar.zst":
        import_zstandard()


def _helper_command(
    core: Path, fmt: str, keep_core: bool, pid: Optional[int], encrypt_to: tuple[str, ...] = ()
) -> list[str]:
    """Check that the bundle does not exist yet; the helper's command line for it."""
    output = core.with_name(bundle_name(core.name, fmt, bool(encrypt_to)))
    if os.path.lexists(output):
        raise exists_error(output, stage="bundle")
    argv = bundle_argv(
        sys.executable, core.parent, fmt, pid, remove_core=not keep_core, encrypt_to=encrypt_to
    )
    return [*argv, core.name]


def _remove_partial(core: Path, fmt: str, encrypt_to: tuple[str, ...] = ()) -> None:
    try:
        os.unlink(core.with_name("." + bundle_name(core.name, fmt, bool(encrypt_to)) + ".partial"))
    except OSError:
        pass


def _bundle_result(run: HelperRun, report: Optional[SnapshotReport]) -> BundlePath:
    """The helper's last document: the bundle, or the failure raised."""
    r = next((d for d in reversed(run.docs) if "progress" not in d), None)
    if r is None or "ok" not in r:
        why = (r or {}).get("error") or run.stderr.decode(errors="replace").strip()[-500:]
        err = (r or {}).get("errno")
        raise BundleError(
            f"building the bundle failed: {why or f'helper exit status {run.returncode}'}",
            errno=err,
            stage="bundle",
            advice=(
                "free space in the directory and retry"
                if err in (errno_mod.ENOSPC, errno_mod.EDQUOT)
                else "the core itself was kept; bundle it with `gencore bundle CORE`"
            ),
        )
    p = BundlePath(r["ok"])
    p.report = report
    p.manifest = r["manifest"]
    return p


def _progress(
    on_progress: Optional[ProgressCallback],
) -> Optional[Callable[[dict[str, Any]], None]]:
    if on_progress is None:
        return None
    report = on_progress

    def doc(d: dict[str, Any]) -> None:
        if "progress" in d:
            report(*d["progress"])

    return doc


def bundle_core(
    core: PathLike,
    *,
    format: str = "tar.gz",
    keep_core: bool = True,
    pid: Optional[int] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    on_progress: Optional[ProgressCallback] = None,
    encrypt_to: Recipients = None,
) -> BundlePath:
    """Pack an existing core with its executable, libraries and manifest, next to it.

    The work runs in a helper process. ``pid`` is the live process the core was taken from
    (its ``/proc/PID/map_files`` recovers deleted libraries); leave it ``None`` for old cores.
    ``encrypt_to`` (age recipients) writes ``<stem>.tar.gz.age``: the archive is encrypted
    on its way to the file. An encrypted core (``.core.age``) is packed as it is, and the
    files it needs are those its process maps (``pid``, while it runs).
    """
    _check_format(format)
    core = Path(core)
    recipients = parse_recipients(encrypt_to)
    call = HelperCall(
        _helper_command(core, format, keep_core, pid, recipients),
        "bundle",
        timeout,
        _progress(on_progress),
        lambda: _remove_partial(core, format, recipients),  # the killed helper could not
        error=BundleError,
    )
    run = run_helper(call)
    return _bundle_result(run, getattr(core, "report", None))


def collect_core(
    directory: Optional[PathLike] = None,
    *,
    format: str = "tar.gz",
    keep_core: bool = False,
    **options: Unpack[CoreOptionArgs],
) -> BundlePath:
    """Write a core of this process and pack it with everything needed to analyse it elsewhere.

    Returns ``<stem>.tar.gz`` (or ``.tar.zst``): the core, the executable, every file-backed
    ELF mapping at its original path under ``<stem>/``, the interpreter's ``python-gdb.py``
    and ``manifest.json`` (pid, time, host, kernel, Python, build-ids, sha256, Python stacks).
    The core is taken exactly like :func:`~gencore.create_core` (same options); the archive
    is built by a helper process, so this interpreter only waits. The loose core is removed
    unless ``keep_core``. ``on_progress(done, total)`` reports the core's writing, then the
    bundling.
    """
    _check_format(format)
    opts = CoreOptions.build(directory, options)
    core = run_core(opts)
    # If bundling fails the core stays where it is: it is the valuable part.
    bundle = bundle_core(
        core,
        format=format,
        keep_core=keep_core,
        pid=os.getpid(),
        timeout=opts.timeout,
        on_progress=opts.on_progress,
        encrypt_to=opts.encrypt_to,
    )
    return upload(bundle, opts)  # the bundle is what goes (with upload=)


async def collect_core_async(
    directory: Optional[PathLike] = None,
    *,
    format: str = "tar.gz",
    keep_core: bool = False,
    **options: Unpack[CoreOptionArgs],
) -> BundlePath:
    """Like :func:`collect_core`, as a coroutine: no thread, the helper is watched by the loop."""
    _check_format(format)
    opts = CoreOptions.build(directory, options)
    core = await _job.wait_async(_job.Job(opts))
    call = HelperCall(
        _helper_command(core, format, keep_core, os.getpid(), opts.encrypt_to),
        "bundle",
        opts.timeout,
        _progress(opts.on_progress),
        lambda: _remove_partial(core, format, opts.encrypt_to),
        error=BundleError,
    )
    run = await run_helper_async(call)
    return await upload_async(_bundle_result(run, core.report), opts)


def start_collect(
    directory: Optional[PathLike] = None,
    *,
    callback: Optional[Callable[[Optional[BaseException], Optional[BundlePath]], None]] = None,
    format: str = "tar.gz",
    keep_core: bool = False,
    **options: Unpack[CoreOptionArgs],
) -> concurrent.futures.Future[BundlePath]:
    """Take the snapshot now; bundle it in the background. The callback form of collect_core.

    The freeze and fork happen before this returns. ``callback(error, path)`` is called from a
    daemon thread when the bundle is done.
    """
    _check_format(format)
    opts = CoreOptions.build(directory, options)
    job = _job.Job(opts)
    pid = os.getpid()

    def work() -> BundlePath:
        core = _job.wait_blocking(job)
        bundle = bundle_core(
            core,
            format=format,
            keep_core=keep_core,
            pid=pid,
            timeout=opts.timeout,
            encrypt_to=opts.encrypt_to,
        )
        return upload(bundle, opts)

    return in_thread(work, callback, "gencore-collect")
