"""All threads, every tool: pystack, py-spy, gdb and elfutils read our core of a live process."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from conftest import pystack_can_merge, python_gdb_script, real_python, run, tool

WORKER_FUNCS = {
    "sleeper": "worker_sleep",
    "locker": "worker_lock",
    "selecter": "worker_select",
    "receiver": "worker_recv",
    "busy": "worker_busy",
    "cblocked": "worker_cblocked",
    "recursive": "worker_recursive",
}


def thread_ids(core: dict) -> dict[str, int]:
    ids = {name: t["native_id"] for name, t in core["threads"].items()}
    ids["MainThread"] = core["main_native_id"]
    ids["snapshotter"] = core["snapshotter_native_id"]
    return ids


def thread_idents(core: dict) -> dict[str, int]:
    """pthread_t of each thread: what py-spy prints before Python 3.11."""
    ids = {name: t["ident"] for name, t in core["threads"].items()}
    ids["MainThread"] = core["main_ident"]
    ids["snapshotter"] = core["snapshotter_ident"]
    return ids


def blocks(text: str, header: str) -> dict[int, str]:
    """Split tool output into {tid: block} on lines matching header (with a tid group)."""
    out: dict[int, str] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(header, line)
        if m:
            g = m.group(1)
            cur = int(g, 16) if g.startswith("0x") else int(g)
            out.setdefault(cur, "")
        elif cur is not None:
            out[cur] += line + "\n"
    return out


def test_target_ran_cleanly(target_core):
    assert target_core["errors"] == []
    states = dict(target_core["report"]["threads"])
    assert len(states) == 9, states  # main + 7 workers + the snapshotter
    assert set(states.values()) == {"caller", "parked"}


def test_pystack_sees_every_thread(target_core):
    p = run([tool("pystack"), "core", target_core["core"], real_python()])
    assert p.returncode == 0, p.stderr
    per_thread = blocks(p.stdout, r"Traceback for thread (\d+)")
    ids = thread_ids(target_core)
    assert set(per_thread) == set(ids.values()), p.stdout
    for name, func in WORKER_FUNCS.items():
        assert f"in {func}" in per_thread[ids[name]], (name, per_thread[ids[name]])
    assert "in main_wait" in per_thread[ids["MainThread"]]
    assert per_thread[ids["recursive"]].count("in worker_recursive") == 501
    assert "generated on demand" in p.stdout


def test_pystack_native_merges_every_thread(target_core):
    p = run([tool("pystack"), "core", "--native", target_core["core"], real_python()])
    assert p.returncode == 0, p.stderr
    per_thread = blocks(p.stdout, r"Traceback for thread (\d+)")
    assert len(per_thread) == 9
    ids = thread_ids(target_core)
    merged = "Unable to merge native stack" not in p.stdout + p.stderr
    if not pystack_can_merge() and not merged:
        # a stripped interpreter: pystack's own stated limit, the same on kernel cores; the
        # C frames are checked with gdb and eu-stack instead. (Debian's arm64 python3.X is
        # stripped too, yet pystack merges there: what it needs is in the dynamic symbols.)
        for tid, text in per_thread.items():
            assert "insufficient native information" in text, (tid, text)
            assert "(Python) File" in text, (tid, text)
        return
    assert merged, p.stdout + p.stderr
    assert "stackmark_park" in per_thread[ids["cblocked"]]
    for name, func in WORKER_FUNCS.items():
        assert f"in {func}" in per_thread[ids[name]], (name, per_thread[ids[name]])
    for tid, text in per_thread.items():
        assert "(C) File" in text, tid


def test_py_spy_names_and_version(target_core):
    p = run([tool("py-spy"), "dump", "--core", target_core["core"]])
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"Python v{target_core['python_version']}" in p.stdout
    threads = blocks(p.stdout, r"Thread (0x[0-9A-F]+|\d+)")
    ids = thread_ids(target_core)
    if all(isinstance(k, int) and k < (1 << 32) for k in threads):
        label = {name: str(tid) for name, tid in ids.items()}
    else:  # Python < 3.11 has no native thread id in its thread state: py-spy shows pthread_t
        label = {name: f"0x{ident:X}" for name, ident in thread_idents(target_core).items()}
    assert len(threads) == len(label), p.stdout
    for name, lab in label.items():
        assert re.search(rf"^Thread {lab}( \(\w+\))?: \"{name}\"", p.stdout, re.M), (name, p.stdout)
    text = {
        name: p.stdout.split(f"Thread {lab}", 1)[1].split("\nThread ", 1)[0]
        for name, lab in label.items()
    }
    for name, func in WORKER_FUNCS.items():
        assert func in text[name], name


def test_gdb_backtraces_and_py_bt(target_core):
    py_bt = ["-ex", "thread apply all py-bt"] if python_gdb_script() is not None else []
    p = run(
        [
            "gdb",
            "-nx",
            "-batch",
            "-iex",
            "set auto-load safe-path /",
            "-ex",
            "info threads",
            "-ex",
            "thread apply all bt",
            *py_bt,
            real_python(),
            target_core["core"],
        ],
        timeout=600,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    ids = thread_ids(target_core)
    lwps = set(
        int(x) for x in re.findall(r"^\*?\s*\d+\s+Thread 0x[0-9a-f]+ \(LWP (\d+)\)", out, re.M)
    )
    assert lwps == set(ids.values()), out[:3000]
    assert "Couldn't find general-purpose registers" not in out
    bts = blocks(out, r"^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)\)")
    for tid in ids.values():
        frames = re.findall(r"^#\d+ ", bts[tid], re.M)
        assert len(frames) >= 3, (tid, bts[tid][:2000])
    assert "stackmark_park" in bts[ids["cblocked"]]
    if python_gdb_script() is not None:
        for name, func in WORKER_FUNCS.items():
            assert f"in {func}" in bts[ids[name]], (name, bts[ids[name]][-3000:])


def test_eu_stack_unwinds_every_thread(target_core):
    p = run([tool("eu-stack"), "--core", target_core["core"], "--executable", real_python()])
    out = p.stdout + p.stderr
    per = blocks(out, r"^TID (\d+):")
    assert set(per) == set(thread_ids(target_core).values()), out[:2000]
    for tid, text in per.items():
        assert len(re.findall(r"^#\d+ ", text, re.M)) >= 3, (tid, text)


# The notes the kernel writes after each thread's NT_PRSTATUS (names as eu-readelf prints them),
# as far as a snapshot can know them; the kernel-reference test below compares with the kernel.
THREAD_NOTES = {
    "x86_64": ["FPREGSET", "X86_XSTATE"],
    "aarch64": ["FPREGSET", "ARM_TLS", "ARM_SYSTEM_CALL"],
}
# aarch64 notes of the kernel's core that a snapshot leaves out: the hardware breakpoint and
# watchpoint slots (debugger state), SVE/SME state beyond the V registers, the PAC keys.
KERNEL_ONLY_NOTES = {0x402, 0x403, 0x405, 0x407, 0x408, 0x40B, 0x40C, 0x40D, 0x40E, 0x40F}


ARM_NOTE_NAMES = {
    f"<unknown>: {n}": name
    for n, name in (
        (0x401, "ARM_TLS"),
        (0x404, "ARM_SYSTEM_CALL"),
        (0x406, "ARM_PAC_MASK"),
        (0x409, "ARM_TAGGED_ADDR_CTRL"),
        (0x40A, "ARM_PAC_ENABLED_KEYS"),
    )
}


def thread_notes(kinds: list[str]) -> list[str]:
    """What follows PRSTATUS here: FP notes, TLS, system call, and PAC / tagged-address notes
    where the CPU has them."""
    want = THREAD_NOTES[os.uname().machine]
    extra = [k for k in kinds if k.startswith("ARM_PAC") or k == "ARM_TAGGED_ADDR_CTRL"]
    order = ["ARM_PAC_MASK", "ARM_PAC_ENABLED_KEYS", "ARM_TAGGED_ADDR_CTRL"]
    return want + [k for k in order if k in extra]


def test_thirteen_threads_in_every_reader(tmp_path):
    """A 13-thread process: gdb, eu-stack, gencore stacks, pystack and py-spy each see every
    thread, each in its own Python function."""
    import json
    import subprocess

    from conftest import PROGRAMS

    p = subprocess.run(
        [sys.executable, str(PROGRAMS / "scenario.py"), "many_threads"]
        + [json.dumps({"dir": str(tmp_path), "n": 13})],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    core, tids = r["core"], set(r["tids"])
    assert len(tids) == 13
    g = run(["gdb", "-nx", "-batch", "-ex", "info threads", real_python(), core], timeout=600)
    lwps = set(int(x) for x in re.findall(r"\(LWP (\d+)\)", g.stdout))
    assert g.returncode == 0 and lwps == tids, g.stdout + g.stderr
    e = run([tool("eu-stack"), "--core", core, "--executable", real_python()])
    assert set(blocks(e.stdout + e.stderr, r"^TID (\d+):")) == tids, e.stdout + e.stderr
    st = run([sys.executable, "-m", "gencore", "stacks", core])
    assert st.returncode == 0, st.stderr
    ps = run([tool("pystack"), "core", core, real_python()])
    assert ps.returncode == 0, ps.stderr
    assert set(blocks(ps.stdout, r"Traceback for thread (\d+)")) == tids, ps.stdout
    spy = run([tool("py-spy"), "dump", "--core", core])
    assert spy.returncode == 0, spy.stderr
    assert len(re.findall(r"^Thread ", spy.stdout, re.M)) == 13, spy.stdout
    for i in range(12):
        for name, out in (
            ("gencore stacks", st.stdout),
            ("pystack", ps.stdout),
            ("py-spy", spy.stdout),
        ):
            assert f"thread_body_{i}" in out, (name, i, out)


def test_note_order_is_the_kernels(target_core):
    p = run([tool("eu-readelf"), "-n", target_core["core"]])
    assert p.returncode == 0, p.stderr
    found = re.findall(r"^\s+(CORE|LINUX|GENCORE)\s+(\d+)\s+(<unknown>: \d+|\S+)", p.stdout, re.M)
    # notes older elfutils has no name for: by number
    notes = [(o, n, ARM_NOTE_NAMES.get(t, t)) for o, n, t in found]
    kinds = [t for _, _, t in notes]
    sizes = {t: int(s) for _, s, t in notes}
    per = thread_notes(kinds)
    assert kinds[: 5 + len(per)] == ["PRSTATUS", "PRPSINFO", "SIGINFO", "AUXV", "FILE", *per]
    rest = kinds[5 + len(per) :]
    n = 1 + len(per)
    for i in range(8):  # every other thread: PRSTATUS and its notes
        assert rest[i * n : i * n + n] == ["PRSTATUS", *per], rest
    arm = os.uname().machine == "aarch64"
    assert sizes["PRSTATUS"] == (392 if arm else 336)
    assert sizes["PRPSINFO"] == 136 and sizes["SIGINFO"] == 128
    assert sizes["FPREGSET"] == (528 if arm else 512)
    owners = [o for o, _, _ in notes]
    assert owners[-2:] == ["GENCORE", "GENCORE"]


def test_program_headers_and_build_ids(target_core):
    p = run([tool("eu-readelf"), "-l", target_core["core"]])
    lines = [ln.split() for ln in p.stdout.splitlines() if ln.strip().startswith(("NOTE", "LOAD"))]
    assert lines[0][0] == "NOTE" and all(ln[0] == "LOAD" for ln in lines[1:])
    vaddrs = [int(ln[2], 16) for ln in lines[1:]]
    assert vaddrs == sorted(vaddrs)
    offsets = [int(ln[1], 16) for ln in lines[1:]]
    assert offsets[0] % 4096 == 0
    u = run([tool("eu-unstrip"), "-n", "--core", target_core["core"]])
    assert u.returncode == 0, u.stderr
    with_ids = [
        ln
        for ln in u.stdout.splitlines()
        if re.match(r"^0x[0-9a-f]+\+0x[0-9a-f]+ [0-9a-f]{20,}", ln)
    ]
    names = " ".join(with_ids)
    assert "libc.so" in names and "[vdso]" in names or "linux-vdso" in names, u.stdout
    assert len(with_ids) >= 4, u.stdout


@pytest.mark.parametrize("kind", ["heap", "bytearray", "mmap", "private-file", "stack"])
def test_snapshot_memory_byte_for_byte(target_core, kind):
    import gencore

    samples = [s for s in target_core["samples"] if s["kind"] == kind]
    assert len(samples) >= 100
    with gencore.open_core(target_core["core"]) as core:
        bad = [s for s in samples if core.read(s["addr"], s["len"]).hex() != s["expect"]]
    assert not bad, f"{len(bad)} of {len(samples)} {kind} samples differ, e.g. {bad[0]}"


def test_snapshot_samples_total(target_core):
    assert len(target_core["samples"]) >= 1000


def test_dontdump_secret_absent(target_core):
    assert target_core["secret"]
    x = 99991
    pattern = bytearray()
    for _ in range(1 << 16):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        pattern.append((x >> 16) & 0xFF)
    needle = bytes(pattern[4096 : 4096 + 64])
    with open(target_core["core"], "rb") as f:
        data = f.read()
    assert needle not in data
    # the oracle is sound: a region without DONTDUMP does get dumped (see the samples test)


def test_process_carries_on_untouched(target_core):
    c = target_core
    assert c["errors"] == []
    assert c["alive"] == []
    assert all(t["ok"] is True for t in c["threads"].values()), c["threads"]
    assert c["busy_progressed"]
    assert c["before"]["fds"] == c["after"]["fds"]
    assert c["before"]["sig"] == c["after"]["sig"]
    assert c["after"]["children"] == []
    assert c["atfork"] == 0


def test_metadata_note(target_core):
    import gencore

    with gencore.open_core(target_core["core"]) as core:
        assert core.pid == target_core["pid"]
        assert core.metadata["reason"] == "api"
        assert core.metadata["python"]["version"] == target_core["python_version"]
        names = {s["name"] for s in core.python_stacks}
        assert {"MainThread", "sleeper", "recursive", "snapshotter"} <= names
        rec = next(s for s in core.python_stacks if s["name"] == "recursive")
        assert [f["function"] for f in rec["frames"]].count("worker_recursive") == 501
        assert {t.tid for t in core.threads} == {t["tid"] for t in core.capture["threads"]}
        assert (
            core.threads[0].tid
            == dict((v, k) for k, v in target_core["report"]["threads"])["caller"]
        )


def test_layout_matches_a_kernel_core_of_the_same_process(tmp_path):
    """The kernel's own core of the same process is the reference for program headers."""
    import json
    import subprocess
    import sys

    from conftest import PROGRAMS

    import gencore

    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if "/" in pattern or pattern.startswith("|"):
        pytest.skip(f"kernel reference cores need a plain core_pattern, this host has {pattern!r}")
    kdir = tmp_path / "kernel"
    kdir.mkdir()
    p = subprocess.run(
        [
            sys.executable,
            str(PROGRAMS / "scenario.py"),
            "kernel_reference",
            json.dumps({"dir": str(tmp_path), "kdir": str(kdir)}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == -6, p.stderr
    ours = json.loads(p.stdout.splitlines()[0])["core"]
    kcores = list(kdir.iterdir())
    assert len(kcores) == 1, "the kernel wrote no core (RLIMIT_CORE / core_pattern?)"
    with gencore.open_core(ours) as a, gencore.open_core(kcores[0]) as k:
        theirs = {m.start: m for m in k.mappings}
        same = [m for m in a.mappings if m.start in theirs]
        assert len(same) >= 0.9 * len(k.mappings), (len(same), len(k.mappings))
        for m in same:
            km = theirs[m.start]
            if m.path and "(deleted)" not in m.path:
                assert (m.end, m.flags, m.path) == (km.end, km.flags, km.path), (m, km)
                assert m.filesz == km.filesz, (m, km)
        kinds = [(n.owner, n.type) for n in a.notes if n.owner != "GENCORE"]
        assert kinds == [(n.owner, n.type) for n in k.notes if n.type not in KERNEL_ONLY_NOTES]
        # fixed-size notes have the kernel's sizes (AUXV and FILE vary with the process)
        fixed = {1, 2, 3, 0x53494749, 0x202, 0x205, 0x401, 0x404, 0x406, 0x409, 0x40A}
        ours = {(n.type, len(n.data)) for n in a.notes if n.type in fixed}
        assert ours == {(n.type, len(n.data)) for n in k.notes if n.type in fixed}
        assert a.auxv == k.auxv
        assert a.pid == k.pid


@pytest.mark.parametrize("target_core", ["zstd"], indirect=True)
def test_compressed_core_reads_without_the_zstd_command(target_core):
    """``compress="zstd"``: a standard zstd file that every gencore reader opens as it is,
    with the same memory, threads and stacks as the decompressed core."""
    import gencore

    zst, plain = target_core["core_zst"], target_core["core"]
    report = target_core["report"]
    assert report["compressed_size"] == os.path.getsize(zst)
    assert report["file_size"] == os.path.getsize(plain)
    assert os.path.getsize(zst) * 2 < os.path.getsize(plain)
    with gencore.open_core(zst) as core:
        samples = target_core["samples"]
        bad = [s for s in samples if core.read(s["addr"], s["len"]).hex() != s["expect"]]
        assert not bad, f"{len(bad)} samples differ, e.g. {bad[0]}"
        assert {t.tid for t in core.threads} == set(thread_ids(target_core).values())
        assert core.source == Path(zst) and core.path != Path(zst)
        tmpdir = core.cleanup_dir
    assert tmpdir is not None and not os.path.exists(tmpdir)  # the decompressed copy is gone
    p = run([sys.executable, "-m", "gencore", "stacks", zst])
    assert p.returncode == 0, p.stderr
    for name in ["MainThread", "snapshotter", *WORKER_FUNCS]:
        assert f'"{name}"' in p.stdout, (name, p.stdout)
    for func in WORKER_FUNCS.values():
        assert func in p.stdout
    info = run([sys.executable, "-m", "gencore", "info", zst])
    assert info.returncode == 0 and "compressed (zstd)" in info.stdout, info.stdout + info.stderr
