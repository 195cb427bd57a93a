"""``gencore tasks``: every asyncio task in a core or bundle, read from its memory."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from ..analysis.core import open_core
from ..analysis.tasks import TaskInfo, TaskReport, TreeNode, await_tree
from ._format import identity_option

COLUMNS = (
    "tid",
    "task id",
    "task name",
    "state",
    "coroutine stack",
    "blocked on",
    "awaiter chain",
    "awaiter name",
    "awaiter id",
)


def _stack(t: TaskInfo) -> str:
    """The coroutine stack, innermost last, with the innermost frame's place."""
    if not t.coroutine:
        return "?"
    names = " -> ".join(f.qualname for f in t.coroutine)
    last = t.coroutine[-1]
    return f"{names} ({last.file.rsplit('/', 1)[-1]}:{last.line})"


def task_rows(report: TaskReport) -> Iterator[tuple[str, ...]]:
    """The table's rows: one per task and awaiter (one with empty awaiter columns for a task
    nobody awaits), like ``python -m asyncio ps``."""
    by_id = report.by_id()
    for t in report.tasks:
        base = (
            str(t.thread or "-"),
            hex(t.id),
            t.name or "?",
            t.state,
            _stack(t),
            t.blocked_on.description if t.blocked_on else ("" if t.state != "pending" else "?"),
        )
        if not t.awaited_by:
            yield (*base, "", "", "0x0")
        for a in t.awaited_by:
            awaiter = by_id.get(a)
            chain = " -> ".join(f.qualname for f in awaiter.coroutine) if awaiter else "?"
            yield (*base, chain, awaiter.name or "?" if awaiter else "?", hex(a))


def print_table(report: TaskReport, out: Any) -> None:
    rows = list(task_rows(report))
    widths = [min(max([len(c)] + [len(r[i]) for r in rows]), 60) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip(), file=out)
    print("-" * (sum(widths) + 2 * (len(widths) - 1)), file=out)
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def render_tree(node: TreeNode, prefix: str = "", last: bool = True) -> Iterator[str]:
    """Lines of one tree, drawn like ``python -m asyncio pstree``."""
    mark = " (await cycle: drawn above)" if node.cycle else ""
    yield f"{prefix}{'└── ' if last else '├── '}{node.label}{mark}"
    deeper = prefix + ("    " if last else "│   ")
    for i, kid in enumerate(node.children):
        yield from render_tree(kid, deeper, i == len(node.children) - 1)


def print_summary(report: TaskReport, out: Any) -> None:
    for note in report.notes:
        print(f"note: {note}", file=out)
    by_id = report.by_id()
    for cycle in report.cycles():
        names = " → ".join(str(by_id[t].name) if t in by_id else hex(t) for t in cycle)
        print(f"await cycle: {names} (these tasks wait on each other forever)", file=out)


def cmd_tasks(args: argparse.Namespace) -> int:
    with open_core(args.core, args.identity) as core:
        report = core.tasks(include_done=args.all)
        if args.json:
            json.dump(report.to_json(), sys.stdout, indent=1)
            print()
            return 0
        out = sys.stdout
        print(f"{len(report.tasks)} tasks from {report.source}", file=out)
        for lp in report.loops:
            where = f"thread {lp.thread}" if lp.thread else "not running"
            print(
                f"loop {lp.address:#x} ({lp.type}): {where}, {lp.pending} pending of {lp.tasks}",
                file=out,
            )
        print("", file=out)
        if args.tree:
            for root in await_tree(report):
                for line in render_tree(root):
                    print(line, file=out)
                print("", file=out)
        else:
            print_table(report, out)
        print_summary(report, out)
    return 0


def register(sub: Any) -> None:
    """Add ``tasks`` to the ``gencore`` command's subparsers."""
    s = sub.add_parser(
        "tasks",
        help="every asyncio task in a core or bundle: stacks, what it waits on, who waits on it",
        description="Every asyncio task read from the core's memory, like `python -m asyncio "
        "ps` (a table) and `pstree` (--tree) on a live process: its coroutine stack, what it "
        "is blocked on, the tasks awaiting it. Await cycles are shown and named.",
    )
    s.add_argument("core")
    s.add_argument("--tree", action="store_true", help="the await tree, like pstree")
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="finished tasks still in memory too")
    identity_option(s)
    s.set_defaults(func=cmd_tasks)
