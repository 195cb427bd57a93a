"""The built wheels (./scripts/build-wheels -> dist/): contents, tags, and installs that need no
compiler. Run by `./scripts/test -s wheels`, which builds them first."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

DIST = Path(os.environ.get("GENCORE_DIST", "dist")).resolve()
SID_ROOT = Path(os.environ.get("GENCORE_SID_ROOT", "/var/cache/gencore/sid"))
SID_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sid-root"
HOST_VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
SID_VERSIONS = ["3.14", "3.15"]

DUMP = r"""
import sys, threading, time, gencore
stop = threading.Event()
def wheel_worker():
    stop.wait(60)
for i in range(3):
    threading.Thread(target=wheel_worker, name=f"w{i}", daemon=True).start()
time.sleep(0.2)
p = gencore.create_core(sys.argv[1])
with gencore.open_core(p) as core:
    names = sorted(s["name"] for s in core.python_stacks)
    frames = sum(f["function"] == "wheel_worker" for s in core.python_stacks for f in s["frames"])
    print(p, len(core.threads), ",".join(names), frames, gencore.capture.engine.native.__file__)
"""


def one(pattern: str) -> Path:
    found = glob.glob(str(DIST / pattern))
    assert len(found) == 1, f"expected one {pattern} in {DIST} (run ./scripts/build-wheels)"
    return Path(found[0])


ENGINE = "gencore-*-cp39-abi3-manylinux_2_17_x86_64.whl"
ENGINE_ARM = "gencore-*-cp39-abi3-manylinux_2_17_aarch64.whl"  # installed in scripts/aarch64-vm
PURE = "gencore-*-py3-none-any.whl"
MACHINE = {ENGINE: 62, ENGINE_ARM: 183}  # the engine's ELF e_machine: EM_X86_64, EM_AARCH64


def no_compiler_env(venv: Path) -> dict[str, str]:
    """Only the venv on PATH (no cc, gcc, zig) and CC pointing nowhere."""
    return {"PATH": str(venv / "bin"), "CC": "/nonexistent/cc", "HOME": str(venv)}


def interpreter(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else shutil.which(f"python{version}")


def install(exe: str, venv: Path, wheel: Path) -> Path:
    subprocess.run([exe, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--only-binary=:all:", str(wheel)],
        capture_output=True,
        text=True,
        env={**os.environ, **no_compiler_env(venv)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return py


@pytest.mark.parametrize("pattern", [ENGINE, ENGINE_ARM, PURE])
def test_wheel_contents(pattern):
    w = one(pattern)
    with zipfile.ZipFile(w) as z:
        names = z.namelist()
        assert any(re.fullmatch(r"gencore-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
        assert "gencore/py.typed" in names and "gencore/_native.pyi" in names
        assert not [n for n in names if n.startswith("tests") or "/test_" in n], names
        assert not [n for n in names if n.endswith((".c", ".h", ".o"))], names
        wheel_meta = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        so = [n for n in names if n.endswith(".so")]
        if pattern in MACHINE:
            arch = pattern.split("manylinux_2_17_")[1].split(".")[0]
            assert f"Tag: cp39-abi3-manylinux_2_17_{arch}" in wheel_meta
            assert so == ["gencore/_native.abi3.so"]
            blob = z.read(so[0])
            assert (
                blob[:4] == b"\x7fELF" and int.from_bytes(blob[18:20], "little") == MACHINE[pattern]
            )
            for build_path in (os.getcwd(), "/tmp/", "/root/", "/home/"):
                assert build_path.encode() not in blob, build_path
        else:
            assert "Tag: py3-none-any" in wheel_meta and so == []


@pytest.mark.parametrize("pattern", [ENGINE, ENGINE_ARM])
def test_auditwheel_agrees_with_the_tag(pattern):
    auditwheel = os.environ.get("GENCORE_AUDITWHEEL", "auditwheel")
    r = subprocess.run([auditwheel, "show", str(one(pattern))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    tag = "manylinux_2_17_" + pattern.split("manylinux_2_17_")[1].split(".")[0]
    assert f'consistent with the following platform tag: "{tag}"' in text, text


def check_dump(out: str, tmp: str) -> None:
    path, nthreads, names, frames, native = out.split()
    assert Path(path).name.endswith(".core") and path.startswith(tmp)
    assert int(nthreads) == 4 and names == "MainThread,w0,w1,w2" and int(frames) == 3
    assert native.endswith("_native.abi3.so")


@pytest.mark.parametrize("version", HOST_VERSIONS)
def test_engine_wheel_installs_and_dumps_without_a_compiler(version, tmp_path):
    exe = interpreter(version)
    assert exe, f"Python {version} is part of the matrix (pyenv)"
    py = install(exe, tmp_path / "venv", one(ENGINE))
    r = subprocess.run(
        [str(py), "-c", DUMP, str(tmp_path)],
        capture_output=True,
        text=True,
        env=no_compiler_env(tmp_path / "venv"),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    check_dump(r.stdout, str(tmp_path))


@pytest.mark.parametrize("version", SID_VERSIONS)
def test_engine_wheel_in_the_sid_root(version):
    assert (SID_ROOT / "usr/bin" / f"python{version}").exists(), "run scripts/sid-root ensure"
    work = SID_ROOT / "tmp" / f"gencore-wheel-{version}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(one(ENGINE), work)
    inner = f"/tmp/gencore-wheel-{version}"
    script = (
        f"set -e; PATH=/usr/bin:/bin python{version} -m venv {inner}/venv; "
        f"PATH={inner}/venv/bin CC=/nonexistent/cc {inner}/venv/bin/python -m pip install -q "
        f"--only-binary=:all: {inner}/*.whl; "
        f"PATH={inner}/venv/bin CC=/nonexistent/cc {inner}/venv/bin/python -c '{DUMP}' {inner}"
    )
    # through the script: it mounts /proc and /dev for the command, in a namespace of its own
    r = subprocess.run(
        [str(SID_SCRIPT), "run", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        check_dump(r.stdout.strip().splitlines()[-1], inner)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_pure_wheel_reads_cores_and_says_where_dumps_work(tmp_path):
    exe = interpreter("3.12") or sys.executable
    native = install(exe, tmp_path / "engine", one(ENGINE))
    r = subprocess.run([str(native), "-c", DUMP, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    core = r.stdout.split()[0]
    py = install(exe, tmp_path / "pure", one(PURE))
    env = no_compiler_env(tmp_path / "pure")
    gencore_cmd = str(tmp_path / "pure" / "bin" / "gencore")
    info = subprocess.run([gencore_cmd, "info", core], capture_output=True, text=True, env=env)
    assert info.returncode == 0 and "threads:  4" in info.stdout, info.stdout + info.stderr
    st = subprocess.run([gencore_cmd, "stacks", core], capture_output=True, text=True, env=env)
    assert st.returncode == 0 and st.stdout.count("wheel_worker") == 3, st.stdout + st.stderr
    refuse = (
        "import gencore\n"
        "assert not gencore.supported()\n"
        "for f in (gencore.create_core, gencore.install):\n"
        "    try:\n"
        "        f()\n"
        "    except gencore.UnsupportedPlatformError as e:\n"
        "        print(e)\n"
    )
    r = subprocess.run([str(py), "-c", refuse], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("supports Linux on x86_64 and aarch64" in ln for ln in lines), (
        lines
    )
    assert all("can still be read here" in ln for ln in lines), lines
