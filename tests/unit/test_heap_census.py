"""The census arithmetic users read: --since differences, JSON shape, ordering."""

from __future__ import annotations

from gencore.analysis.heap import Census, TypeStat


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
