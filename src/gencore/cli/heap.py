"""``gencore heap``: what uses the memory, from a core or bundle alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._common import format_size
from ..analysis.core import CoreFile, open_core
from ._format import identity_option, signed_size


def _heap_header(core: CoreFile, census: Any) -> str:
    return (
        f"Python {census.python} heap of pid {core.pid} ({core.command or '?'}), "
        f"from {(core.source or core.path).name}"
    )


def cmd_heap(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise SystemExit("gencore heap: --top must be at least 1")
    with open_core(args.core, args.identity) as core:
        if args.referrers:
            refs = core.heap_referrers(args.referrers)
            if args.json:
                json.dump(refs.to_json(), sys.stdout, indent=1)
                print()
                return 0
            print(f"{refs.targets:,} objects of type {refs.type}, referenced from:")
            if not refs.referrers:
                print("  (no references found in the containers the census follows)")
            for name, count in refs.referrers[: args.top]:
                print(f"  {count:>12,}  {name}")
            return 0
        census = core.heap(largest=args.largest or 0, show_values=args.show_values)
        if args.since:
            with open_core(args.since, args.identity) as old_core:
                old = old_core.heap()
                if (old_core.pid, old_core.executable_name) != (core.pid, core.executable_name):
                    print(
                        f"gencore heap: note: {args.since} is of pid {old_core.pid}, "
                        f"{args.core} of pid {core.pid}",
                        file=sys.stderr,
                    )
            diffs = census.since(old)
            if args.json:
                doc = {
                    "python": census.python,
                    "since": str(args.since),
                    "objects": census.objects - old.objects,
                    "bytes": census.bytes - old.bytes,
                    "types": [
                        {
                            "type": d.type,
                            "count": d.count,
                            "bytes": d.bytes,
                            "old_count": d.old_count,
                            "old_bytes": d.old_bytes,
                            "status": d.status,
                        }
                        for d in diffs[: args.top]
                    ],
                }
                json.dump(doc, sys.stdout, indent=1)
                print()
                return 0
            print(_heap_header(core, census) + f", compared with {Path(args.since).name}")
            print(f"{'count':>12}  {'bytes':>12}  type")
            for d in diffs[: args.top or 25]:
                tag = "" if d.status == "changed" else f"  ({d.status})"
                print(f"{d.count:>+12,}  {signed_size(d.bytes):>12}  {d.type}{tag}")
            print(
                f"total: {census.objects - old.objects:+,} objects, "
                f"{signed_size(census.bytes - old.bytes)} "
                f"({old.objects:,} -> {census.objects:,} objects, "
                f"{format_size(old.bytes)} -> {format_size(census.bytes)})"
            )
            return 0
        if args.json:
            json.dump(census.to_json(args.top), sys.stdout, indent=1)
            print()
            return 0
        print(_heap_header(core, census))
        print(f"{'count':>12}  {'bytes':>12}  type")
        shown = census.types[: args.top or 25]
        for t in shown:
            print(f"{t.count:>12,}  {format_size(t.bytes):>12}  {t.type}")
        rest = census.types[len(shown) :]
        if rest:
            print(
                f"{sum(t.count for t in rest):>12,}  "
                f"{format_size(sum(t.bytes for t in rest)):>12}  ({len(rest)} more types)"
            )
        share = 100 * census.bytes / census.anon_bytes if census.anon_bytes else 0.0
        print(
            f"total: {census.objects:,} objects ({census.tracked:,} tracked by the collector) in "
            f"{format_size(census.bytes)}; attributed {format_size(census.bytes)} of "
            f"{format_size(census.anon_bytes)} anonymous memory ({share:.0f}%)"
        )
        if census.unreadable:
            print(f"note: {census.unreadable:,} references pointed outside the core; skipped")
        if census.largest:
            print(f"\nlargest objects:\n{'address':>18}  {'bytes':>12}  type")
            for o in census.largest:
                value = f"  {o.value}" if o.value is not None else ""
                print(f"{o.address:#18x}  {format_size(o.bytes):>12}  {o.type}{value}")
    return 0


def register(sub: Any) -> None:
    """Add ``heap`` to the ``gencore`` command's subparsers."""
    h = sub.add_parser(
        "heap",
        help="what uses the memory: objects by type, from a core or bundle alone",
        description="A census of the Python objects in a core: count and bytes (as "
        "sys.getsizeof counts them) per type, largest first. Object values are never "
        "printed unless --show-values is given.",
    )
    h.add_argument("core")
    h.add_argument("--top", type=int, help="show the N largest types (default 25; all in JSON)")
    h.add_argument("--json", action="store_true", help="the documented JSON document")
    h.add_argument("--since", metavar="OLD_CORE", help="differences from an earlier core")
    h.add_argument(
        "--referrers", metavar="TYPE", help="which types hold references to objects of TYPE"
    )
    h.add_argument("--largest", type=int, metavar="N", help="also list the N biggest objects")
    h.add_argument(
        "--show-values",
        action="store_true",
        help="with --largest: a short value of str, bytes and float objects",
    )
    identity_option(h)
    h.set_defaults(func=cmd_heap)
