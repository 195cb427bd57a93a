"""Bundles: analysis on a machine without the original files, shape, safety."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import PROGRAMS, pystack_can_merge, python_gdb_script, real_python, run, tool
from test_failures import scenario

import gencore
from gencore.cli.debug import debug_command
from gencore.ship.bundle import ExtractedBundle, extract_bundle

# time.sleep() waits in clock_nanosleep (3.11+) or select (3.9, 3.10)
SLEEP_FRAME = re.compile(r"\b(__)?(clock_nanosleep|select)\b")


def make_bundle(tmp_path: Path, stackmark: str, **args) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    libdir = tmp_path / "private-lib"
    libdir.mkdir()
    cfg = {"dir": str(out), "stackmark": stackmark, "lib_copy": str(libdir / "libprivmark.so")}
    cfg.update(args)
    p = subprocess.run(
        [sys.executable, str(PROGRAMS / "bundler.py"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["lib_copy"] = cfg["lib_copy"]
    return r


@pytest.fixture(scope="module")
def bundle_gz(tmp_path_factory, stackmark_lib) -> dict:
    tmp = tmp_path_factory.mktemp("bundle")
    r = make_bundle(tmp, stackmark_lib)
    os.unlink(r["lib_copy"])  # the private library is now only in the bundle
    return r


def fresh_root(tmp_path: Path, bundle: str) -> ExtractedBundle:
    dest = tmp_path / "elsewhere"
    dest.mkdir()
    return extract_bundle(bundle, dest)


def test_pystack_resolves_libraries_from_the_bundle_only(bundle_gz, tmp_path):
    ex = fresh_root(tmp_path, bundle_gz["bundle"])
    assert ex.executable is not None and ex.executable.is_file()
    p = run(
        [
            tool("pystack"),
            "core",
            "--native",
            "-v",
            str(ex.core),
            str(ex.executable),
            "--lib-search-root",
            str(ex.root),
        ]
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    search = re.search(r"Using library search path: (\S+)", out)
    assert search, out[-3000:]
    assert all(d.startswith(str(ex.root)) for d in search.group(1).split(":"))
    found = re.search(
        r"libpython\S* first map found: (\S+)|Python binary first map found: (\S+)", out
    )
    if found:
        assert (found.group(1) or found.group(2)).startswith(str(ex.root))
    # every worker, with native frames resolved from the bundle's libc and private library
    assert out.count("bundled_worker_sleeping") >= 2
    assert "bundled_worker_in_c" in out
    if not pystack_can_merge():
        return  # a stripped interpreter: see pystack_can_merge; gdb checks the C frames
    assert "Unable to merge native stack" not in out
    assert re.search(r"stackmark_park.*libprivmark\.so", out), out[-4000:]
    assert re.search(r"\((libc\.so\.6|libc-[\d.]+\.so)\)", out)
    assert SLEEP_FRAME.search(out)  # time.sleep's libc call, symbol from the bundle's libc


def test_gdb_with_the_bundle_as_sysroot(bundle_gz, tmp_path):
    ex = fresh_root(tmp_path, bundle_gz["bundle"])
    cmd = debug_command(
        ex,
        "gdb",
        [
            "-batch",
            "-ex",
            "info sharedlibrary",
            "-ex",
            "thread apply all bt",
            "-ex",
            "thread apply all py-bt",
        ],
    )
    p = run(cmd, timeout=300, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    libs = re.findall(
        r"^(?:0x[0-9a-f]+\s+0x[0-9a-f]+\s+)?(?:Yes|No)\s*(?:\(\*\))?\s+(/\S+)$", out, re.M
    )
    assert libs, out[-3000:]
    assert all(lib.startswith(str(ex.root)) for lib in libs), libs
    assert not re.search(r"^\s+No\s+/", out, re.M), "a library was not loaded from the bundle"
    assert "stackmark_park" in out
    assert SLEEP_FRAME.search(out)
    if python_gdb_script():
        assert "bundled_worker_sleeping" in out  # py-bt from the bundle's python-gdb.py


def test_gencore_debug_runs_pystack_in_one_command(bundle_gz):
    p = run([sys.executable, "-m", "gencore", "debug", bundle_gz["bundle"], "--", "--native"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bundled_worker_in_c" in p.stdout
    if pystack_can_merge():
        assert "stackmark_park" in p.stdout
    p = run(
        [sys.executable, "-m", "gencore", "debug", "--tool", "gdb", bundle_gz["bundle"]],
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stackmark_park" in p.stdout


def test_bundle_shape(bundle_gz):
    path = Path(bundle_gz["bundle"])
    stem = f"core_{path.name.split('_', 1)[1].rsplit('.tar.gz', 1)[0]}"
    assert re.fullmatch(rf"core_\d{{8}}\.\d{{6}}\.{bundle_gz['pid']}\.\d{{3}}\.tar\.gz", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bundle_gz["listing"] == [path.name]  # the loose core is gone, no partial file
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        for m in members:
            assert m.name.startswith(stem + "/") and not m.name.startswith("/")
            assert ".." not in m.name.split("/")
            assert m.isfile() or m.islnk()
            assert m.mode == 0o600
        manifest = json.load(tar.extractfile(f"{stem}/manifest.json"))
        assert f"{stem}/{stem}.core" in names
        for key in ("pid", "time", "host", "kernel", "python", "gencore", "files", "stacks"):
            assert key in manifest, key
        assert manifest["pid"] == bundle_gz["pid"]
        exe = manifest["executable"]
        assert exe == f"{stem}{os.path.realpath(real_python())}"
        for f in manifest["files"]:
            data = tar.extractfile(f["member"]).read()
            assert hashlib.sha256(data).hexdigest() == f["sha256"]
            assert f["member"] == stem + f["path"]
        core_data = tar.extractfile(f"{stem}/{stem}.core").read()
        assert hashlib.sha256(core_data).hexdigest() == manifest["core"]["sha256"]
    gdb_script = python_gdb_script()
    if gdb_script:
        assert f"{stem}{gdb_script}" in names
    libc = [f for f in manifest["files"] if f["path"].endswith("/libc.so.6")]
    assert libc and libc[0]["build_id"]
    names_in_stacks = {t["name"] for t in manifest["stacks"]}
    assert {"bundled_worker_in_c", "bundled_worker_sleeping"} <= names_in_stacks
    # build-ids agree with elfutils' reading of the core
    p = run([tool("eu-unstrip"), "-n", "--core", str(Path(bundle_gz["bundle"]))], timeout=60)
    assert p.returncode != 0  # a bundle is not a core: elfutils needs the extracted one


def test_build_ids_match_elfutils(bundle_gz, tmp_path):
    ex = fresh_root(tmp_path, bundle_gz["bundle"])
    p = run([tool("eu-unstrip"), "-n", "--core", str(ex.core)])
    assert p.returncode == 0, p.stderr
    eu = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            path = parts[2] if parts[2].startswith("/") else parts[4]
            eu[path] = parts[1].split("@")[0]
    by_path = {f["path"]: f["build_id"] for f in ex.manifest["files"]}
    checked = 0
    for path, bid in eu.items():
        if path in by_path and bid != "-":
            assert by_path[path] == bid, path
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("state", ["deleted", "replaced"])
def test_deleted_or_replaced_library_comes_from_map_files(tmp_path, stackmark_lib, state):
    r = make_bundle(tmp_path, stackmark_lib, lib_state=state)
    ex = fresh_root(tmp_path, r["bundle"])
    entry = [f for f in ex.manifest["files"] if f["path"] == r["lib_copy"]]
    assert entry and entry[0]["source"] == "map_files", ex.manifest
    with open(stackmark_lib, "rb") as a:
        original = a.read()
    assert (ex.root / r["lib_copy"].lstrip("/")).read_bytes() == original
    assert not ex.manifest["missing"]


@pytest.mark.parametrize("mode", ["async", "start"])
def test_zstd_bundles_from_async_and_callback_forms(tmp_path, stackmark_lib, mode):
    r = make_bundle(tmp_path, stackmark_lib, format="tar.zst", mode=mode)
    assert r["bundle"].endswith(".tar.zst")
    # no gencore thread or helper process left behind (asyncio may keep its own watcher)
    assert not [t for t in r["threads"] if t.startswith("gencore")], r["threads"]
    assert r["children"] == []
    p = run([sys.executable, "-m", "gencore", "stacks", r["bundle"]])
    assert p.returncode == 0, p.stderr
    assert "bundled_worker_in_c" in p.stdout
    p = run([sys.executable, "-m", "gencore", "info", "--json", r["bundle"]])
    info = json.loads(p.stdout)
    assert len(info["threads"]) == 4 and info["bundle"]["executable"]


def test_bundle_timeout_leaves_no_partial_and_keeps_the_core(tmp_path):
    r = scenario("bundle_timeout", dir=str(tmp_path))
    assert r["timed_out"] and r["error"]["errno"] == errno.ETIMEDOUT
    assert "timeout=" in r["error"]["msg"] or "within" in r["error"]["msg"]
    assert r["listing"] == [Path(r["core"]).name] and r["children"] == []


def test_extraction_refuses_unsafe_members(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, kind in (
            ("/etc/evil", "file"),
            ("s/../../escape", "file"),
            ("s/link", "sym"),
            ("s/s.core", "file"),
        ):
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(ti)
            else:
                data = b"not a core"
                ti.size = len(data)
                import io

                tar.addfile(ti, io.BytesIO(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    ex = extract_bundle(evil, dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["s", "s/s.core"]
    assert ex.core == dest / "s" / "s.core"
    with pytest.raises(gencore.CoreFormatError):
        gencore.open_core(evil)
