"""The helper process, outside the application's interpreter, at nice 10.

- ``python -m gencore.ship.helper bundle ...`` packs a core into a bundle (started by
  :mod:`gencore.bundle`);
- ``python -m gencore.ship.helper finish ...`` does what the triggers ask after each core: the
  bundle, the upload (see :mod:`gencore.ship.upload`, with earlier files that are still
  pending) and the directory's budget. The native ``gencore`` thread starts it after a
  signal dump, while the GIL may be stuck.

The command lines are built by :func:`bundle_argv` and :func:`finish_argv`, their one
definitions; the caller appends the core's file name. Progress and the result are JSON lines
on stdout; with ``--events`` the outcome is also appended to the trigger's events file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

from .._common import AGE_SUFFIX, BUNDLE_FORMATS, BUNDLE_KINDS, VERSION, plain_name, stem_of
from ..analysis.core import CoreFile, open_core
from ..analysis.reader import AT_PHDR, build_id_of_file, strip_deleted
from ..analysis.report.trigger import trigger_of
from .crypt import is_encrypted
from .extract import import_zstandard

_CHUNK = 1 << 20


def bundle_argv(
    python: str,
    directory: Path,
    fmt: str,
    pid: Optional[int],
    *,
    remove_core: bool = False,
    events: Optional[Path] = None,
    encrypt_to: tuple[str, ...] = (),
) -> list[str]:
    """The helper's command line, without the core's file name (appended by the caller)."""
    argv = [python, "-m", "gencore.ship.helper", "bundle", "--directory", str(directory)]
    argv += ["--format", fmt]
    for r in encrypt_to:
        argv += ["--encrypt-to", r]
    if pid is not None:
        argv += ["--pid", str(pid)]
    if remove_core:
        argv.append("--remove-core")
    if events is not None:
        argv += ["--events", str(events)]
    return argv


def finish_argv(
    python: str,
    directory: Path,
    *,
    fmt: Optional[str],
    pid: Optional[int],
    events: Optional[Path],
    upload: Optional[str],
    keep_local: bool,
    max_total: int,
    keep_free: int,
    encrypt_to: tuple[str, ...] = (),
) -> list[str]:
    """The ``finish`` helper's command line, without the core's file name."""
    argv = [python, "-m", "gencore.ship.helper", "finish", "--directory", str(directory)]
    for r in encrypt_to:
        argv += ["--encrypt-to", r]
    if fmt is not None:
        argv += ["--format", fmt]
    if pid is not None:
        argv += ["--pid", str(pid)]
    if events is not None:
        argv += ["--events", str(events)]
    if upload:
        argv += ["--upload", upload]
    if keep_local:
        argv.append("--keep-local")
    if max_total:
        argv += ["--max-total", str(max_total)]
    if keep_free:
        argv += ["--keep-free", str(keep_free)]
    return argv


def bundle_name(core_name: str, fmt: str, encrypt: bool = False) -> str:
    """``<stem>.tar.gz`` for ``<stem>.core`` (or ``<stem>.core.zst``, ``.core.age``...);
    ``<stem>.tar.gz.age`` when the bundle is encrypted."""
    stem = stem_of(stem_of(plain_name(core_name), ".zst"))
    return f"{stem}.{fmt}" + (AGE_SUFFIX if encrypt else "")


# --------------------------------------------------------------------------------------------
# Which files a core needs
# --------------------------------------------------------------------------------------------


@dataclass
class _Wanted:
    """A file-backed ELF mapping the bundle should carry."""

    path: str  # path in the process (without " (deleted)")
    start: int  # address of the mapping at file offset 0 (or the first one)
    end: int
    deleted: bool
    memory_build_id: Optional[str]
    executable: bool = False
    gdb_script: bool = False
    source: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _wanted_files(core: CoreFile) -> list[_Wanted]:
    exe_addr = core.auxv.get(AT_PHDR)
    by_path: dict[str, _Wanted] = {}
    for m in core.mappings:
        if not m.path or not m.path.startswith("/") or m.path.startswith(("/dev/", "/memfd:")):
            continue
        path, deleted = strip_deleted(m.path)
        w = by_path.get(path)
        if w is None:
            w = by_path[path] = _Wanted(path, m.start, m.end, deleted, None)
        elif m.file_offset == 0 and w.start > m.start:
            w.start, w.end = m.start, m.end
        if exe_addr is not None and m.start <= exe_addr < m.end:
            w.executable = True
    out = []
    for w in by_path.values():
        w.memory_build_id = core.build_id_at(w.start)
        head_in_core = w.memory_build_id is not None
        if head_in_core or _is_elf(w.path) or w.deleted:
            out.append(w)
    return out


def _gdb_scripts(files: list[_Wanted]) -> list[str]:
    """``<objfile>-gdb.py`` auto-load scripts of the bundled files (python-gdb.py)."""
    found = []
    for w in files:
        real = os.path.realpath(w.path)
        for cand in (
            w.path + "-gdb.py",
            real + "-gdb.py",
            "/usr/share/gdb/auto-load" + real + "-gdb.py",
            "/usr/share/gdb/auto-load" + w.path + "-gdb.py",
        ):
            if os.path.isfile(cand) and cand not in found:
                found.append(cand)
    return found


# --------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Reads a file once, hashing it and reporting progress."""

    def __init__(self, f: IO[bytes], progress: Callable[[int], None]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.progress = progress

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override,unused-ignore]
        data = self.f.read(n if n is not None and n >= 0 else _CHUNK)
        self.sha.update(data)
        self.progress(len(data))
        return data


