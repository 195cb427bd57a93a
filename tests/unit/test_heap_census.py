"""The census arithmetic users read (--since differences, JSON shapes, ordering) and the
definitions of the graph answers (dominators, roots, garbage, paths, suspects) on small
graphs."""

from __future__ import annotations

from types import SimpleNamespace

from gencore.analysis import heaptypes
from gencore.analysis.heap import Census, TypeStat
from gencore.analysis.heapgraph import SUPER, Graph
from gencore.analysis.heappath import HeapPath, PathStep
from gencore.analysis.heapresults import Duplicate, Retained, RetainedType, Suspect


def census(*rows: tuple[str, int, int]) -> Census:
    types = sorted((TypeStat(*r) for r in rows), key=lambda t: (-t.bytes, t.type))
    return Census("3.12.1", sum(t.count for t in types), sum(t.bytes for t in types), 10**9, types)


def test_since_lists_growth_first_with_new_and_vanished_types():
    old = census(("dict", 100, 10_000), ("__main__.Gone", 5, 400), ("str", 50, 3_000))
    new = census(("dict", 150, 16_000), ("__main__.Order", 1000, 56_000), ("str", 50, 3_000))
    diffs = new.since(old)
    assert [(d.type, d.count, d.bytes, d.status) for d in diffs] == [
        ("__main__.Order", 1000, 56_000, "new"),
        ("dict", 50, 6_000, "changed"),
        ("__main__.Gone", -5, -400, "vanished"),
    ]  # unchanged types (str) are left out


def test_json_shape_and_iteration():
    c = census(("bytes", 400, 41_000_000), ("float", 300_000, 7_200_000))
    doc = c.to_json(top=1)
    assert doc["python"] == "3.12.1" and doc["objects"] == 300_400
    assert doc["bytes"] == 48_200_000 and doc["anon_bytes"] == 10**9
    assert doc["types"] == [{"type": "bytes", "count": 400, "bytes": 41_000_000}]
    assert list(c) == [("bytes", 400, 41_000_000), ("float", 300_000, 7_200_000)]
    assert c.get("float") == TypeStat("float", 300_000, 7_200_000) and c.get("x") is None


# -- the graph answers' definitions, on small graphs (heapgraph.Graph, the pure engine) -----


class FakeWalker:
    """Objects 1..n of 100 bytes each (address = 16 * number), edges and reference counts
    given; what heapgraph.Graph reads of a walker."""

    minor = 12

    def __init__(self, edges: dict[int, list[int]], refcounts: dict[int, int], n: int):
        self.edges = {16 * a: [16 * b for b in bs] for a, bs in edges.items()}
        kind = heaptypes.TypeInfo(1, "thing", 0, 16, 0, index=0)
        self.nodes = {16 * i: kind for i in range(1, n + 1)}
        self.rc = {16 * i: refcounts.get(i, 1) for i in range(1, n + 1)}
        self.layout = SimpleNamespace(roots={})

    def by_offset(self):
        return iter(sorted(self.nodes))

    def header(self, a):
        return self.rc[a], 1, 0

    def size_of(self, a, info, ob_size):
        return 100

    def referents(self, a, info, ob_size):
        return list(self.edges.get(a, []))


def graph(edges, refcounts, n, roots=(1,)):
    return Graph(FakeWalker(edges, refcounts, n), [16 * r for r in roots])  # type: ignore[arg-type]


def test_dominators_and_retained_sizes():
    # 1 -> 2, 1 -> 3, 2 -> 4, 3 -> 4, 4 -> 5: 4 and 5 are freed only with 1
    g = graph({1: [2, 3], 2: [4], 3: [4], 4: [5]}, {4: 2}, 5)
    idom = {g.order[i] // 16: (g.idom[i] if g.idom[i] == SUPER else g.order[g.idom[i]] // 16)
            for i in range(5)}  # fmt: skip
    assert idom == {1: SUPER, 2: 1, 3: 1, 4: 1, 5: 4}
    ret = {g.order[i] // 16: g.retained[i] for i in range(5)}
    assert ret == {1: 500, 2: 100, 3: 100, 4: 200, 5: 100}
    assert g.garbage() == (0, 0)


def test_objects_held_from_elsewhere_are_roots_and_cycles_without_are_garbage():
    # 2's count says something the walk does not read holds it too; 3 <-> 4 is a cycle only
    g = graph({1: [2], 3: [4], 4: [3]}, {2: 2}, 4)
    roots = sorted(g.order[i] // 16 for i in g.roots)
    assert roots == [1, 2]
    assert g.garbage() == (2, 200)


def test_paths_are_shortest_from_the_explicit_roots_first():
    # 5 is reached from root 1 in three steps, from 2 (held elsewhere) in one
    g = graph({1: [3], 3: [4], 4: [5], 2: [5]}, {2: 2}, 5)
    path = [g.order[i] // 16 for i in g.path(g.index[16 * 5])]
    assert path == [1, 3, 4, 5]


def test_suspects_an_accumulation_point_and_a_group():
    # 2 holds 3..12 (ten objects): 2 is a suspect and its memory is the group of ten
    edges = {1: [2], 2: list(range(3, 13))}
    g = graph(edges, {}, 12)
    found = g.suspects(threshold=300)
    kinds = [(g.order[o] // 16 if o != SUPER else 0, c, r) for o, _, c, r, _ in found]
    assert kinds == [(2, 0, 1100), (2, 10, 1000)]


def test_answers_json_shapes():
    path = HeapPath(
        "module __main__ global CACHE",
        [PathStep(0x10, "dict", "['users']"), PathStep(0x20, "list", "[7]"),
         PathStep(0x30, "__main__.Session", None)],
    )  # fmt: skip
    assert str(path) == (
        "module __main__ global CACHE -> dict['users'] -> list[7] -> __main__.Session at 0x30"
    )
    assert path.to_json()["target"] == 0x30 and len(path.to_json()["steps"]) == 3
    r = Retained([RetainedType("dict", 2, 500, 9000)], [], 3, 10, 9000, 1, 64)
    doc = r.to_json()
    assert doc["garbage"] == {"objects": 1, "bytes": 64}
    assert doc["types"] == [{"type": "dict", "count": 2, "bytes": 500, "retained": 9000}]
    s = Suspect("object", "dict", 1, 9000, 0.9, 0x10, None, None, path, ("list", 10, 8000))
    assert s.to_json()["holds"] == {"type": "list", "count": 10, "retained": 8000}
    d = Duplicate("str", 10_000, 1065, 9_999 * 1065, 0x40)
    assert "value" not in d.to_json() and d.to_json()["wasted"] == 10_648_935
