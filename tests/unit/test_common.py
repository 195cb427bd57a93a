"""Shared helpers: names, sizes, options, the native contract."""

from __future__ import annotations

import ast
import datetime
import os
import re
import signal
from pathlib import Path

import pytest

import gencore
from gencore import _common
from gencore.capture import engine as _engine
from gencore.capture.options import CoreOptions, freeze_signal


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x\0y"])
def test_core_names_refuse_paths(bad):
    with pytest.raises(ValueError, match="plain file name"):
        _common.core_names(bad)


def test_core_names():
    assert _common.core_names("core_1") == ("core_1.core", ".core_1.core.partial")
    assert _common.core_names("x.core") == ("x.core", ".x.core.partial")
    assert _common.stem_of("a.b.core") == "a.b" and _common.stem_of("a.tar.gz", ".tar.gz") == "a"


@pytest.mark.parametrize(
    "n, text", [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")]
)
def test_format_size(n, text):
    assert _common.format_size(n) == text


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("GENCORE_DIR", str(tmp_path))
    assert _common.default_directory() == tmp_path
    monkeypatch.delenv("GENCORE_DIR")
    assert _common.default_directory() == Path.cwd()


def test_resident_bytes_is_plausible():
    assert 1 << 20 < gencore._procfs.resident_bytes() < 1 << 40


def test_in_thread_delivers_result_and_error_in_callback_order():
    seen = []
    fut = _common.in_thread(lambda: 42, lambda e, r: seen.append((e, r)), "t")
    assert fut.result(5) == 42

    def boom() -> int:
        raise KeyError("x")

    fut2 = _common.in_thread(boom, lambda e, r: seen.append((type(e), r)), "t")
    with pytest.raises(KeyError):
        fut2.result(5)
    assert seen == [(None, 42), (KeyError, None)]


@pytest.mark.parametrize(
    "kw, exc, text",
    [
        ({"filter": 0x200}, ValueError, "filter"),
        ({"filter": -1}, ValueError, "filter"),
        ({"method": "gcore"}, ValueError, "method"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"freeze_timeout": -1}, ValueError, "freeze_timeout"),
        ({"name": "../etc"}, ValueError, "plain file name"),
        ({"thread": False}, TypeError, "thread"),
    ],
)
def test_options_are_checked_before_anything_runs(kw, exc, text):
    with pytest.raises(exc, match=text):
        CoreOptions.build(None, kw)


def test_options_carry_every_public_argument():
    opts = CoreOptions.build("/tmp", {"name": "n", "threads": False, "timeout": None})
    assert (opts.directory, opts.name, opts.threads, opts.timeout) == ("/tmp", "n", False, None)
    assert opts.replace(reason="signal").reason == "signal" and opts.reason == "api"


def test_freeze_signal(monkeypatch):
    assert freeze_signal(None) == signal.SIGRTMAX - 3
    monkeypatch.setenv("GENCORE_FREEZE_SIGNAL", str(signal.SIGRTMIN + 1))
    assert freeze_signal(None) == signal.SIGRTMIN + 1
    with pytest.raises(gencore.FreezeError, match="real-time"):
        freeze_signal(signal.SIGUSR1)


def test_version_is_single_sourced():
    from importlib.metadata import version

    assert gencore.__version__ == version("gencore")


def test_errors_carry_stage_errno_and_advice():
    e = gencore.errors.write_error(Path("/var/cores"), 28, "memory", 1 << 30, 3 << 30)
    assert isinstance(e, gencore.CoreWriteError) and e.errno == 28 and e.stage == "memory"
    assert str(e).startswith("no space left on /var/cores: wrote 1.0 GiB of 3.0 GiB;")
    assert "free space" in e.advice
    d = gencore.errors.directory_error(Path("/x"), 2)
    assert "does not exist" in str(d) and d.stage == "preflight"


# -- the native contract ---------------------------------------------------------------------


@pytest.mark.skipif(not _engine.available(), reason="the engine exists on Linux only")
def test_native_matches_its_stub_and_records():
    stub = ast.parse(Path(gencore.__file__).with_name("_native.pyi").read_text()).body
    declared = {n.name for n in stub if isinstance(n, ast.FunctionDef)}
    exported = {n for n in dir(_engine.native) if callable(getattr(_engine.native, n))}
    assert declared == exported
    constants = {n.target.id for n in stub if isinstance(n, ast.AnnAssign)}
    assert constants <= set(dir(_engine.native))
    assert _engine.native.ABI_VERSION == _engine.ABI_VERSION
    # every record packs by name with C's offsets and reads back the same
    status = _engine.record("status")
    values = dict(magic=1, kind=2, err=-3, stage=4, written=5, total=6, file_size=7, nsegments=8)
    assert status.unpack(status.pack(**values)) == values
    core = _engine.record("core")
    packed = core.pack(filter=0x33, max_size=1 << 40, pylayout={"code_fields": [1, -2]})
    back = core.unpack(packed)
    assert (back["filter"], back["max_size"]) == (0x33, 1 << 40)
    assert back["pylayout"]["code_fields"][:3] == [1, -2, 0]
    with pytest.raises(KeyError, match="no field 'nope'"):
        core.pack(nope=1)