def _member(stem: str, path: str) -> str:
    rel = os.path.normpath(path).lstrip("/")
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe member path {path!r}")
    return f"{stem}/{rel}"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o600
    ti.mtime = int(time.time())
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _open_source(w: _Wanted, pid: Optional[int]) -> tuple[Optional[IO[bytes]], str, str]:
    """The bytes of a mapped file: from disk if they still match, else from map_files."""
    reason = ""
    if not w.deleted:
        try:
            f = open(w.path, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as e:
            reason = f"cannot open: {e.strerror}"
        else:
            disk_id = build_id_of_file(f)
            if w.memory_build_id is None or disk_id == w.memory_build_id:
                f.seek(0)
                return f, "file", ""
            f.close()
            reason = f"replaced on disk (build-id {disk_id} != loaded {w.memory_build_id})"
    else:
        reason = "deleted since it was loaded"
    if pid is not None:
        try:
            f = open(f"/proc/{pid}/map_files/{w.start:x}-{w.end:x}", "rb")  # noqa: SIM115
            return f, "map_files", reason
        except OSError as e:
            reason += f"; /proc/{pid}/map_files unreadable: {e.strerror}"
    return None, "", reason


class _Encryptor:
    """The encrypting filter (``capture/agepipe.py``) between the archive and its file: the
    file only ever holds ciphertext."""

    def __init__(self, out: IO[bytes], recipients: tuple[str, ...]) -> None:
        script = Path(__file__).parent.parent / "capture" / "agepipe.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "-", "1", *recipients],
            stdin=subprocess.PIPE,
            stdout=out,
        )
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin

    def write(self, data: bytes) -> int:
        return self.stdin.write(data)

    def flush(self) -> None:
        self.stdin.flush()

    def close(self) -> None:
        if self.stdin.closed:
            return
        self.stdin.close()
        code = self.proc.wait()
        if code:
            raise OSError(code if 1 < code < 125 else 0, f"the age encryptor exited with {code}")


def _open_output(
    path: Path, fmt: str, encrypt_to: tuple[str, ...] = ()
) -> tuple[tarfile.TarFile, list[Any]]:
    raw: Any = open(path, "xb")  # noqa: SIM115 - closed through the returned list
    os.fchmod(raw.fileno(), 0o600)
    closers: list[Any] = []
    if encrypt_to:
        closers.append(raw)
        raw = _Encryptor(raw, encrypt_to)
    if fmt == "tar.gz":
        return tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1), [raw, *closers]
    zstandard = import_zstandard()
    writer = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False)
    return tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT), [
        writer,
        raw,
        *closers,
    ]


_Source = tuple[str, IO[bytes], dict[str, Any]]


@dataclass
class _Plan:
    """What goes into one bundle, found from the core before anything is written."""

    sources: list[_Source] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    stacks: list[dict[str, Any]] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    core_path: Optional[Path] = None  # the plain core to pack
    compressed: Optional[CoreFile] = None  # a .core.zst's decompressed copy, open till the end

    def close(self) -> None:
        for _, f, _ in self.sources:
            f.close()
        if self.compressed is not None:
            self.compressed.close()


