"""``gencore run``: run a Python program with the triggers installed, in it and in every Python
process it starts (forked, spawned, forkserver children; ``--children`` for subprocesses)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from typing import Any

from .._common import BUNDLE_FORMATS
from ..errors import GencoreError
from ._format import signal_arg, size_arg


def install_args(args: argparse.Namespace, program: str) -> dict[str, Any]:
    """The :func:`~gencore.install` arguments of this ``gencore run`` (JSON-ready: the same
    go to the processes it starts, through ``$GENCORE_RUN``)."""
    signals = list(args.signal or ())
    chain = list(args.chain or ())
    if program == "gunicorn":  # its arbiter upgrades itself on SIGUSR2; workers time out
        from ..integrations import gunicorn

        signals = signals or [int(gunicorn.SIGNAL)]
        chain = chain or [int(signal.SIGABRT)]
    directory = args.directory or os.environ.get("GENCORE_DIR")
    return dict(
        signals=signals or [int(signal_arg("USR2"))],
        chain_signals=chain,
        directory=os.path.abspath(directory) if directory else os.getcwd(),
        collect=args.collect,
        format=args.format,
        on_crash=args.on_crash,
        on_exception=args.on_exception,
        max_cores=args.max_cores,
        min_interval=args.min_interval,
        min_free=args.min_free,
        hang_timeout=args.on_hang,
        heartbeat_timeout=args.heartbeat_timeout,
        rss_limit=args.on_rss,
        on_memory_error=args.on_memory_error,
        on_memory_high=args.on_memory_high,
        upload=args.upload,
        keep_local=args.keep_local,
        max_total=args.max_total,
        keep_free=args.keep_free,
        compress=args.compress,
        max_size=args.max_size,
        redact=args.redact,
        encrypt_to=args.encrypt_to,
    )


def python_script(name: str) -> str:
    """The script to run: a path, else a command on PATH that is a Python script (a console
    script such as ``gunicorn`` or ``uvicorn``).

    Raises:
        ValueError: neither.
    """
    if os.path.exists(name) or os.sep in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise ValueError(f"{name}: no such file, and no command of that name on PATH")
    with open(found, "rb") as f:
        first = f.readline(256)
    if not (first.startswith(b"#!") and b"python" in first):
        raise ValueError(f"{found} is not a Python script: gencore run runs Python programs")
    return found


def cmd_run(args: argparse.Namespace) -> int:
    import runpy

    from ..capture.autoarm import ENV, environment
    from ..capture.triggers import install

    rest = list(args.program)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.module is None and not rest:
        print("gencore run: give a script (gencore run -- script.py) or -m module", file=sys.stderr)
        return 2
    try:
        script = python_script(rest[0]) if args.module is None else ""
        program = args.module.split(".")[0] if args.module else os.path.basename(script)
        arguments = install_args(args, program)
        install(**arguments)
    except ValueError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 1
    # every Python process the program starts is armed the same way (see capture.autoarm)
    os.environ[ENV] = environment(arguments, args.children)
    if args.module is not None:
        sys.argv = [args.module, *rest]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [script, *rest[1:]]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


def _add_process_options(r: Any) -> None:
    """The options about the program's processes and signals."""
    r.add_argument(
        "--chain",
        action="append",
        type=signal_arg,
        metavar="SIGNAL",
        help="dump on this signal, then run the program's own handler for it (repeatable; "
        "default for gunicorn: ABRT, its worker timeout)",
    )
    r.add_argument(
        "--children",
        action="store_true",
        help="also arm Python programs started with subprocess (multiprocessing's fork, "
        "spawn and forkserver processes are armed anyway)",
    )


def _secure_options(r: Any) -> None:
    """--redact and --encrypt-to."""
    r.add_argument(
        "--redact",
        nargs="?",
        const="values",
        choices=("values", "env"),
        help="scrub values from every core in the snapshot child: str, bytes and bytearray "
        "contents, the environment and the arguments (values, the default), or only the "
        "environment (env); names, file names and line numbers stay",
    )
    r.add_argument(
        "--encrypt-to",
        action="append",
        metavar="RECIPIENT",
        help="write every core (and bundle) as an age file for RECIPIENT (age1..., or an "
        "ssh-ed25519 public key; repeatable, or comma-separated)",
    )


def register(sub: Any) -> None:
    """Add ``run`` to the ``gencore`` command's subparsers."""
    r = sub.add_parser(
        "run",
        help="run a Python program with the triggers installed",
        description="Like `python script.py` / `python -m module`, with gencore's triggers "
        "installed first: gencore run [options] -- script.py args, or -m module args.",
    )
    r.add_argument("-m", dest="module", help="run a library module as a script")
    r.add_argument(
        "--signal",
        action="append",
        type=signal_arg,
        help="dump on this signal (repeatable; default SIGUSR2)",
    )
    _add_process_options(r)
    r.add_argument("--directory", "-d", help="where cores go (default $GENCORE_DIR or cwd)")
    r.add_argument("--collect", action="store_true", help="also write a bundle of each core")
    r.add_argument("--format", choices=BUNDLE_FORMATS, default="tar.gz")
    r.add_argument(
        "--on-crash",
        action="store_true",
        help="core on SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT, then die as before",
    )
    r.add_argument("--on-exception", action="store_true", help="core on an unhandled exception")
    r.add_argument(
        "--on-hang",
        type=float,
        metavar="SECONDS",
        help="core when no thread can take the GIL, or the main asyncio loop runs no "
        "callback, for SECONDS",
    )
    r.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        help="core when gencore.heartbeat() is not called for SECONDS (after a first call)",
    )
    r.add_argument(
        "--on-rss",
        metavar="LIMIT",
        help="core when the resident size passes LIMIT: bytes, 300M, 2G, or 80%% of the "
        "cgroup's memory limit (else of RAM)",
    )
    r.add_argument(
        "--on-memory-error", action="store_true", help="core on an unhandled MemoryError"
    )
    r.add_argument(
        "--on-memory-high",
        action="store_true",
        help="core when the memory cgroup (v2) counts a memory.high breach",
    )
    r.add_argument("--max-cores", type=int, default=10)
    r.add_argument("--min-interval", type=float, default=1.0)
    r.add_argument(
        "--min-free",
        type=size_arg,
        default=0,
        metavar="SIZE",
        help="skip a core unless SIZE stays free beyond the process's resident size",
    )
    r.add_argument(
        "--upload",
        metavar="URL",
        help="upload each core (or bundle) to URL/<hostname>/ (s3://, gs://, az://, file://)",
    )
    r.add_argument("--keep-local", action="store_true", help="keep the local file after upload")
    r.add_argument(
        "--compress",
        choices=("zstd",),
        help="write each core as <stem>.core.zst (zstd, compressed as it is written)",
    )
    r.add_argument(
        "--max-size",
        type=size_arg,
        metavar="SIZE",
        help="every core at most SIZE (64M, 2G): stacks, Python frames and interpreter data "
        "first; what is left out is listed in the core",
    )
    _secure_options(r)
    r.add_argument(
        "--max-total", type=size_arg, default=0, metavar="SIZE", help="core directory budget"
    )
    r.add_argument(
        "--keep-free",
        type=size_arg,
        default=0,
        metavar="SIZE",
        help="remove the oldest cores to keep SIZE free on the core directory's file system",
    )
    r.add_argument("program", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)