@pytest.mark.skipif(not _engine.available(), reason="the engine exists on Linux only")
def test_the_engine_refuses_records_of_another_size_or_version(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ValueError, match="record has 8 bytes"):
            _engine.native.job_start(options=b"\0" * 8, data=b"", dir_fd=fd)
        core = _engine.record("core")
        with pytest.raises(ValueError, match="another engine version"):
            _engine.native.job_start(options=core.pack(abi=99), data=b"", dir_fd=fd)
        with pytest.raises(ValueError, match="another engine version"):  # a blob too short
            rec = core.pack(abi=_engine.ABI_VERSION, note_off=0, note_len=100)
            _engine.native.job_start(options=rec, data=b"x", dir_fd=fd)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not _engine.available(), reason="the engine exists on Linux x86_64 only")
@pytest.mark.parametrize("offset", [0, 5 * 3600 + 1800, -8 * 3600])
def test_core_names_come_from_one_definition(offset):
    t = 1_767_225_599  # 2025-12-31 23:59:59 UTC
    stem = _engine.native.core_stem(time=t, tz_offset=offset, pid=77, seq=5)
    local = datetime.datetime.fromtimestamp(t, datetime.timezone.utc) + datetime.timedelta(
        seconds=offset
    )
    assert stem == f"core_{local:%Y%m%d.%H%M%S}.77.005"
    assert re.fullmatch(r"core_\d{8}\.\d{6}\.\d+\.\d{3}", gencore.capture.preflight.make_stem())
    assert gencore.capture.preflight.make_stem(pid=os.getpid()).split(".")[2] == str(os.getpid())


def test_free_threaded_interpreters_get_a_clear_refusal(tmp_path):
    """On 3.13t/3.14t the engine is not imported (it would re-enable the GIL): a clear error."""
    import subprocess
    import sys

    code = (
        "import sysconfig; real = sysconfig.get_config_var\n"
        "sysconfig.get_config_var = lambda n: 1 if n == 'Py_GIL_DISABLED' else real(n)\n"
        "import sys, gencore\n"
        "try:\n"
        f"    gencore.create_core({str(tmp_path)!r})\n"
        "except gencore.UnsupportedPlatformError as e:\n"
        "    print('refused:', e)\n"
        "print('native imported:', 'gencore._native' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "refused:" in out and "free-threaded" in out, out
    assert "native imported: False" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("300M", 300 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 65536)],
)
def test_sizes_in_binary_units(text, size):
    from gencore.capture import options

    assert options.parse_size(text, "max_total") == size
    assert options.size_bytes(text, "max_total") == size


@pytest.mark.parametrize("bad", ["lots", "-5M", "5X", "", "1e9"])
def test_bad_sizes_name_the_argument(bad):
    from gencore.capture import options

    with pytest.raises(ValueError, match="keep_free"):
        options.size_bytes(bad, "keep_free")


def test_gencore_file_names_and_pending(tmp_path):
    from gencore.ship import upload as _upload

    names = [
        "core_20261202.101500.42.001.core",
        "core_20261202.101500.42.001.tar.gz",  # the bundle of the core above: it goes instead
        "core_20261202.101501.42.002.core",
        ".core_20261202.101502.42.003.core.partial",  # being written
        "core_20261202.101503.42.004.tar.zst",
        "notes.txt",
    ]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"x" * 10)
        os.utime(tmp_path / n, (1000 + i, 1000 + i))
    (tmp_path / ".core_20261202.101503.42.004.tar.zst.uploaded").write_text("s3://x\n")
    assert [p.name for p in _upload.pending(tmp_path)] == [names[1], names[2]]
    removed = _upload.enforce_budget(tmp_path, max_total=1)
    # oldest first, never the newest gencore file, never the partial one or other files
    assert [r.path.name for r in removed] == [names[0], names[1], names[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names[3], names[4], names[5], ".core_20261202.101503.42.004.tar.zst.uploaded"]
    )


def test_encrypted_files_are_gencore_kinds():
    assert _common.core_names("x", None, True) == ("x.core.age", ".x.core.age.partial")
    assert _common.core_names("x.core.age", "zstd", True)[0] == "x.core.zst.age"
    assert _common.core_names("x.core.zst.age")[0] == "x.core"
    stem = "core_20261205.101010.42.001"
    for kind in (".core.age", ".core.zst.age", ".tar.gz.age", ".tar.zst.age"):
        assert _common.file_kind(stem + kind) == kind
        assert _common.file_stem(stem + kind) == stem
    assert (
        _common.plain_name("a.tar.gz.age") == "a.tar.gz"
        and _common.plain_name("a.core") == "a.core"
    )
