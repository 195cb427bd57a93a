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
    # each new order holds a new float; a few floats of the dumping code's own frames (whose
    # locals the census reads) differ between the two cores
    assert types["float"]["count"] >= 1000 - 10
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


# -- why memory is kept (tests/programs/heapwhy.py) -------------------------------------------

WHY = str(PROGRAMS / "heapwhy.py")


def why(tmp_path_factory, mode: str) -> dict:
    d = tmp_path_factory.mktemp(f"why-{mode}")
    p = run([sys.executable, WHY, mode, str(d)], timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def heap_cli(*args: str, code: int = 0) -> str:
    p = run([sys.executable, "-m", "gencore", "heap", *args])
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    return why(tmp_path_factory, "zoo")


def test_sizes_are_those_of_getsizeof_for_every_type(zoo):
    """Every object of the zoo (150+ types) and every object gc.get_objects() returned: the
    census's size is sys.getsizeof's where the census can know it, and unknown where the
    __sizeof__ that applies is one it cannot read (a class's own, an extension's)."""
    truth = zoo["truth"]
    assert truth["zoo_types"] >= 150
    zoo_ids = set(truth["zoo"])
    wrong, unknown_ok = [], set()
    with gencore.open_core(zoo["core"]) as core:
        census = core.heap()
        for addr, name, size, known in truth["records"]:
            o = census.object(addr)
            if o.type != name or (known and o.bytes != size) or (not known and o.bytes is not None):
                wrong.append((name, size, o.type, o.bytes, addr in zoo_ids))
            if not known:
                unknown_ok.add(name)
        dumped = sum(m.filesz for m in core.mappings)
    assert not wrong, wrong[:20]
    assert {"WithSizeof", "decimal.Decimal"} & {n.split(".")[-1] for n in unknown_ok}
    # generators, coroutines and async generators with their frames inline (3.11+): the
    # parked ones exactly (above), and the totals at least theirs and nowhere near absurd
    for kind in ("generator", "coroutine", "async_generator"):
        stat = census.get(kind)
        assert stat is not None and stat.bytes >= truth[f"{kind}_bytes"]
        assert stat.bytes < 4 * truth[f"{kind}_bytes"]
    assert 0 < census.bytes <= dumped
    assert census.unreadable == 0


@pytest.mark.slow
def test_native_and_pure_walkers_agree(zoo):
    """The same answers from the C walker and the pure-Python one (the pure wheel's)."""
    out = {}
    for engine in ("native", "pure"):
        with gencore.open_core(zoo["core"]) as core:
            c = core.heap(largest=5, engine=engine)
            assert c.engine == engine
            r = c.retained(top=15)
            out[engine] = {
                "census": c.to_json(),
                "retained": r.to_json(),
                "suspects": [s.to_json() for s in c.suspects(0.01)],
                "duplicates": [d.to_json() for d in c.duplicates(top=10)],
                "paths": [str(c.path_to(o.address)) for o in r.objects[:8]]
                + [str(c.path_to(t)) for t in ("heapzoo.Slotted", "collections.deque")],
                "referrers": c.referrers("list").to_json(),
            }
    for key in out["native"]:
        assert out["native"][key] == out["pure"][key], key


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    return why(tmp_path_factory, "roots")


def test_retained_bytes_are_what_the_process_frees(roots):
    """Five roots (a cache dict of lists sharing one 50 MB bytes object, a class-level
    registry, a closure cell, a thread-local, a frame local): the retained bytes are what the
    process finds only each one keeps (by reference counts, before its core; 3.13's
    thread-local keeps a 24-byte object through fields gencore does not read), and within 2%
    of guppy3's domisize."""
    truth = roots["truth"]
    if sys.version_info < (3, 15):  # guppy3 does not build on 3.15 yet (see the README)
        assert roots["guppy"], "guppy3 is an oracle of this test: pip install guppy3"
    with gencore.open_core(roots["core"]) as core:
        census = core.heap()
        got = census.retained_of([v["id"] for v in truth.values()])
    for (name, t), mine in zip(truth.items(), got):
        assert abs(mine - t["alone"]) <= 0.001 * t["alone"], (name, mine, t)
        if "guppy" in t:
            assert abs(mine - t["guppy"]) <= 0.02 * t["guppy"], (name, mine, t["guppy"])
    assert truth["cache"]["alone"] > 50 << 20  # the shared bytes object is the cache's


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    return why(tmp_path_factory, "paths")


def test_paths_start_at_a_real_root_and_every_edge_is_real(paths):
    """The program asked gencore heap --path about three objects after its core and checked
    each edge with gc.get_referents in the live process."""
    res = paths["results"]
    roots = {
        "cache": "module __main__ global CACHE",
        "closure": "module __main__ global handler",
        "frame": "frame hold_pending() local 'pending'",
    }
    for key, root in roots.items():
        path = res[key]["path"]
        assert path is not None, res[key]
        assert root in path["root"], path
        assert path["target"] == int(paths["truth"]["targets"][key], 16)
        assert res[key]["check"]["root_ok"] and all(res[key]["check"]["edges"]), res[key]
    edges = [s["edge"] for s in res["cache"]["path"]["steps"]]
    assert edges == ["['users']", "[7]", None]
    text = heap_cli(paths["core"], "--path", paths["truth"]["targets"]["cache"])
    assert text.startswith("module __main__ global CACHE -> dict['users'] -> list[7] -> ")
    assert "__main__.Session at 0x" in text
    by_type = heap_cli(paths["core"], "--path", "__main__.Session")
    assert " -> __main__.Session at 0x" in by_type
    heap_cli(paths["core"], "--path", "no.such.Type", code=1)


def test_duplicates_count_exactly_the_copies(tmp_path_factory):
    out = why(tmp_path_factory, "dups")
    doc = json.loads(heap_cli(out["core"], "--duplicates", "--json"))
    by_type = {d["type"]: d for d in doc["duplicates"][:2]}
    s, b = by_type["str"], by_type["bytes"]
    assert s["count"] == 10_000 and s["bytes"] == out["truth"]["str_size"]
    assert s["wasted"] == 9_999 * out["truth"]["str_size"]
    assert b["count"] == 3_000 and b["wasted"] == 2_999 * out["truth"]["bytes_size"]
    assert all("value" not in d for d in doc["duplicates"])
    shown = json.loads(heap_cli(out["core"], "--duplicates", "--json", "--show-values"))
    assert shown["duplicates"][0]["value"].startswith("'ddd")


def test_suspects_name_the_cache_and_what_it_holds(tmp_path_factory):
    out = why(tmp_path_factory, "leak")
    doc = json.loads(heap_cli(out["core"], "--suspects", "--json"))
    first = doc["suspects"][0]
    assert first["kind"] == "object" and first["address"] == out["truth"]["cache"]
    assert first["holds"] == {
        "type": "__main__.Session",
        "count": out["truth"]["sessions"],
        "retained": first["holds"]["retained"],
    }
    assert first["share"] >= 0.10
    assert first["path"]["root"] == "module __main__ global SESSIONS"
    text = heap_cli(out["core"], "--suspects")
    assert "mostly in 40,000 __main__.Session" in text
    ret = json.loads(heap_cli(out["core"], "--retained", "--json", "--top", "3"))
    assert set(ret) >= {"roots", "reachable", "garbage", "types", "objects"}
    # the cache among the objects retaining most (with what holds it: module, sys.modules)
    assert out["truth"]["cache"] in {o["address"] for o in ret["objects"]}
    assert {"type", "count", "bytes", "retained"} == set(ret["types"][0])
    # the cycles no root reaches
    assert ret["garbage"]["objects"] >= 5000
    assert out["truth"]["garbage_bytes"] <= ret["garbage"]["bytes"]
    assert ret["garbage"]["bytes"] < out["truth"]["garbage_bytes"] + (64 << 10)


def test_a_subinterpreter_is_censused_apart(tmp_path_factory):
    out = why(tmp_path_factory, "subinterp")
    main = json.loads(heap_cli(out["core"], "--json"))
    assert main["interpreters"] == 2 and main["interpreter"] == 0
    assert "__main__.SubThing" not in {t["type"] for t in main["types"]}
    text = heap_cli(out["core"])
    assert "interpreter 0 (2 interpreters in all)" in text and "holds 2 interpreters" in text
    sub = json.loads(heap_cli(out["core"], "--json", "--interpreter", str(out["truth"]["id"])))
    things = {t["type"]: t for t in sub["types"]}["__main__.SubThing"]
    assert sub["interpreter"] == out["truth"]["id"] and things["count"] == 5000
    path = heap_cli(out["core"], "--path", "__main__.SubThing", "--interpreter", "1")
    assert path.startswith("module __main__ global things -> list[")
    heap_cli(out["core"], "--interpreter", "99", code=1)


def test_a_capped_core_says_what_it_could_not_see(tmp_path_factory):
    out = why(tmp_path_factory, "capped")
    doc = json.loads(heap_cli(out["core"], "--json"))
    # what the cap kept is counted (how much of the heap it kept depends on the version)
    assert doc["omitted_bytes"] > 50 << 20 and doc["lists_cut"] >= 1 and doc["objects"] > 0
    assert "max_size left" in heap_cli(out["core"])
    heap_cli(out["core"], "--retained", "--json")


def questions(path: str, engine: str) -> str:
    """Every question of a leak hunt on one core; 'ok' or the error's kind."""
    with gencore.open_core(path) as core:
        try:
            c = core.heap(largest=3, show_values=True, engine=engine)
            r = c.retained(top=5)
            for o in r.objects[:2]:
                c.path_to(o.address)
            c.suspects()
            c.duplicates(top=5, show_values=True)
            c.referrers("str")
            return "ok"
        except gencore.CoreFormatError:
            return "format"
        except gencore.HeapUnavailableError:
            return "unavailable"


@pytest.mark.slow
def test_fuzz_damaged_objects_give_answers_or_clear_errors(tmp_path_factory, tmp_path):
    """Damaged objects (links, types, sizes, items): every question answers, or says the
    core is damaged (CoreFormatError) or has no heap to walk; with both walkers."""
    import os
    import random
    import signal
    import struct

    from gencore.analysis.heapwalk import Walker

    seed = why(tmp_path_factory, "dups")["core"]
    with gencore.open_core(seed) as core:
        w = Walker(core)
        w.walk()
        offsets = [w.rd.offset(a - 16, 48) for a in w.by_offset() if w.rd.readable(a - 16, 48)]
        w.close()
    target = str(tmp_path / "fuzzed.core")
    with open(seed, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    rnd = random.Random(2026)
    outcomes: dict[str, int] = {}

    def hang(*_):
        raise TimeoutError("no answer within 60 s")

    old = signal.signal(signal.SIGALRM, hang)
    fd = os.open(target, os.O_RDWR)
    try:
        for case in range(30):
            patches = []
            for _ in range(rnd.randint(1, 8)):
                off = rnd.choice(offsets) + 8 * rnd.randint(0, 5)
                val = rnd.choice([0, 1, 8, 2**64 - 1, 1 << 40, 1 << 62, rnd.getrandbits(64)])
                patches.append((off, os.pread(fd, 8, off)))
                os.pwrite(fd, struct.pack("<Q", val), off)
            signal.alarm(60)
            try:
                for engine in ("native", "pure") if case % 5 == 0 else ("native",):
                    r = questions(target, engine)
                    outcomes[r] = outcomes.get(r, 0) + 1
            finally:
                signal.alarm(0)
                for off, old_bytes in reversed(patches):
                    os.pwrite(fd, old_bytes, off)
    finally:
        os.close(fd)
        signal.signal(signal.SIGALRM, old)
    assert sum(outcomes.values()) == 36 and outcomes.get("ok", 0) > 0, outcomes


@pytest.mark.slow
def test_fuzz_layout_in_the_note(tmp_path_factory):
    """A wrong heap layout in the note (its newer parts: sizes, frames, containers, fields
    followed, roots) gives answers or clear errors with both walkers."""
    import random

    seed = why(tmp_path_factory, "dups")["core"]
    rnd = random.Random(7)
    outcomes: dict[str, int] = {}
    with gencore.open_core(seed) as core:
        heap = core.metadata["heap"]
        fields = [(s, k) for s in ("sizes", "containers", "roots") for k in heap.get(s, {})]
        fields += [("frames", k) for k, v in heap.get("frames", {}).items() if isinstance(v, int)]
        fields += [("follow", k) for k in list(heap.get("follow", {}))[:20]]
    for case in range(24):
        section, key = rnd.choice(fields)
        value = rnd.choice([0, 8, -1, 1 << 40, "x", None, [[8, "y"]], {"a": 1}])
        with gencore.open_core(seed) as core:
            core.metadata["heap"][section][key] = value
            for engine in ("native", "pure") if case % 6 == 0 else ("native",):
                try:
                    c = core.heap(engine=engine)
                    c.retained(top=3)
                    c.suspects()
                    r = "ok"
                except gencore.CoreFormatError:
                    r = "format"
                except gencore.HeapUnavailableError:
                    r = "unavailable"
                outcomes[r] = outcomes.get(r, 0) + 1
    assert outcomes.get("ok", 0) > 0, outcomes