def _wanted_live(pid: int) -> list[_Wanted]:
    """An encrypted core cannot be read here: the files its live process maps instead."""
    from .. import _procfs

    try:
        raw = Path(f"/proc/{pid}/auxv").read_bytes()
        pairs = dict(struct.unpack_from("<QQ", raw, i) for i in range(0, len(raw) - 15, 16))
    except OSError:
        pairs = {}
    exe_addr = pairs.get(AT_PHDR)
    by_path: dict[str, _Wanted] = {}
    for m in _procfs.maps(pid):
        if not m.path.startswith("/") or m.path.startswith(("/dev/", "/memfd:")):
            continue
        path, deleted = strip_deleted(m.path)
        w = by_path.setdefault(path, _Wanted(path, m.start, m.end, deleted, None))
        if exe_addr is not None and m.start <= exe_addr < m.end:
            w.executable = True
    return [w for w in by_path.values() if w.deleted or _is_elf(w.path)]


def _plan(core_path: Path, pid: Optional[int], stem: str) -> _Plan:
    plan = _Plan(core_path=core_path)
    if is_encrypted(core_path):
        # packed as it is; what it needs comes from its process, if it still runs
        alive = pid is not None and os.path.exists(f"/proc/{pid}/maps")
        wanted = _wanted_live(pid) if alive and pid is not None else []
        plan.meta = {"pid": pid, "python": {"version": platform.python_version()}}
        if not alive:
            plan.missing.append(
                {
                    "path": None,
                    "reason": "the core is encrypted and its "
                    "process is gone: its libraries are not known here",
                }
            )
        return _plan_sources(plan, wanted, pid if alive else None, stem)
    core = open_core(core_path)
    if core.source is not None and not core.manifest:
        plan.core_path, plan.compressed = core.path, core  # bundles hold the plain core
    try:
        wanted = _wanted_files(core)
        plan.aliases = core.loader_names()
        plan.meta = core.metadata
        plan.stacks = core.python_stacks
        plan.trigger = trigger_of(core).to_json()
        pid = pid if pid is not None and pid == core.pid else None
    finally:
        if plan.compressed is None:
            core.close()
    return _plan_sources(plan, wanted, pid, stem)


def _plan_sources(plan: _Plan, wanted: list[_Wanted], pid: Optional[int], stem: str) -> _Plan:
    for w in wanted:
        f, source, reason = _open_source(w, pid)
        entry: dict[str, Any] = {
            "path": w.path,
            "build_id": w.memory_build_id,
            "executable": w.executable,
        }
        if f is None:
            plan.missing.append({**entry, "reason": reason})
            continue
        entry.update(source=source, **({"note": reason} if reason else {}))
        plan.sources.append((_member(stem, w.path), f, entry))
    for s in _gdb_scripts(wanted):
        entry = {"path": s, "build_id": None, "executable": False, "gdb_script": True}
        plan.sources.append((_member(stem, s), open(s, "rb"), entry))  # noqa: SIM115
    return plan


class _Progress:
    """Counts bytes packed and reports at most five times a second."""

    def __init__(self, total: int, report: Callable[[int, int], None]) -> None:
        self.done, self.total, self.report, self.last = 0, total, report, 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last > 0.2:
            self.last = now
            self.report(self.done, self.total)


def _add(tar: tarfile.TarFile, member: str, f: IO[bytes], progress: _Progress) -> dict[str, Any]:
    """Add one file (read once, hashed on the way) and describe it for the manifest."""
    size = os.fstat(f.fileno()).st_size
    reader = _HashingReader(f, progress)
    tar.addfile(_tarinfo(member, size), reader)  # type: ignore[arg-type,unused-ignore]
    return {"member": member, "size": size, "sha256": reader.sha.hexdigest()}


