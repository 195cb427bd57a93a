"""The bundle helper and safe extraction, on synthetic cores (no live process involved)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from coregen import PAGE, Core, Segment

import gencore
from gencore.ship.helper import bundle_argv

LIB = os.path.realpath(sys.executable)  # a real ELF file on this machine


def synthetic_core(tmp_path: Path) -> Path:
    core = Core(
        segments=[
            Segment(0x10000, PAGE, b"\xaa" * PAGE),
            Segment(0x400000, PAGE, b"", 5, LIB),
            Segment(0x500000, PAGE, b"", 5, "/nonexistent/libgone.so (deleted)"),
        ],
        metadata={"format": 1, "reason": "api", "pid": 4242, "stacks": []},
    )
    p = tmp_path / "core_20260101.000000.4242.001.core"
    p.write_bytes(core.build())
    return p


def test_helper_command_line_is_defined_once():
    argv = bundle_argv("/py", Path("/d"), "tar.gz", 7, remove_core=True, events=Path("/e"))
    assert argv == [
        "/py", "-m", "gencore.ship.helper", "bundle", "--directory", "/d", "--format", "tar.gz",
        "--pid", "7", "--remove-core", "--events", "/e",
    ]  # fmt: skip


def test_helper_packs_core_files_and_manifest(tmp_path):
    core = synthetic_core(tmp_path)
    events = tmp_path / "events"
    events.touch()
    argv = bundle_argv(sys.executable, tmp_path, "tar.gz", None, events=events) + [core.name]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    bundle = tmp_path / "core_20260101.000000.4242.001.tar.gz"
    assert result["ok"] == str(bundle) and oct(bundle.stat().st_mode)[-3:] == "600"
    assert events.read_text() == f"bundle {bundle.name}\n"
    manifest = result["manifest"]
    files = {f["path"]: f for f in manifest["files"]}
    assert LIB in files and files[LIB]["build_id"]  # read from the file: the core has no head
    assert all(f.get("gdb_script") for p, f in files.items() if p != LIB)
    assert [m["path"] for m in manifest["missing"]] == ["/nonexistent/libgone.so"]
    assert "deleted" in manifest["missing"][0]["reason"]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        assert all(n.startswith(core.stem + "/") and ".." not in n for n in names)
        assert all(m.mode == 0o600 for m in tar.getmembers())
    with gencore.open_core(bundle) as c:  # the core comes back from the bundle
        assert c.pid == 4242 and c.manifest["core"]["size"] == core.stat().st_size
        assert c.read(0x10000, 4) == b"\xaa" * 4
    ex = gencore.extract_bundle(bundle, tmp_path / "x")
    assert ex.core.read_bytes() == core.read_bytes()
    assert (ex.root / LIB.lstrip("/")).read_bytes() == Path(LIB).read_bytes()


def test_helper_failure_is_reported_and_leaves_no_partial(tmp_path):
    core = synthetic_core(tmp_path)
    (tmp_path / "core_20260101.000000.4242.001.tar.gz").write_bytes(b"")  # already there
    argv = bundle_argv(sys.executable, tmp_path, "tar.gz", None) + [core.name]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "error" in json.loads(p.stdout.splitlines()[-1])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


def evil_bundle(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""):
            ti = tarfile.TarInfo(name)
            ti.size, ti.type, ti.linkname = (
                (len(data) if kind == tarfile.REGTYPE else 0),
                kind,
                link,
            )
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("s/s.core", b"\x7fELF")
        add("/etc/evil", b"abs")
        add("s/../../evil", b"dotdot")
        add("s/link", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("s/hard", kind=tarfile.LNKTYPE, link="/etc/passwd")
        add("s/dev", kind=tarfile.CHRTYPE)


def test_extraction_creates_only_safe_regular_files(tmp_path):
    b = tmp_path / "evil.tar.gz"
    evil_bundle(b)
    dest = tmp_path / "out"
    dest.mkdir()
    ex = gencore.extract_bundle(b, dest)
    created = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert created == ["s", "s/s.core"]
    assert ex.core == dest / "s" / "s.core"
    assert not (tmp_path / "evil").exists()


def test_damaged_bundle_is_a_format_error(tmp_path):
    b = tmp_path / "broken.tar.gz"
    b.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(gencore.CoreFormatError, match="not a readable bundle"):
        gencore.open_core(b)
