"""max_size: a core that fits the cap, keeping what pystack, py-spy and gdb need first."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROGRAMS, gencore_run_cmd, real_python, run, run_target, tool
from test_oracles import WORKER_FUNCS, thread_ids

import gencore

CAP = 16 << 20


@pytest.fixture(scope="module")
def capped(tmp_path_factory, stackmark_lib) -> dict:
    """The oracle program with 200 MiB more memory than the cap allows."""
    tmp = tmp_path_factory.mktemp("capped")
    data = run_target(tmp, stackmark_lib, max_size=CAP, ballast_mb=200)
    assert not data["errors"], data["errors"]
    return data


def test_capped_core_is_within_max_size_and_says_what_it_left_out(capped):
    core = capped["core"]
    assert os.path.getsize(core) <= CAP
    with gencore.open_core(core) as c:
        budget = c.capture["budget"]
        assert budget["max_size"] == CAP
        assert budget["omitted"] >= 200 << 20  # the ballast is not there
        assert budget["kept"]["stacks"] > 0 and budget["kept"]["python"] > 0
        assert budget["python_threads"] == 9 and budget["python_frames"] > 500
        omitted = budget["omitted_ranges"]
        assert omitted and all(lo < hi for lo, hi in omitted)
        # the PT_LOADs never overlap
        spans = sorted((m.start, m.end) for m in c.mappings)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        for lo, _hi in omitted[:50]:
            with pytest.raises(gencore.MemoryUnavailableError):
                c.read(lo, 8)
    info = run([sys.executable, "-m", "gencore", "info", core])
    assert info.returncode == 0, info.stderr
    assert re.search(r"capped:\s+max_size 16.0 MiB: kept .* omitted", info.stdout), info.stdout
    for name in ("stacks", "python", "elf_headers", "data", "other"):
        assert re.search(rf"^\s+\S+ \S+\s+{name}$", info.stdout, re.M), (name, info.stdout)


def test_omitted_anonymous_memory_is_in_no_pt_load(capped):
    """py-spy reads ``p_offset + (addr - p_vaddr)`` without checking ``p_filesz``: an
    omitted address inside a PT_LOAD reads whatever follows in the file, or past its end
    (a panic, exit 101). So anonymous memory's PT_LOADs hold exactly their data, and an
    omitted anonymous address is in no PT_LOAD (readers fail to read it)."""
    with gencore.open_core(capped["core"]) as c:
        nt_file = next(n.data for n in c.notes if n.type == gencore.analysis.reader.NT_FILE)
        count = struct.unpack_from("<Q", nt_file)[0]
        files = [struct.unpack_from("<QQ", nt_file, 16 + 24 * i) for i in range(count)]

        def in_file(lo: int, hi: int) -> bool:
            return any(s <= lo and hi <= e for s, e in files)

        # (PT_LOADs with nothing in the file are what the kernel writes too: memory that is
        # not dumpable, such as PROT_NONE reserves and guard pages)
        anon = [m for m in c.mappings if m.filesz and not in_file(m.start, m.end)]
        assert anon and all(m.filesz == m.size for m in anon), [
            (hex(m.start), m.size, m.filesz) for m in anon if m.filesz != m.size
        ][:5]
        omitted = [(lo, hi) for lo, hi in c.capture["budget"]["omitted_ranges"]]
        holes = [(lo, hi) for lo, hi in omitted if not in_file(lo, hi)]
        assert sum(hi - lo for lo, hi in holes) >= 200 << 20  # the ballast
        for lo, hi in holes:
            assert not any(m.start < hi and lo < m.end for m in c.mappings), (hex(lo), hex(hi))
        with pytest.raises(gencore.MemoryUnavailableError, match="max_size"):
            c.read(holes[0][0], 8)


def test_pystack_shows_every_python_stack_of_a_capped_core(capped):
    p = run([tool("pystack"), "core", capped["core"], real_python()])
    assert p.returncode == 0, p.stdout + p.stderr
    ids = thread_ids(capped)
    seen = set(int(t) for t in re.findall(r"^Traceback for thread (\d+)", p.stdout, re.M))
    assert seen == set(ids.values()), p.stdout[-3000:]
    for name, func in WORKER_FUNCS.items():
        block = p.stdout.split(f"Traceback for thread {ids[name]} ", 1)[1].split("\nTraceback", 1)[
            0
        ]
        assert f"in {func}" in block, (name, block[-2000:])
    assert p.stdout.count("in worker_recursive") == 501


def test_py_spy_and_gdb_read_a_capped_core(capped):
    p = run([tool("py-spy"), "dump", "--core", capped["core"]])
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(re.findall(r"^Thread ", p.stdout, re.M)) == 9, p.stdout
    assert "worker_recursive" in p.stdout and "worker_sleep" in p.stdout
    g = run(
        ["gdb", "-nx", "-batch", "-ex", "info threads", "-ex", "thread apply all bt"]
        + [real_python(), capped["core"]],
        timeout=600,
    )
    lwps = set(int(x) for x in re.findall(r"\(LWP (\d+)\)", g.stdout))
    assert lwps == set(thread_ids(capped).values()), g.stdout[-3000:]
    assert "stackmark_park" in g.stdout


def test_a_core_that_fits_is_not_trimmed(tmp_path):
    code = (
        "import gencore, json, sys\n"
        "p = gencore.create_core(sys.argv[1], max_size='4G')\n"
        "print(json.dumps({'core': str(p)}))\n"
    )
    r = run([sys.executable, "-c", code, str(tmp_path)])
    assert r.returncode == 0, r.stderr
    core = json.loads(r.stdout)["core"]
    with gencore.open_core(core) as c:
        assert "budget" not in c.capture
        # one PT_LOAD per mapping, as without max_size: they never touch inside a mapping
        assert len({m.start for m in c.mappings}) == len(c.mappings)
        assert sum(m.filesz for m in c.mappings) > 4 << 20


@pytest.mark.parametrize("bad", [0, -1, "abc", 4096, "16K"])
def test_impossible_max_size_is_a_value_error_before_any_fork(tmp_path, bad):
    with pytest.raises(ValueError, match="max_size") as e:
        gencore.create_core(tmp_path, max_size=bad)
    if bad in (4096, "16K"):
        assert "need: pass at least that" in str(e.value) or "bytes) this process" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_a_signal_core_with_max_size_and_zstd(tmp_path):
    cap = 24 << 20
    program = str(PROGRAMS / "triggered.py")
    cmd = gencore_run_cmd(
        program, tmp_path, "--max-size", "24M", "--compress", "zstd", mode="stuck"
    )
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = json.loads(p.stdout.readline())["ready"]
        r = run(
            [sys.executable, "-m", "gencore", "trigger", str(pid), "--wait", "--timeout", "120"]
        )
        assert r.returncode == 0, r.stdout + r.stderr
        zst = r.stdout.split()[0]
        assert zst.endswith(".core.zst")
    finally:
        p.kill()
        p.wait()
    plain = tmp_path / "plain.core"
    z = run([tool("zstd"), "-d", "-q", zst, "-o", str(plain)])
    assert z.returncode == 0, z.stderr
    assert plain.stat().st_size <= cap
    out = run([tool("pystack"), "core", str(plain), real_python()]).stdout
    assert len(re.findall(r"^Traceback for thread", out, re.M)) >= 5, out[-3000:]
    assert "stuck_in_c" in out and out.count("in spin") >= 4
    with gencore.open_core(zst) as c:
        assert c.capture["budget"]["max_size"] == cap
        assert Path(zst) == c.source
