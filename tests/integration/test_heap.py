"""gencore heap: the census of a core against what the process itself counted at snapshot time
(gc.get_objects() per type, the distinct objects it holds), from every way of taking a core."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import PROGRAMS, run

import gencore

HEAPY = str(PROGRAMS / "heapy.py")


def take(tmp_path, mode: str, **counts: int) -> dict:
    p = run([sys.executable, HEAPY, mode, str(tmp_path), json.dumps(counts)], timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def heap_json(*args: str) -> dict:
    p = run([sys.executable, "-m", "gencore", "heap", "--json", *args])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def check_census(census: dict, truth: dict) -> None:
    types = {t["type"]: t for t in census["types"]}
    # every instance of the program's own class, exactly (they are all GC-tracked)
    assert types["__main__.Order"]["count"] == truth["gc_types"]["__main__.Order"]
    assert types["__main__.Order"]["count"] == truth["orders"] >= 20_000
    # every float the program holds (untracked: found through the list, the attributes and
    # the __slots__ of Quote)
    assert types["float"]["count"] >= truth["floats"]
    assert types["float"]["bytes"] == types["float"]["count"] * 24
    # all the big bytes objects, and bytes is the largest type
    assert types["bytes"]["count"] >= truth["blobs"]
    assert types["bytes"]["bytes"] >= truth["blob_bytes"]
    assert census["types"][0]["type"] == "bytes"
    assert [t["bytes"] for t in census["types"]] == sorted(
        (t["bytes"] for t in census["types"]), reverse=True
    )
    # GC-tracked types are never undercounted: the walk sees every tracked object
    for name, count in truth["gc_types"].items():
        assert types.get(name, {"count": 0})["count"] >= count, name
    assert census["tracked"] >= sum(truth["gc_types"].values())
    assert census["unreadable"] == 0
    assert census["objects"] == sum(t["count"] for t in census["types"])
    assert 0 < census["bytes"] <= census["anon_bytes"] + (64 << 20)


@pytest.fixture(scope="module")
def two_cores(tmp_path_factory) -> dict:
    return take(tmp_path_factory.mktemp("heap"), "create")


@pytest.fixture(scope="module")
def censuses(two_cores) -> list[dict]:
    return [heap_json(core, "--largest", "3") for core in two_cores["cores"]]


def test_census_counts_what_the_process_counted(two_cores, censuses):
    for doc, truth in zip(censuses, two_cores["truth"]):
        assert doc["python"] == ".".join(map(str, sys.version_info[:3]))
        check_census(doc, truth)


def test_since_shows_exactly_the_added_instances(two_cores):
    old, new = two_cores["cores"]
    doc = heap_json(new, "--since", old)
    types = {t["type"]: t for t in doc["types"]}
    assert types["__main__.Order"]["count"] == 1000
    assert types["__main__.Order"]["old_count"] == 123_457
    assert types["float"]["count"] >= 1000
    assert "bytes" not in types or types["bytes"]["count"] < 10
    text = run([sys.executable, "-m", "gencore", "heap", new, "--since", old])
    assert text.returncode == 0, text.stderr
    line = next(ln for ln in text.stdout.splitlines() if ln.endswith("__main__.Order"))
    assert line.split()[0] == "+1,000"


def test_referrers_name_the_list_that_holds_them(two_cores):
    doc = heap_json(two_cores["cores"][0], "--referrers", "__main__.Order")
    assert doc["type"] == "__main__.Order" and doc["objects"] == 123_457
    assert doc["referrers"][0] == {"type": "list", "count": 123_457}
    floats = heap_json(two_cores["cores"][0], "--referrers", "float")
    holders = {r["type"]: r["count"] for r in floats["referrers"]}
    assert holders["list"] >= 300_000
    if sys.version_info >= (3, 11):  # attributes live in the instance (values or inline)
        assert holders["__main__.Order"] == 123_457
    else:  # attributes live in each instance's __dict__
        assert holders["dict"] >= 123_457


def test_largest_objects_and_values_only_when_asked(two_cores, censuses):
    core, doc = two_cores["cores"][0], censuses[0]
    assert len(doc["largest"]) == 3 and all("value" not in o for o in doc["largest"])
    assert doc["largest"][0]["type"] == "list"  # the 300,000 floats' list: 2.4 MB of items
    with gencore.open_core(core) as c:
        big = c.heap(largest=500, show_values=True).largest
    blobs = [o for o in big if o.type == "bytes" and o.bytes >= 100 * 1024]
    assert len(blobs) >= 400
    assert all(o.value is not None and o.value[:2] in ("b'", 'b"') for o in blobs)


def test_python_api(two_cores):
    old_path, new_path = two_cores["cores"]
    with gencore.open_core(new_path) as new, gencore.open_core(old_path) as old:
        census = new.heap()
        rows = list(census)
        assert rows[0][0] == "bytes" and all(len(r) == 3 for r in rows)
        diff = {d.type: d for d in census.since(old.heap())}
        assert diff["__main__.Order"].count == 1000
        assert diff["__main__.Order"].status == "changed"
        refs = census.referrers("__main__.Order")
        assert refs.referrers[0] == ("list", 124_457)


@pytest.mark.parametrize("mode", ["trigger", "bundle"])
def test_trigger_cores_and_bundles(tmp_path, mode):
    # smaller than the create_core cores: what is checked here is the way the core was taken
    out = take(tmp_path, mode, orders=20_000, floats=50_000, blobs=40)
    assert len(out["cores"]) == 1, out
    check_census(heap_json(out["cores"][0]), out["truth"][0])


def test_kernel_core_says_why_it_has_no_census(tmp_path):
    code = f"import gencore; print(gencore.create_core({str(tmp_path)!r}, method='kernel'))"
    p = run([sys.executable, "-c", code])
    assert p.returncode == 0, p.stderr
    h = run([sys.executable, "-m", "gencore", "heap", p.stdout.strip()])
    assert h.returncode == 1
    assert "no heap layout" in h.stderr and "Traceback" not in h.stderr
