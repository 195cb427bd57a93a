"""Shared fixtures: the oracles (pystack, py-spy, gdb, elfutils) and target programs.

The oracles are required: CI installs them, so a missing one fails the run instead of
skipping the tests that need it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The wheel tests need built wheels: `./scripts/test -s wheels` builds them and runs these.
collect_ignore = [] if os.environ.get("GENCORE_WHEEL_TESTS") else ["wheels"]
PROGRAMS = HERE / "programs"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of an oracle: next to the interpreter (pip installs), else on PATH."""
    cand = BIN / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"required oracle {name!r} is not installed (see README: test set-up)")
    return found


def gencore_run_cmd(
    program: str, directory: Path, *opts: str, mode: str, args: dict | None = None, pre=()
) -> list[str]:
    """``python [PRE] -m gencore run --directory DIR OPTS -- PROGRAM MODE ARGS_JSON``."""
    cmd = [sys.executable, *pre, "-m", "gencore", "run", "--directory", str(directory), *opts]
    return [*cmd, "--", program, mode, json.dumps(args or {})]


def run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    env.update(kw.pop("env", {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def real_python() -> str:
    """The interpreter binary itself (not a venv symlink): what tools are given as PYTHON."""
    return os.path.realpath(sys.executable)


def python_gdb_script() -> Path | None:
    exe = Path(real_python())
    cand = exe.with_name(exe.name + "-gdb.py")
    return cand if cand.exists() else None


def pystack_can_merge() -> bool:
    """Whether pystack --native can merge C and Python frames for this interpreter.

    It needs the interpreter's symbol table to recognise the eval loop's frames. Debian's
    python3.X binaries are stripped (the symbols are in -dbgsym packages); there pystack
    says "Unable to merge native stack due to insufficient native information" for every
    thread, on the kernel's own core of the same process too.
    """
    import sysconfig

    from elftools.elf.elffile import ELFFile

    paths = [real_python()]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths.append(os.path.join(libdir, sysconfig.get_config_var("LDLIBRARY") or ""))
    for p in paths:
        try:
            with open(p, "rb") as f:
                if ELFFile(f).get_section_by_name(".symtab") is None:
                    return False
        except OSError:
            continue
    return True


@pytest.fixture(scope="session")
def stackmark_lib(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lib") / "libstackmark.so"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-g",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-o",
            str(out),
            str(PROGRAMS / "stackmark.c"),
        ],
        check=True,
    )
    return str(out)


def run_target(tmp_path: Path, stackmark: str, timeout: float = 240, preexec=None, **cfg) -> dict:
    coredir = tmp_path / "cores"
    coredir.mkdir(exist_ok=True)
    config = {"coredir": str(coredir), "workdir": str(tmp_path), "stackmark": stackmark, **cfg}
    result = tmp_path / "result.json"
    p = subprocess.run(
        [sys.executable, str(PROGRAMS / "target.py"), json.dumps(config), str(result)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )
    assert p.returncode == 0, f"target failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    data = json.loads(result.read_text())
    data["stdout"], data["stderr"] = p.stdout, p.stderr
    return data


@pytest.fixture(scope="session", params=["plain", "zstd"])
def target_core(request, tmp_path_factory, stackmark_lib) -> dict:
    """One real multi-threaded process that dumped itself; shared by the oracle tests.

    ``zstd``: the process wrote ``compress="zstd"``; ``core`` is what the ``zstd`` command
    made of its ``.core.zst`` (``core_zst``), so every oracle reads the decompressed core.
    """
    tmp = tmp_path_factory.mktemp("target")
    compress = None if request.param == "plain" else request.param
    data = run_target(tmp, stackmark_lib, secret=True, compress=compress)
    assert not data["errors"], data["errors"]
    if compress:
        data["core_zst"] = data["core"]
        assert data["core_zst"].endswith(".core.zst")
        data["core"] = data["core_zst"][: -len(".zst")]
        p = run([tool("zstd"), "-d", "-q", data["core_zst"], "-o", data["core"]])
        assert p.returncode == 0, p.stderr
    return data


def py_version() -> str:
    return sysconfig.get_python_version()


@pytest.fixture
def mount_tmpfs(tmp_path):
    mounted = []

    def mount(size: str, opts: str = "") -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        o = f"size={size}" + (f",{opts}" if opts else "")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", o, "tmpfs", str(d)], capture_output=True, text=True
        )
        assert r.returncode == 0, f"these tests run as root (CI does): mount failed: {r.stderr}"
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)])
