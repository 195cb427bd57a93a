"""redact=: values are scrubbed in the snapshot child, stacks stay readable by every tool.

One process (``programs/secretive.py``) holds ``SECRET_`` values in a str local, a dict's
bytes value, an attribute, ``os.environ``, a bytearray, a thread's argument, a closure and a
4 MiB bytes object, then takes a plain core and a redacted one back to back from the same
call site. The oracles: ``grep -c SECRET_`` over the redacted core and over ``strings -a`` of
it is 0 (and not over the plain core); pystack, py-spy and gdb show the same threads,
functions and line numbers on both; the heap census's counts and bytes are equal.

The cores ``grep`` reads leave file-backed memory out (``filter=0x33``, the kernel's
default): OpenSSL's own read-only strings (``SERVER_TRAFFIC_SECRET_0``...) would match
``SECRET_`` otherwise, and they are code, not the process's values. The tools and the census
read a pair with the default filter (the census needs the interpreter's static types, which
are file-backed until written).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROGRAMS, python_gdb_script, real_python, run, tool

import gencore

FILTER = 0x33


@pytest.fixture(scope="module")
def secretive(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("secretive")
    cfg = {
        "coredir": str(tmp),
        "cores": [
            ["plain", {}],
            ["redacted", {"redact": True}],
            ["plain33", {"filter": FILTER}],
            ["redacted33", {"filter": FILTER, "redact": True}],
            ["env", {"redact": "env"}],
        ],
    }
    result = tmp / "result.json"
    inherited = "SECRET_" + os.urandom(16).hex()  # only ever in its environment
    p = run(
        [sys.executable, str(PROGRAMS / "secretive.py"), json.dumps(cfg), str(result)],
        env={"GENCORE_INHERITED_TOKEN": inherited},
    )
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(result.read_text())
    data["path"] = {name: c["path"] for name, c in data["cores"].items()}
    data["inherited"] = inherited
    return data


def grep_count(path: str, text: str) -> int:
    p = subprocess.run(["grep", "-a", "-c", text, path], capture_output=True, text=True)
    return int(p.stdout.strip() or 0)


def strings_count(path: str, text: str) -> int:
    p = subprocess.run(["strings", "-a", path], capture_output=True, text=True, check=True)
    return sum(text in line for line in p.stdout.splitlines())


def test_no_secret_is_left_in_a_redacted_core(secretive):
    plain, redacted = secretive["path"]["plain33"], secretive["path"]["redacted33"]
    data = Path(plain).read_bytes()
    for s in secretive["secrets"]:  # the plain core holds every one: the oracle can see them
        assert s.encode() in data, s
    assert grep_count(plain, "SECRET_") > 0 and strings_count(plain, "SECRET_") > 0
    assert grep_count(redacted, "SECRET_") == 0
    assert strings_count(redacted, "SECRET_") == 0


def test_the_capture_note_records_the_policy_and_what_was_scrubbed(secretive):
    with gencore.open_core(secretive["path"]["redacted"]) as c:
        r = c.capture["redact"]
        assert r["policy"] == "values"
        assert r["strings"] > 0 and r["bytes"] > 0 and r["bytearrays"] > 0
        assert r["scrubbed_bytes"] >= 4 << 20  # the large bytes object at least
        assert r["environ_bytes"] >= 32 and r["kept"] > 0
        assert c.metadata["redact"] == "values"
        assert c.metadata["argv"][1:] == ["<redacted>"] * (len(c.metadata["argv"]) - 1)
    with gencore.open_core(secretive["path"]["plain"]) as c:
        # its excluded buffers are listed, nothing else was scrubbed
        assert c.capture["redact"]["policy"] == "off" and "redact" not in c.metadata
        assert c.capture["redact"]["scrubbed_bytes"] == c.capture["redact"]["excluded_bytes"]


def test_redact_env_scrubs_only_the_environment(secretive):
    """A variable the process was started with is in its environment block and in
    ``os.environ``'s bytes; ``redact="env"`` scrubs both, and nothing else."""
    inherited = secretive["inherited"].encode()
    assert inherited in Path(secretive["path"]["plain"]).read_bytes()
    data = Path(secretive["path"]["env"]).read_bytes()
    assert inherited not in data
    assert b"GENCORE_INHERITED_TOKEN" in data  # names stay
    assert secretive["secrets"][0].encode() in data  # an attribute is not the environment
    with gencore.open_core(secretive["path"]["env"]) as c:
        assert c.capture["redact"]["policy"] == "env"
        assert c.capture["redact"]["environ_bytes"] > 0


def test_excluded_buffers_are_in_no_core(secretive):
    hidden = secretive["hidden"]
    for name in ("plain", "redacted"):
        data = Path(secretive["path"][name]).read_bytes()
        assert b"HIDDEN_" not in data and hidden.encode() not in data, name
        with gencore.open_core(secretive["path"][name]) as c:
            assert c.capture["redact"]["excluded_bytes"] > 0


