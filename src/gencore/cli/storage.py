"""``gencore upload`` and ``gencore ls``: cores in object storage."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .._common import format_size
from ._format import stderr_line


def cmd_upload(args: argparse.Namespace) -> int:
    from ..errors import UploadError
    from ..ship.upload import pending, upload_file

    if args.pending:
        if len(args.files) != 1:
            print("gencore upload --pending DIR URL: one directory", file=sys.stderr)
            return 2
        files = pending(Path(args.files[0]))
        if not files:
            print(f"gencore: nothing pending in {args.files[0]}", file=sys.stderr)
    else:
        files = [Path(f) for f in args.files]
    rc = 0
    for f in files:
        try:
            print(upload_file(f, args.url, keep_local=args.keep_local, log=stderr_line))
        except (UploadError, OSError) as e:
            print(f"gencore: {f}: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_ls(args: argparse.Namespace) -> int:
    from ..ship.upload import list_cores

    docs = list_cores(args.url)
    if args.json:
        json.dump(docs, sys.stdout, indent=1)
        print()
        return 0
    for d in docs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.get("time") or 0))
        print(
            f"{when}  {d.get('host', '?'):<20} pid {d.get('pid', '?'):<8} "
            f"{str(d.get('reason', '?')):<16} {format_size(d.get('size', 0)):>10}  "
            f"{d.get('object')}"
        )
    return 0


def register(sub: Any) -> None:
    """Add ``upload``, ``ls`` to the ``gencore`` command's subparsers."""
    u = sub.add_parser(
        "upload",
        help="upload cores or bundles to object storage",
        description="Upload FILE... to URL/<hostname>/ with a JSON manifest each, removing "
        "the local files (unless --keep-local); --pending DIR URL uploads what a failed "
        "upload left in DIR.",
    )
    u.add_argument("files", nargs="+", metavar="FILE")
    u.add_argument("url")
    u.add_argument("--pending", action="store_true", help="FILE is a core directory")
    u.add_argument("--keep-local", action="store_true")
    u.set_defaults(func=cmd_upload)
    ls = sub.add_parser("ls", help="list the cores under an object-storage URL (newest first)")
    ls.add_argument("url")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
