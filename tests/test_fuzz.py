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
from hypothesis import HealthCheck, given, settings
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


def exercise(path: str, stacks: bool = True) -> None:
    """Everything a user does with a core: it succeeds or raises CoreFormatError."""
    with deadline(HANG_S):
        try:
            with gencore.open_core(path) as core:
                _ = core.threads, core.python_stacks, core.incomplete_threads, core.auxv
                for m in core.mappings[:8]:
                    try:
                        core.read(m.start, min(64, max(m.size, 1)))
                    except gencore.reader.MemoryUnavailableError:
                        pass
        except gencore.CoreFormatError:
            pass
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["info", path])
        assert rc in (0, 2), err.getvalue()
        if stacks:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli_main(["stacks", path])
            assert rc in (0, 2), err.getvalue()


def mutate(seed: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "field", "truncate", "splice", "random", "gzip"]))
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
    elif kind == "random":
        head = b"\x7fELF\x02\x01\x01" if data.draw(st.booleans()) else b""
        return head + data.draw(st.binary(max_size=4096))
    else:
        # a damaged bundle: gzip magic, broken stream or a tar of junk
        raw = gzip.compress(data.draw(st.binary(max_size=2048)))
        cut = data.draw(st.integers(0, len(raw)))
        return raw[:cut] if data.draw(st.booleans()) else raw
    return bytes(b)


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
