"""Fuzzing the reader: damaged cores and random files give CoreFormatError or exit 2, never
another exception and never a hang."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import signal
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import gencore
from gencore.cli import main as cli_main

CASES = int(os.environ.get("GENCORE_FUZZ_CASES", "10000"))
HANG_S = 10


@pytest.fixture(scope="module")
def seed_core(tmp_path_factory) -> bytes:
    """A small real core (notes, headers; no memory) of a multi-threaded process."""
    d = tmp_path_factory.mktemp("seed")
    code = (
        "import gencore, threading, time\n"
        "for i in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        f"print(gencore.create_core({str(d)!r}, filter=0x10))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = open(p.stdout.strip(), "rb").read()
    assert len(data) < 4 << 20
    with gencore.open_core(p.stdout.strip()) as core:
        assert len(core.threads) == 4 and core.metadata
    return data


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int):
    def alarm(*_):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def looks_encrypted(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64)
    return head.startswith((b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----"))


def exercise(path: str, stacks: bool = True) -> None:
    """Everything a user does with a core: it succeeds or raises CoreFormatError."""
    with deadline(HANG_S):
        try:
            with gencore.open_core(path) as core:
                _ = core.threads, core.python_stacks, core.incomplete_threads, core.auxv
                for m in core.mappings[:8]:
                    try:
                        core.read(m.start, min(64, max(m.size, 1)))
                    except gencore.MemoryUnavailableError:
                        pass
        except gencore.CoreFormatError:
            pass
        except gencore.DecryptionError:  # it starts like an age file: a key is needed
            assert looks_encrypted(path)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["info", path])
        needs_key = rc == 1 and "encrypted (age)" in err.getvalue() and looks_encrypted(path)
        assert rc in (0, 2) or needs_key, err.getvalue()
        if needs_key:
            return
        if stacks:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli_main(["stacks", path])
            # 1: the interpreter cannot be read from memory and the note has no stacks
            readable = rc == 1 and "cannot read Python stacks" in err.getvalue()
            assert rc in (0, 2) or readable, err.getvalue()


def mutate(seed: bytes, data: st.DataObject) -> bytes:
    kinds = ["flip", "field", "truncate", "splice", "random", "gzip", "zstd"]
    kind = data.draw(st.sampled_from(kinds))
    b = bytearray(seed)
    if kind == "flip":
        # most structure lives in the first pages: headers, program headers, notes
        hot = min(len(b), data.draw(st.sampled_from([64, 4096, 65536, len(b)])))
        for _ in range(data.draw(st.integers(1, 16))):
            i = data.draw(st.integers(0, hot - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "field":
        # an extreme value at a field-aligned offset inside the headers and notes
        limit = min(len(b) - 8, 1 << 16)
        off = data.draw(st.integers(0, limit // 4)) * 4
        val = data.draw(
            st.sampled_from(
                [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, len(b), len(b) + 1, 1 << 40]
            )
        )
        width = data.draw(st.sampled_from([2, 4, 8]))
        b[off : off + width] = (val & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    elif kind == "truncate":
        return bytes(b[: data.draw(st.integers(0, len(b)))])
    elif kind == "splice":
        i = data.draw(st.integers(0, len(b)))
        junk = data.draw(st.binary(min_size=1, max_size=256))
        return bytes(b[:i] + junk + b[i:])
    elif kind == "zstd":
        # a damaged .core.zst: a truncated or bit-flipped stream, or a sound stream of a
        # damaged core (compressed like compress="zstd" writes it)
        import zstandard

        inner = mutate(seed, data) if data.draw(st.booleans()) else seed
        z = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(inner))
        how = data.draw(st.sampled_from(["whole", "truncate", "flip"]))
        if how == "truncate":
            return bytes(z[: data.draw(st.integers(0, len(z) - 1))])
        if how == "flip":
            for _ in range(data.draw(st.integers(1, 8))):
                z[data.draw(st.integers(0, len(z) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(z)
    elif kind == "random":
        head = b"\x7fELF\x02\x01\x01" if data.draw(st.booleans()) else b""
        return head + data.draw(st.binary(max_size=4096))
    else:
        # a damaged bundle: gzip magic, broken stream or a tar of junk
        raw = gzip.compress(data.draw(st.binary(max_size=2048)))
        cut = data.draw(st.integers(0, len(raw)))
        return raw[:cut] if data.draw(st.booleans()) else raw
    return bytes(b)


@pytest.mark.once  # the reader is pure Python: one interpreter covers it
@pytest.mark.slow
def test_fuzz_open_core_and_info(seed_core, tmp_path):
    target = str(tmp_path / "fuzzed.core")
    # sanity: the seed itself is readable and the oracle can tell good from bad
    with open(target, "wb") as f:
        f.write(seed_core)
    with gencore.open_core(target) as core:
        assert len(core.threads) == 4
    outcomes = {"ok": 0, "format": 0}

    @settings(
        max_examples=CASES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run_case(data):
        blob = mutate(seed_core, data)
        with open(target, "wb") as f:
            f.write(blob)
        try:
            with deadline(HANG_S), gencore.open_core(target):
                outcomes["ok"] += 1
        except gencore.CoreFormatError:
            outcomes["format"] += 1
        except gencore.DecryptionError:  # an age header: the key is asked for, clearly
            assert looks_encrypted(target)
            outcomes["format"] += 1
        exercise(target, stacks=sum(outcomes.values()) % 8 == 0)

    run_case()
    assert sum(outcomes.values()) >= CASES
    assert outcomes["format"] > CASES // 10  # the mutations really break things


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x7fELF",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd" + b"\0" * 64,
        struct.pack("<16sHH", b"\x7fELF\x02\x01\x01", 4, 62),
    ],
)
@pytest.mark.once
def test_tiny_inputs_exit_2(tmp_path, blob):
    path = tmp_path / "x"
    path.write_bytes(blob)
    p = subprocess.run(
        [sys.executable, "-m", "gencore", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("gencore: ") and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def heap_core(tmp_path_factory) -> tuple[str, list[int]]:
    """A small real core with its memory, and file offsets of GC-tracked objects in it."""
    d = tmp_path_factory.mktemp("heapseed")
    code = (
        "import gencore\n"
        "class Node:\n"
        "    def __init__(self, i): self.i, self.s, self.f = i, str(i), i / 3\n"
        "keep = [Node(i) for i in range(3000)], {str(i): (i, 'x') for i in range(3000)}\n"
        f"print(gencore.create_core({str(d)!r}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    path = p.stdout.strip()
    from gencore.analysis.heapwalk import Walker

    offsets: list[int] = []
    with gencore.open_core(path) as core:
        assert core.heap().get("__main__.Node").count == 3000
        w = Walker(core)
        w.walk()
        for obj in w.by_offset():
            if w.rd.readable(obj - 16, 48):
                offsets.append(w.rd.offset(obj - 16, 48))
        w.close()
    return path, offsets[:: max(1, len(offsets) // 4000)]


def census_or_format_error(path: str, patch=None, referrers: bool = False) -> str:
    with deadline(HANG_S), gencore.open_core(path) as core:
        if patch is not None:
            patch(core.metadata)
        try:
            if referrers:
                core.heap_referrers("__main__.Node")
                return "ok"
            c = core.heap(largest=3, show_values=True)
            # an honest partial answer: the damage shows as objects it could not read or size
            node = c.get("__main__.Node")
            if c.unreadable or c.unsized or node is None or node.count != 3000:
                return "partial"
            return "ok"
        except gencore.CoreFormatError:
            return "format"
        except gencore.HeapUnavailableError:
            return "unavailable"


HEAP_CASES = max(20, CASES // 400)
HEAP_SETTINGS = settings(
    max_examples=HEAP_CASES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # no shrinking: a heap walk per example is costly
    suppress_health_check=list(HealthCheck),
)


def test_fuzz_heap_walker_objects(heap_core, tmp_path):
    """Damaged objects (links, types, sizes, items) give a census or CoreFormatError."""
    seed, offsets = heap_core
    target = str(tmp_path / "heap.core")
    with open(seed, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    outcomes: dict[str, int] = {}
    fd = os.open(target, os.O_RDWR)

    @HEAP_SETTINGS
    @given(st.data())
    def run_case(data):
        patches = []
        for _ in range(data.draw(st.integers(1, 8))):
            off = data.draw(st.sampled_from(offsets)) + 8 * data.draw(st.integers(0, 5))
            val = data.draw(
                st.sampled_from(
                    [0, 1, 8, 0xFFFFFFFFFFFFFFFF, 1 << 40, 1 << 62, -8 & (2**64 - 1)]
                    + [data.draw(st.integers(0, 2**64 - 1))]
                )
            )
            patches.append((off, os.pread(fd, 8, off)))
            os.pwrite(fd, struct.pack("<Q", val), off)
        try:
            r = census_or_format_error(target, referrers=data.draw(st.booleans()))
            outcomes[r] = outcomes.get(r, 0) + 1
        finally:
            for off, old in reversed(patches):
                os.pwrite(fd, old, off)

    try:
        run_case()
    finally:
        os.close(fd)
    assert sum(outcomes.values()) >= HEAP_CASES
    # the damage reached the walker: some cases were refused or answered in part
    assert outcomes.get("format", 0) + outcomes.get("partial", 0) > 0, outcomes


def test_fuzz_heap_layout_in_the_note(heap_core):
    """A wrong layout in the GENCORE note gives a census, CoreFormatError or
    HeapUnavailableError: never another exception or a hang."""
    seed, _ = heap_core
    with gencore.open_core(seed) as core:
        layout = core.metadata["heap"]
    fields = [("gc_heads", i) for i in range(len(layout["gc_heads"]))]
    fields += [("type", k) for k in layout["type"]] + [("str", k) for k in layout["str"]]
    fields += [("builtins", k) for k in layout["builtins"]]
    outcomes: dict[str, int] = {}

    @HEAP_SETTINGS
    @given(
        st.sampled_from(fields),
        st.sampled_from([0, 8, 1 << 20, 2**64 - 8, -1, "x", None]),
        st.integers(-64, 64),
    )
    def run_case(field, value, delta):
        def patch(meta):
            section, key = field
            old = meta["heap"][section][key]
            meta["heap"][section][key] = (old + delta) if delta and value == 0 else value

        r = census_or_format_error(seed, patch)
        outcomes[r] = outcomes.get(r, 0) + 1

    run_case()
    assert outcomes.get("format", 0) > 0, outcomes