def _manifest(
    plan: _Plan, core_doc: dict[str, Any], files: list[dict[str, Any]], aliases: dict[str, str]
) -> dict[str, Any]:
    u = os.uname()
    meta = plan.meta
    return {
        "format": 1,
        "gencore": VERSION,
        "pid": meta.get("pid"),
        "time": meta.get("time"),
        "reason": meta.get("reason"),
        "host": meta.get("host") or socket.gethostname(),
        "kernel": {"release": u.release, "version": u.version, "machine": u.machine},
        "python": meta.get("python", {}),
        "core": core_doc,
        "executable": next((d["member"] for d in files if d.get("executable")), None),
        "files": files,
        "aliases": aliases,
        "missing": plan.missing,
        "stacks": plan.stacks,
        "trigger": plan.trigger,
        "bundled_by": {"python": platform.python_version(), "time": time.time()},
    }


def _pack(tar: tarfile.TarFile, plan: _Plan, stem: str, progress: _Progress) -> dict[str, Any]:
    core_path = plan.core_path
    assert core_path is not None
    with open(core_path, "rb") as cf:
        core_doc = _add(tar, f"{stem}/{core_path.name}", cf, progress)
    if is_encrypted(core_path):
        core_doc["encrypted"] = "age"  # as the snapshot child wrote it
    files = []
    for member, f, entry in plan.sources:
        if entry.get("build_id") is None and not entry.get("gdb_script"):
            entry["build_id"] = build_id_of_file(f)
            f.seek(0)
        files.append({**entry, **_add(tar, member, f, progress)})
    members = {d["path"]: d["member"] for d in files}
    aliases = {}
    for name, target in sorted(plan.aliases.items()):
        if name in members or target not in members:
            continue
        ti = _tarinfo(_member(stem, name), 0)
        ti.type = tarfile.LNKTYPE
        ti.linkname = members[target]
        tar.addfile(ti)
        aliases[name] = target
    manifest = _manifest(plan, core_doc, files, aliases)
    data = json.dumps(manifest, indent=1).encode()
    tar.addfile(_tarinfo(f"{stem}/manifest.json", len(data)), io.BytesIO(data))
    return manifest