def _frames(text: str, header: str) -> dict[str, list[tuple[str, str]]]:
    """Thread -> [(function, line)] from a tool's output."""
    out: dict[str, list[tuple[str, str]]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(header, line)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        f = re.search(r"\bin (\S+)$|^\s+(\S+) \(.*:(\d+)\)$|line (\d+), in (\S+)", line)
        if cur is not None and f:
            out[cur].append(tuple(x for x in f.groups() if x))  # type: ignore[arg-type]
    return out


def test_pystack_shows_the_same_stacks(secretive):
    outs = {}
    for name in ("plain", "redacted"):
        p = run([tool("pystack"), "core", secretive["path"][name], real_python()])
        assert p.returncode == 0, p.stdout + p.stderr
        outs[name] = _frames(p.stdout, r"Traceback for thread (\d+)")
    assert outs["plain"] == outs["redacted"]
    tids = {str(t) for t in secretive["threads"].values()}
    assert tids <= set(outs["redacted"]), outs["redacted"].keys()
    frames = [x for stack in outs["redacted"].values() for frame in stack for x in frame]
    assert "holder_with_local" in frames and "holder_with_argument" in frames


def test_py_spy_shows_the_same_threads_names_and_lines(secretive):
    outs = {}
    for name in ("plain", "redacted"):
        p = run([tool("py-spy"), "dump", "--core", secretive["path"][name]])
        assert p.returncode == 0, p.stdout + p.stderr
        # from "Python vX.Y": the lines before show the file's name and the arguments
        outs[name] = p.stdout[p.stdout.index("Python v") :]
    assert outs["plain"] == outs["redacted"]
    assert '"holder-local"' in outs["redacted"] and '"holder-arg"' in outs["redacted"]
    assert "holder_with_argument (" in outs["redacted"]


def test_gdb_shows_the_same_threads_and_backtraces(secretive):
    outs = {}
    for name in ("plain", "redacted"):
        cmd = ["gdb", "-nx", "-batch", "-iex", "set auto-load safe-path /"]
        cmd += ["-ex", "info threads", "-ex", "thread apply all bt"]
        if python_gdb_script():
            cmd += ["-ex", "thread apply all py-bt"]
        g = run([*cmd, real_python(), secretive["path"][name]], timeout=600)
        # threads, then each frame's function and place (arguments' values may differ: gdb
        # finds some in registers' traces, which redaction scrubs)
        outs[name] = re.findall(
            r"^\*?\s*\d+\s+Thread 0x\S+ \(LWP (\d+)\)"
            r"|^#\d+\s+(?:0x\S+ in )?(\S+) \(.*?\)(?: (?:at|from) (\S+))?$"
            r'|File "(\S+)", line (\d+), in (\S+)',
            g.stdout,
            re.M,
        )
        assert len(outs[name]) > 20, g.stdout + g.stderr
    lwps = {int(m[0]) for m in outs["redacted"] if m[0]}
    assert set(secretive["threads"].values()) <= lwps
    assert outs["plain"] == outs["redacted"]
    if python_gdb_script():  # py-bt: the Python frames with their files and lines
        assert any(m[5] == "holder_with_local" for m in outs["redacted"]), outs["redacted"]


def test_the_heap_census_counts_the_same(secretive):
    """Every type's count is the same but for a few floats, and its bytes too but for a few
    KiB of str and bytes: the two cores come from two calls, whose own live objects differ a
    little (the core record's bytes carry redaction's lists; 3.14 keeps a time string of
    another length)."""
    census = {}
    for name in ("plain", "redacted"):
        with gencore.open_core(secretive["path"][name]) as c:
            census[name] = {t: (n, b) for t, n, b in c.heap()}
    plain, redacted = census["plain"], census["redacted"]
    assert plain.keys() == redacted.keys()
    for t, (count, size) in plain.items():
        # floats are the calls' own clock readings and durations: a slow machine keeps a
        # different few of them alive at the fork (seen: 106 against 104)
        count_slack = 4 if t == "float" else 0
        size_slack = 8 << 10 if t in ("str", "bytes") else count_slack * 24
        assert abs(count - redacted[t][0]) <= count_slack, (t, count, redacted[t][0])
        assert abs(size - redacted[t][1]) <= size_slack, (t, size, redacted[t][1])
    assert redacted["bytes"][1] >= 4 << 20


def test_show_values_prints_redacted(secretive):
    p = run(
        [sys.executable, "-m", "gencore", "heap", secretive["path"]["redacted"]]
        + ["--largest", "3", "--show-values", "--json"]
    )
    assert p.returncode == 0, p.stderr
    largest = json.loads(p.stdout)["largest"]
    big = next(o for o in largest if o["type"] == "bytes")
    assert big["value"] == "<redacted>"
    p = run([sys.executable, "-m", "gencore", "stacks", secretive["path"]["redacted"]])
    assert p.returncode == 0 and "holder_with_local" in p.stdout, p.stdout + p.stderr


def test_bad_redact_values_are_refused_before_any_fork(tmp_path):
    for bad in ("all", 1, "VALUES"):
        with pytest.raises(ValueError, match="redact must be"):
            gencore.create_core(tmp_path, redact=bad)
    with pytest.raises(ValueError, match="method='native'"):
        gencore.create_core(tmp_path, redact=True, method="kernel")
    assert list(tmp_path.iterdir()) == []
