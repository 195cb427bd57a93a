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


def _frames_line(frames: list[dict[str, Any]]) -> str:
    return " <- ".join(
        f"{f.get('function')} ({Path(str(f.get('file'))).name}:{f.get('line')})" for f in frames
    )


def print_groups(groups: list[Any], out: Any) -> None:
    """``gencore ls --group``'s text: one block per group, the newest first."""
    for g in groups:
        first, last = (_stamp(t) for t in (g.first, g.last))
        hosts = ", ".join(g.hosts[:3]) + (f" (+{len(g.hosts) - 3})" if len(g.hosts) > 3 else "")
        print(
            f"{g.count:>5} core{'s' if g.count != 1 else ' '}  {g.cause:<24} "
            f"{first} .. {last}  hosts: {hosts}",
            file=out,
        )
        where = _frames_line(g.frames) if g.frames else "(no Python frames in the manifests)"
        print(f"       in {where}", file=out)
        print(f"       newest: {g.representative.get('object')}", file=out)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t or 0))


def cmd_ls(args: argparse.Namespace) -> int:
    from ..ship.upload import list_cores

    docs = list_cores(args.url)
    if args.group:
        from ..ship.fleet import group_cores

        groups = group_cores(docs)
        if args.json:
            json.dump([g.to_json() for g in groups], sys.stdout, indent=1)
            print()
        else:
            print_groups(groups, sys.stdout)
        return 0
    if args.json:
        json.dump(docs, sys.stdout, indent=1)
        print()
        return 0
    for d in docs:
        when = _stamp(d.get("time") or 0)
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
    ls.add_argument(
        "--group",
        action="store_true",
        help="group the cores by cause: reason and the triggering thread's innermost frames "
        "(from the manifests; nothing is downloaded)",
    )
    ls.set_defaults(func=cmd_ls)
