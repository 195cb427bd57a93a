"""``gencore heap``: what uses the memory and why it is kept, from a core or bundle alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .._common import format_size
from ..analysis.core import CoreFile, open_core
from ._format import identity_option, signed_size

if TYPE_CHECKING:  # the census's modules load when a core is read
    from ..analysis.heap import Census


def _header(core: CoreFile, census: Census) -> str:
    many = "s" if census.interpreters > 1 else ""
    interp = f", interpreter {census.interpreter} ({census.interpreters} interpreter{many} in all)"
    return (
        f"Python {census.python} heap of pid {core.pid} ({core.command or '?'}){interp}, "
        f"from {(core.source or core.path).name}"
    )


def _dump(doc: dict[str, Any]) -> int:
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


def _size(n: Optional[int]) -> str:
    return "unknown" if n is None else format_size(n)


def _notes(census: Census) -> None:
    """What the census could not see, in sentences."""
    if census.unsized:
        print(f"note: {census.unsized:,} objects are of a size gencore cannot know (left out)")
    if census.unreadable:
        print(f"note: {census.unreadable:,} references pointed outside the core; skipped")
    if census.omitted or census.omitted_bytes or census.lists_cut:
        print(
            f"note: max_size left {format_size(census.omitted_bytes)} out of this core: "
            f"{census.omitted:,} references or containers' contents lie there, not counted"
            + (
                f"; {census.lists_cut} of the collector's lists run through it (the objects "
                "linked in the gap are not counted)"
                if census.lists_cut
                else ""
            )
        )
    if census.interpreters > 1:
        print(
            f"note: the core holds {census.interpreters} interpreters; "
            "--interpreter N censuses another one"
        )


def _census_text(core: CoreFile, census: Census, top: Optional[int]) -> int:
    print(_header(core, census))
    print(f"{'count':>12}  {'bytes':>12}  type")
    shown = census.types[: top or 25]
    for t in shown:
        extra = f"  ({t.unsized:,} of unknown size)" if t.unsized else ""
        print(f"{t.count:>12,}  {format_size(t.bytes):>12}  {t.type}{extra}")
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
    _notes(census)
    if census.largest:
        print(f"\nlargest objects:\n{'address':>18}  {'bytes':>12}  type")
        for o in census.largest:
            value = f"  {o.value}" if o.value is not None else ""
            print(f"{o.address:#18x}  {_size(o.bytes):>12}  {o.type}{value}")
    return 0


def _since(args: argparse.Namespace, core: CoreFile, census: Census) -> int:
    with open_core(args.since, args.identity) as old_core:
        old = old_core.heap(interpreter=args.interpreter)
        if (old_core.pid, old_core.executable_name) != (core.pid, core.executable_name):
            print(
                f"gencore heap: note: {args.since} is of pid {old_core.pid}, "
                f"{args.core} of pid {core.pid}",
                file=sys.stderr,
            )
    diffs = census.since(old)
    if args.json:
        return _dump(
            {
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
                ],  # fmt: skip
            }
        )
    print(_header(core, census) + f", compared with {Path(args.since).name}")
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


def _referrers(args: argparse.Namespace, census: Census) -> int:
    refs = census.referrers(args.referrers)
    if args.json:
        return _dump(refs.to_json())
    print(f"{refs.targets:,} objects of type {refs.type}, referenced from:")
    if not refs.referrers:
        print("  (no references found in the containers the census follows)")
    for name, count in refs.referrers[: args.top]:
        print(f"  {count:>12,}  {name}")
    return 0


def _retained(args: argparse.Namespace, core: CoreFile, census: Census) -> int:
    r = census.retained(top=args.largest or 10)
    if args.json:
        doc = {"python": census.python, "interpreter": census.interpreter}
        return _dump(doc | r.to_json(args.top))
    print(_header(core, census) + ": retained bytes (freed if the objects went)")
    print(f"{'count':>12}  {'bytes':>12}  {'retained':>12}  type")
    for t in r.types[: args.top or 25]:
        print(
            f"{t.count:>12,}  {format_size(t.bytes):>12}  {format_size(t.retained):>12}  {t.type}"
        )
    print(f"\nobjects retaining most:\n{'address':>18}  {'bytes':>12}  {'retained':>12}  type")
    for o in r.objects:
        print(
            f"{o.address:#18x}  {format_size(o.bytes):>12}  {format_size(o.retained):>12}  {o.type}"
        )
    print(
        f"\n{r.roots:,} roots reach {r.reachable:,} objects ({format_size(r.reachable_bytes)}); "
        f"unreachable garbage: {r.garbage:,} objects ({format_size(r.garbage_bytes)}), "
        "cycles waiting for the collector"
    )
    if census.frames_note:
        print(f"note: thread frames are not among the roots: {census.frames_note}")
    _notes(census)
    return 0


def _path(args: argparse.Namespace, census: Census) -> int:
    target: Any = args.path
    if isinstance(target, str) and target.lower().startswith("0x"):
        try:
            target = int(target, 16)
        except ValueError:
            raise SystemExit(f"gencore heap: --path {args.path!r} is not an address") from None
    try:
        path = census.path_to(target)
    except KeyError as e:
        print(f"gencore heap: {e.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        return _dump({"python": census.python, "path": path.to_json() if path else None})
    if path is None:
        what = f"{target:#x}" if isinstance(target, int) else target
        print(f"no root reaches {what}: it is garbage waiting for the collector, or not an object")
        return 1
    print(path)
    return 0


def _suspects(args: argparse.Namespace, core: CoreFile, census: Census) -> int:
    found = census.suspects()
    if args.json:
        return _dump(
            {
                "python": census.python,
                "bytes": census.bytes,
                "threshold": 0.10,
                "suspects": [s.to_json() for s in found],
            }  # fmt: skip
        )
    print(_header(core, census) + ": leak suspects (retaining 10% of the heap or more)")
    if not found:
        print("  none: no object or group of objects retains 10% of the counted heap")
    for i, s in enumerate(found, 1):
        what = (
            f"one {s.type} at {s.address:#x}"
            if s.kind == "object"
            else f"{s.count:,} {s.type} under one {s.owner_type} at {s.owner or 0:#x}"
        )
        print(f"{i}. {what} retains {format_size(s.retained)} ({100 * s.share:.0f}%)")
        if s.holds is not None:
            t, n, ret = s.holds
            print(f"   mostly in {n:,} {t} it holds ({format_size(ret)})")
        print(f"   {s.path if s.path else '(no path from a root)'}")
    return 0


def _duplicates(args: argparse.Namespace, census: Census) -> int:
    dups = census.duplicates(top=args.top or 20, show_values=args.show_values)
    if args.json:
        return _dump(
            {
                "python": census.python,
                "wasted": sum(d.wasted for d in dups),
                "duplicates": [d.to_json() for d in dups],
            }  # fmt: skip
        )
    print(f"{'count':>12}  {'each':>12}  {'wasted':>12}  type")
    for d in dups:
        value = f"  {d.value}" if d.value is not None else ""
        sizes = f"{format_size(d.bytes):>12}  {format_size(d.wasted):>12}"
        print(f"{d.count:>12,}  {sizes}  {d.type}{value}")
    print(f"wasted: {format_size(sum(d.wasted for d in dups))} in the values shown")
    return 0


def cmd_heap(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise SystemExit("gencore heap: --top must be at least 1")
    with open_core(args.core, args.identity) as core:
        census = core.heap(
            largest=0 if args.retained else args.largest or 0,
            show_values=args.show_values,
            interpreter=args.interpreter,
            engine=args.engine,
        )
        if args.referrers:
            return _referrers(args, census)
        if args.since:
            return _since(args, core, census)
        if args.retained:
            return _retained(args, core, census)
        if args.path:
            return _path(args, census)
        if args.suspects:
            return _suspects(args, core, census)
        if args.duplicates:
            return _duplicates(args, census)
        if args.json:
            return _dump(census.to_json(args.top))
        return _census_text(core, census, args.top)


def register(sub: Any) -> None:
    """Add ``heap`` to the ``gencore`` command's subparsers."""
    h = sub.add_parser(
        "heap",
        help="what uses the memory and why it is kept: objects by type, retained sizes, "
        "paths to roots, leak suspects, duplicate values",
        description="A census of the Python objects in a core: count and bytes (as "
        "sys.getsizeof counts them) per type, largest first; with --retained, --path, "
        "--suspects or --duplicates, why the memory is kept. Object values are never "
        "printed unless --show-values is given.",
    )
    h.add_argument("core")
    h.add_argument("--top", type=int, help="show the N largest types (default 25; all in JSON)")
    h.add_argument("--json", action="store_true", help="the documented JSON document")
    h.add_argument("--since", metavar="OLD_CORE", help="differences from an earlier core")
    h.add_argument(
        "--referrers", metavar="TYPE", help="which types hold references to objects of TYPE"
    )
    h.add_argument(
        "--retained",
        action="store_true",
        help="retained bytes (what would be freed) per type and for the objects retaining most",
    )
    h.add_argument(
        "--path",
        metavar="TYPE|0xADDR",
        help="the shortest reference path from a root to the object (for a type: to the "
        "instance retaining most)",
    )
    h.add_argument(
        "--suspects",
        action="store_true",
        help="objects and groups of objects that retain 10%% of the heap or more, with paths",
    )
    h.add_argument(
        "--duplicates", action="store_true", help="str and bytes values held more than once"
    )
    h.add_argument("--largest", type=int, metavar="N", help="also list the N biggest objects")
    h.add_argument(
        "--show-values",
        action="store_true",
        help="with --largest and --duplicates: a short value of str, bytes and float objects",
    )
    h.add_argument(
        "--interpreter",
        type=int,
        metavar="N",
        help="census the interpreter with id N (a subinterpreter); default: the one that "
        "took the core",
    )
    h.add_argument(
        "--engine",
        choices=["native", "pure"],
        help="the walker: native (C, the default where built) or pure (Python)",
    )
    identity_option(h)
    h.set_defaults(func=cmd_heap)
