"""``gencore report``: an incident page for one core, or a fleet's page for a prefix."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from ._format import identity_option, stderr_line


def _is_prefix(source: str) -> bool:
    """A URL or directory that lists cores (``URL/``, ``s3://bucket/prod``) rather than one
    core or bundle."""
    if "://" not in source:
        return Path(source).is_dir()
    if source.endswith("/"):
        return True
    from .._common import GENCORE_FILE

    return not GENCORE_FILE.match(source.rsplit("/", 1)[-1])


def _local(source: str, tmp: str) -> str:
    """A local path for ``source``: downloaded when it is an object in storage."""
    if source.startswith("file://"):
        return source[len("file://") :]
    if "://" in source:
        from ..ship.upload import fetch

        return str(fetch(source, Path(tmp)))
    return source


def _default_output(source: str, fleet: bool) -> Path:
    if fleet:
        return Path("gencore-fleet.html")
    name = source.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".core.zst", ".core", ".tar.gz", ".tar.zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(f"{name}.html")


def cmd_report(args: argparse.Namespace) -> int:
    from ..analysis.core import open_core
    from ..analysis.report import report_html

    fleet = _is_prefix(args.source)
    out = Path(args.output) if args.output else _default_output(args.source, fleet)
    if fleet:
        from ..analysis.report.fleet import write_fleet

        if args.since:
            raise SystemExit("gencore report: --since compares two cores, not a prefix")
        write_fleet(args.source, out, fetch_reports=not args.no_fetch, log=stderr_line)
        print(out)
        return 0
    with tempfile.TemporaryDirectory(prefix="gencore-report-") as tmp:
        since = _local(args.since, tmp) if args.since else None
        with open_core(_local(args.source, tmp), args.identity) as core:
            html = report_html(
                core, since=since, with_source=not args.no_source, native=args.native
            )
    out.write_text(html, encoding="utf-8")
    print(out)
    return 0


def register(sub: Any) -> None:
    """Add ``report`` to the ``gencore`` command's subparsers."""
    r = sub.add_parser(
        "report",
        help="one self-contained HTML page for an incident (or a fleet's cores by cause)",
        description="Write one HTML page (inline CSS, script and SVG: it opens offline) about "
        "a core, a bundle or an uploaded object: why it was written, the capture, every "
        "thread's stack folded by identical stacks with a merged icicle, asyncio tasks, the "
        "heap by type and, with --since, what grew. Given a prefix (URL/ or a directory), "
        "the page groups the cores under it by cause, each group linking to the report of "
        "its newest core.",
    )
    r.add_argument("source", metavar="CORE|BUNDLE|URL")
    r.add_argument("-o", "--output", metavar="FILE.html", help="default: <core name>.html")
    r.add_argument("--since", metavar="OLD", help="an earlier core of the process: heap growth")
    r.add_argument(
        "--no-source",
        action="store_true",
        help="leave out source lines (read from this machine's files unchanged since the core)",
    )
    r.add_argument(
        "--native",
        action="store_true",
        help="add every thread's native frames (eu-stack from elfutils, this machine's files)",
    )
    r.add_argument(
        "--no-fetch",
        action="store_true",
        help="for a prefix: group from the manifests only, download no core",
    )
    identity_option(r)
    r.set_defaults(func=cmd_report)
