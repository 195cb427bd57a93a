"""``gencore info``: process, threads, mappings and sizes of a core or bundle."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

from .._common import format_size
from ..analysis.core import CoreFile, open_core
from ..analysis.memory import Unreadable
from ..errors import GencoreError
from ._format import identity_option


def _info(core: CoreFile) -> dict[str, Any]:
    dumped = sum(m.filesz for m in core.mappings)
    holes = 0
    names = {
        t.get("native_id"): t.get("name")
        for t in core.metadata.get("threads", [])
        if isinstance(t, dict)
    }
    files: dict[str, int] = {}
    for m in core.mappings:
        if m.path:
            files[m.path] = files.get(m.path, 0) + m.size
    anon = sum(m.size for m in core.mappings if not m.path)
    # a capped core leaves omitted anonymous memory out of its PT_LOADs: still mapped
    budget = core.capture.get("budget")
    ranges = budget.get("omitted_ranges") if isinstance(budget, dict) else None
    for r in ranges if isinstance(ranges, list) else []:
        if isinstance(r, list) and len(r) == 2 and core.mapping_at(r[0]) is None:
            anon += r[1] - r[0]
            holes += r[1] - r[0]
    stored = os.stat(core.source or core.path)
    compressed = core.source is not None and not core.manifest
    return {
        "path": str(core.source or core.path),
        "pid": core.pid,
        "command": core.command,
        "signal": core.signal,
        "threads": [
            {"tid": t.tid, "name": names.get(t.tid), "pc": t.pc, "sp": t.sp} for t in core.threads
        ],
        "incomplete_threads": core.incomplete_threads,
        "mappings": len(core.mappings),
        "file_mappings": len(files),
        "largest_files": sorted(files.items(), key=lambda kv: -kv[1])[:5],
        "anonymous_bytes": anon,
        "mapped_bytes": sum(m.size for m in core.mappings) + holes,
        "dumped_bytes": dumped,
        "file_size": os.stat(core.path).st_size,
        "allocated_bytes": os.stat(core.path).st_blocks * 512,
        "compressed_size": stored.st_size if compressed else None,
        "metadata": {k: v for k, v in core.metadata.items() if k not in ("stacks", "threads")},
        "capture": {k: v for k, v in core.capture.items() if k != "threads"},
        "bundle": {k: core.manifest.get(k) for k in ("executable", "files", "missing")}
        if core.manifest
        else None,
    }


def _asyncio_line(path: str, identity: Optional[str]) -> None:
    """How many asyncio tasks the core holds, on how many loops (read from its memory)."""
    try:
        with open_core(path, identity) as core:
            report = core.tasks(include_done=True)
    except (GencoreError, Unreadable):
        return
    if report.tasks or report.loops:
        pending = sum(t.state == "pending" for t in report.tasks)
        loops = len(report.loops)
        print(
            f"asyncio:  {len(report.tasks)} tasks ({pending} pending) on {loops} "
            f"loop{'s' if loops != 1 else ''} (`gencore tasks` lists them)"
        )


def cmd_info(args: argparse.Namespace) -> int:
    with open_core(args.core, args.identity) as core:
        info = _info(core)
    if core.manifest:
        info["path"] = f"{args.core} (bundle)"
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(f"core:     {info['path']}")
    print(f"process:  {info['pid']}  {info['command']}")
    print(
        f"threads:  {len(info['threads'])}"
        + (f" ({len(info['incomplete_threads'])} incomplete)" if info["incomplete_threads"] else "")
    )
    for t in info["threads"]:
        print(f"  {t['tid']:>8}  pc {t['pc']:#014x}  sp {t['sp']:#014x}  {t['name'] or ''}")
    print(
        f"mappings: {info['mappings']} ({info['file_mappings']} files), "
        f"{format_size(info['mapped_bytes'])} mapped, "
        f"{format_size(info['anonymous_bytes'])} anonymous"
    )
    for path, size in info["largest_files"]:
        print(f"  {format_size(size):>10}  {path}")
    if info["compressed_size"] is not None:
        print(
            f"size:     {format_size(info['compressed_size'])} compressed (zstd), "
            f"{format_size(info['file_size'])} as a core, "
            f"{format_size(info['dumped_bytes'])} of memory dumped"
        )
    else:
        print(
            f"size:     {format_size(info['file_size'])} file, "
            f"{format_size(info['allocated_bytes'])} on disk, "
            f"{format_size(info['dumped_bytes'])} of memory dumped"
        )
    budget = info["capture"].get("budget") if isinstance(info.get("capture"), dict) else None
    if isinstance(budget, dict):
        kept = budget.get("kept", {})
        print(
            f"capped:   max_size {format_size(budget.get('max_size', 0))}: kept "
            f"{format_size(sum(kept.values()))} of {format_size(budget.get('dumpable', 0))}, "
            f"omitted {format_size(budget.get('omitted', 0))} in "
            f"{len(budget.get('omitted_ranges', [])) + budget.get('omitted_ranges_unlisted', 0)}"
            " ranges (listed in the core)"
        )
        for name, n in kept.items():
            print(f"  {format_size(n):>10}  {name}")
        print(
            f"  Python walk: {budget.get('python_threads', 0)} thread states, "
            f"{budget.get('python_frames', 0)} frames"
        )
    meta = info["metadata"]
    if meta:
        print(
            f"written:  by gencore {meta.get('gencore')} (reason {meta.get('reason')}) "
            f"for Python {meta.get('python', {}).get('version')}"
        )
        heap = meta.get("heap")
        if isinstance(heap, dict) and "gc_heads" in heap:
            print("heap:     layout recorded: `gencore heap` can census this core")
        elif isinstance(heap, dict):
            why = heap.get("unsupported") or heap.get("error")
            print(f"heap:     no layout ({why}): `gencore heap` cannot census this core")
        watch = meta.get("watch")
        if isinstance(watch, dict) and "stalled_seconds" in watch:
            print(f"watchdog: stalled {watch['stalled_seconds']:.1f} s (thread {watch.get('tid')})")
        elif isinstance(watch, dict) and "rss_bytes" in watch:
            print(
                f"watchdog: resident {format_size(watch['rss_bytes'])} past the limit of "
                f"{format_size(watch.get('rss_limit', 0))}"
            )
        if meta.get("exception"):
            lines = str(meta["exception"].get("text", "")).strip().splitlines()
            print(f"exception: {lines[-1] if lines else meta['exception'].get('type')}")
    _asyncio_line(args.core, args.identity)
    if info["bundle"]:
        b = info["bundle"]
        print(
            f"bundle:   {len(b['files'] or [])} files, executable {b['executable']}, "
            f"{len(b['missing'] or [])} missing"
        )
    return 0


def register(sub: Any) -> None:
    """Add ``info`` to the ``gencore`` command's subparsers."""
    i = sub.add_parser("info", help="process, threads, mappings and sizes of a core or bundle")
    i.add_argument("core")
    i.add_argument("--json", action="store_true")
    identity_option(i)
    i.set_defaults(func=cmd_info)
