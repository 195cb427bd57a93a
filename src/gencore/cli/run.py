"""``gencore run``: run a Python program with the triggers installed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from .._common import BUNDLE_FORMATS
from ..errors import GencoreError
from ._format import signal_arg, size_arg


def _install_for_run(install: Callable[..., Any], args: argparse.Namespace) -> None:
    install(
        signals=tuple(args.signal) if args.signal else (signal_arg("USR2"),),
        directory=args.directory,
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
        upload=args.upload,
        keep_local=args.keep_local,
        max_total=args.max_total,
        keep_free=args.keep_free,
        compress=args.compress,
        max_size=args.max_size,
        redact=args.redact,
        encrypt_to=args.encrypt_to,
    )


def cmd_run(args: argparse.Namespace) -> int:
    import runpy

    from ..capture.triggers import install

    rest = list(args.program)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.module is None and not rest:
        print("gencore run: give a script (gencore run -- script.py) or -m module", file=sys.stderr)
        return 2
    try:
        _install_for_run(install, args)
    except ValueError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 1
    if args.module is not None:
        sys.argv = [args.module, *rest]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script = rest[0]
        sys.argv = rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


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