def build_bundle(
    core_path: Path,
    output: Path,
    fmt: str,
    pid: Optional[int],
    report: Callable[[int, int], None],
    stem: str,
    encrypt_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Pack a core, its executable and libraries into ``output`` (an age file with
    ``encrypt_to``); returns the manifest."""
    plan = _plan(core_path, pid, stem)
    try:
        assert plan.core_path is not None
        total = plan.core_path.stat().st_size + sum(
            os.fstat(f.fileno()).st_size for _, f, _ in plan.sources
        )
        progress = _Progress(total, report)
        tar, closers = _open_output(output, fmt, encrypt_to)
        try:
            manifest = _pack(tar, plan, stem, progress)
            tar.close()
        finally:
            for c in closers:
                c.close()
    finally:
        plan.close()
    report(total, total)
    return manifest


def _event(events: Optional[str], line: str) -> None:
    if not events:
        return
    try:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    finally:
        os.close(fd)


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _bundle_main(args: argparse.Namespace) -> int:
    say = _say
    directory = Path(args.directory)
    core = directory / args.core
    encrypt_to = tuple(args.encrypt_to or ())
    final = directory / bundle_name(args.core, args.format, bool(encrypt_to))
    partial = final.with_name("." + final.name + ".partial")
    try:
        manifest = build_bundle(
            core,
            partial,
            args.format,
            args.pid,
            lambda d, t: say({"progress": [d, t]}),
            stem_of(plain_name(final.name), "." + args.format),
            encrypt_to,
        )
        if getattr(args, "max_total", 0) or getattr(args, "keep_free", 0):
            _budget(args, directory, new_bytes=partial.stat().st_blocks * 512)
        try:
            os.link(partial, final)
        finally:
            os.unlink(partial)
        if args.remove_core:
            os.unlink(core)
    except BaseException as e:
        try:
            os.unlink(partial)
        except OSError:
            pass
        say({"error": f"{type(e).__name__}: {e}", "errno": getattr(e, "errno", None)})
        _event(args.events, f"bundle-error {type(e).__name__}: {e}")
        return 1
    _event(args.events, f"bundle {final.name}")
    say({"ok": str(final), "manifest": manifest})
    return 0


UPLOAD_WINDOW_S = 60.0
"""How long one helper may spend on uploads (its own file and earlier pending ones): retries
against an unreachable store end; the next helper (or gencore upload --pending) goes on."""


def _budget(args: argparse.Namespace, directory: Path, new_bytes: int = 0) -> None:
    """The directory's budget, now (before a new file appears, and before any upload)."""
    from . import upload as _upload

    for r in _upload.enforce_budget(
        directory,
        max_total=args.max_total,
        keep_free=args.keep_free,
        new_bytes=new_bytes,
        uploads=bool(args.upload),
        keep_newest=not new_bytes,
    ):
        _say({"log": f"removed {r.path.name} ({r.bytes} bytes) to keep the directory's budget"})
        _event(args.events, r.event)


def _upload_pending(args: argparse.Namespace, directory: Path, first: Path) -> int:
    """Upload ``first``, then what is still pending, one helper per directory at a time
    (a lock in the directory), for at most UPLOAD_WINDOW_S."""
    from . import upload as _upload

    rc = 0
    deadline = time.monotonic() + UPLOAD_WINDOW_S

    def log(line: str) -> None:
        _say({"log": line})

    with _upload.directory_lock(directory, deadline) as locked:
        if not locked:
            _event(args.events, f"upload-deferred {first.name} another helper is uploading")
            return 1
        _budget(args, directory)
        todo = [first] + [p for p in _upload.pending(directory) if p != first]
        for path in todo:
            if time.monotonic() >= deadline:
                _event(args.events, f"upload-deferred {path.name} out of time")
                continue
            if not path.exists():
                continue
            try:
                url = _upload.upload_file(
                    path, args.upload, keep_local=args.keep_local, log=log, deadline=deadline
                )
            except Exception as e:
                rc = 1
                _say({"upload_error": str(e), "file": path.name})
                _event(args.events, f"upload-error {path.name} {e}")
                continue
            if not args.keep_local:
                _remove_loose_core(directory, path.name)
            _say({"uploaded": url, "file": path.name})
            _event(args.events, f"upload {path.name} {url}")
    return rc


def _finish_main(args: argparse.Namespace) -> int:
    """Bundle (if asked; room is made before it appears), keep the budget, upload (if asked,
    with what is still pending)."""
    directory = Path(args.directory)
    core = directory / args.core
    rc = 0
    result = core
    if args.format:
        args.remove_core = False
        rc = _bundle_main(args)
        bundle = directory / bundle_name(args.core, args.format, bool(args.encrypt_to))
        result = bundle if rc == 0 else core
    _budget(args, directory)
    if args.upload and result.exists():
        rc = _upload_pending(args, directory, result) or rc
    _event(args.events, f"finished {args.core}")
    return rc


def _remove_loose_core(directory: Path, bundle: str) -> None:
    """A bundle was uploaded and removed: the loose core it carries goes too."""
    for kind in BUNDLE_KINDS:
        if bundle.endswith(kind):
            encrypted = kind.endswith(AGE_SUFFIX)
            core = directory / (bundle[: -len(kind)] + (".core.age" if encrypted else ".core"))
            try:
                core.unlink()
            except OSError:
                pass


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m gencore.ship.helper``."""
    ap = argparse.ArgumentParser(prog="python -m gencore.ship.helper")
    sub = ap.add_subparsers(dest="job", required=True)
    b = sub.add_parser("bundle", help="pack DIRECTORY/CORE into DIRECTORY/<stem>.<format>")
    b.add_argument("--directory", required=True)
    b.add_argument("--format", choices=BUNDLE_FORMATS, required=True)
    b.add_argument("--pid", type=int)
    b.add_argument("--remove-core", action="store_true")
    b.add_argument("--events")
    b.add_argument("--encrypt-to", action="append", help="age recipient of the bundle")
    b.add_argument("core")
    f = sub.add_parser("finish", help="after a triggered core: bundle, upload, budget")
    f.add_argument("--directory", required=True)
    f.add_argument("--format", choices=BUNDLE_FORMATS)
    f.add_argument("--pid", type=int)
    f.add_argument("--events")
    f.add_argument("--upload")
    f.add_argument("--keep-local", action="store_true")
    f.add_argument("--max-total", type=int, default=0)
    f.add_argument("--keep-free", type=int, default=0)
    f.add_argument("--encrypt-to", action="append", help="age recipient of the bundle")
    f.add_argument("core")
    args = ap.parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    return _bundle_main(args) if args.job == "bundle" else _finish_main(args)


if __name__ == "__main__":
    sys.exit(main())
