"""The report's pure parts: grouping manifests by cause, the treemap's tiling, traceback
frames, folding identical stacks and the icicle's node budget."""

from __future__ import annotations

import traceback

from gencore.analysis.report.charts import MAX_NODES, icicle, merge_stacks, squarify
from gencore.analysis.report.gather import ThreadView
from gencore.analysis.report.page import fold
from gencore.analysis.report.trigger import Frame, traceback_frames
from gencore.ship.fleet import group_cores


def manifest(obj, t, reason="api", frames=(), host="h1", **trig):
    fr = [{"function": f, "file": f"/app/{f}.py", "line": i + 1} for i, f in enumerate(frames)]
    return {
        "object": obj,
        "time": t,
        "host": host,
        "reason": reason,
        "trigger": {"reason": reason, "frames": fr, **trig},
    }


def test_groups_by_cause_and_frames_newest_first():
    docs = [
        manifest("a1", 10, frames=["handle", "serve", "main"], host="h1"),
        manifest("a2", 30, frames=["handle", "serve", "main", "extra"], host="h2"),
        manifest("b1", 20, frames=["other", "serve", "main"]),
        manifest("c1", 25, reason="crash", frames=["handle", "serve", "main"], signal=11),
        manifest("c2", 5, reason="crash", frames=["handle", "serve", "main"], signal=6),
        {"object": "old", "time": 1, "reason": "signal", "host": "h3"},  # no trigger
    ]
    groups = group_cores(docs)
    assert [g.representative["object"] for g in groups] == ["a2", "c1", "b1", "c2", "old"]
    a = groups[0]
    assert (a.count, a.first, a.last, a.cause) == (2, 10, 30, "api")
    assert sorted(a.hosts) == ["h1", "h2"]
    assert [g.cause for g in groups[1:4]] == ["crash: SIGSEGV", "api", "crash: SIGABRT"]
    assert not groups[-1].frames_known
    doc = a.to_json()
    assert doc["cores"] == ["a2", "a1"] and doc["count"] == 2 and len(doc["group"]) == 12


def test_exception_type_is_part_of_the_cause():
    docs = [
        manifest("x", 2, reason="exception", frames=["f"], exception="builtins.KeyError"),
        manifest("y", 1, reason="exception", frames=["f"], exception="builtins.ValueError"),
    ]
    assert [g.cause for g in group_cores(docs)] == [
        "exception: builtins.KeyError",
        "exception: builtins.ValueError",
    ]


def test_squarify_tiles_the_box_proportionally():
    values = [500, 250, 120, 80, 30, 20]
    rects = squarify(values, 0, 0, 600, 400)
    areas = [w * h for _, _, w, h in rects]
    assert abs(sum(areas) - 600 * 400) < 1e-6
    for v, a in zip(values, areas):
        assert abs(a / (600 * 400) - v / sum(values)) < 1e-9
    for x, y, w, h in rects:
        assert 0 <= x and 0 <= y and x + w <= 600 + 1e-9 and y + h <= 400 + 1e-9
    assert squarify([0, 0], 0, 0, 10, 10) == [(0, 0, 0.0, 0.0)] * 2


def _raise_chain():
    try:
        {}["missing"]
    except KeyError as e:
        raise ValueError("again") from e


def test_traceback_frames_are_of_the_last_exception_innermost_first():
    try:
        _raise_chain()
    except ValueError as e:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    frames = traceback_frames(text)
    assert [f.function for f in frames[:2]] == [
        "_raise_chain",
        "test_traceback_frames_are_of_the_last_exception_innermost_first",
    ]
    assert frames[0].file == __file__


def test_fold_puts_the_triggering_thread_first_then_the_largest():
    a = [Frame("wait", "/t.py", 1), Frame("run", "/t.py", 2)]
    b = [Frame("poll", "/t.py", 3)]
    threads = [
        ThreadView(1, "w1", "parked", list(a), python=True),
        ThreadView(2, "w2", "parked", list(a), python=True),
        ThreadView(3, "p", "parked", list(b), python=True, triggering=True),
        ThreadView(4, None, "parked", [], python=False),
    ]
    groups = fold(threads)
    assert [[t.tid for t in g] for g in groups] == [[3], [1, 2], [4]]


def test_icicle_keeps_the_widest_nodes_within_budget():
    stacks = [
        ([Frame(f"leaf{i}", "/x.py", 1), Frame("root", "/x.py", 1)], False) for i in range(4000)
    ]
    stacks.append(([Frame("hot", "/x.py", 1), Frame("root", "/x.py", 1)], True))
    stacks += [([Frame("hot", "/x.py", 1), Frame("root", "/x.py", 1)], False)] * 9
    svg, dropped = icicle(merge_stacks(stacks))
    drawn = svg.count("<g ")
    assert drawn <= MAX_NODES and drawn + dropped == 4000 + 3
    assert "<title>hot — /x.py: 10 threads</title>" in svg and 'class="trig"' in svg
