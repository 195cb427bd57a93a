"""Bundles: a core packed with the executable, its shared libraries and a manifest.

A bundle lets a core be analysed on another machine that does not have the exact interpreter
and libraries. :func:`collect_core` writes a core and then packs it, in a helper process (this
module run with ``-m``) so the application's interpreter does no compression or hashing:

    <stem>.tar.gz
      <stem>/<stem>.core
      <stem>/manifest.json
      <stem>/usr/lib/x86_64-linux-gnu/libc.so.6       (every file-backed ELF mapping)
      <stem>/root/.pyenv/versions/3.12.1/bin/python3.12 (the executable)
      <stem>/.../python3.12-gdb.py                    (when the interpreter has one)

Libraries deleted or replaced since they were loaded are taken from ``/proc/PID/map_files``
while the process lives; the manifest lists any that could not be recovered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno as errno_mod
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import IO, Any, Callable, Optional, Union

from .errors import CoreFormatError, GencoreError, describe_errno
from .reader import CoreFile, open_core
from .snapshot import (
    DEFAULT_FILTER,
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_TIMEOUT,
    VERSION,
    SnapshotReport,
    create_core,
    create_core_async,
)

FORMATS = ("tar.gz", "tar.zst")
AT_PHDR = 3
_CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int], None]


class BundleError(GencoreError):
    """Building or reading a bundle failed."""


class BundlePath(PosixPath):
    """A :class:`pathlib.Path` to a finished bundle.

    ``report`` is the core's :class:`~gencore.SnapshotReport`; ``manifest`` the bundle's
    manifest (what is in it, build-ids, sha256, missing files).
    """

    report: Optional[SnapshotReport] = None
    manifest: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance


# --------------------------------------------------------------------------------------------
# Which files a core needs
# --------------------------------------------------------------------------------------------


@dataclass
class _Wanted:
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


def _build_id_from_notes(data: bytes) -> Optional[str]:
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name_end = off + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            return None
        if ntype == 3 and data[off + 12 : off + 12 + namesz].rstrip(b"\0") == b"GNU":
            return data[name_end : name_end + descsz].hex()
        off = desc_end
    return None


def _build_id_in_memory(core: CoreFile, start: int) -> Optional[str]:
    """The GNU build-id of the ELF image mapped at ``start``, read from the core's memory."""
    try:
        hdr = core.read(start, 64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return None
        (phoff,) = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        if phentsize != 56 or phnum > 256:
            return None
        phdrs = core.read(start + phoff, phnum * 56)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * 56)
            if p_type == 4 and 0 < p_filesz <= 65536:
                bid = _build_id_from_notes(core.read(start + p_offset, p_filesz))
                if bid:
                    return bid
    except (GencoreError, struct.error, ValueError):
        return None
    return None


def _build_id_of_file(f: IO[bytes]) -> Optional[str]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                for n in seg.iter_notes():  # type: ignore[attr-defined]
                    if n["n_type"] == "NT_GNU_BUILD_ID":
                        return str(n["n_desc"])
    except (ELFError, ValueError, struct.error, OSError, AttributeError, KeyError):
        return None
    return None


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
        deleted = m.path.endswith(" (deleted)")
        path = m.path[: -len(" (deleted)")] if deleted else m.path
        w = by_path.get(path)
        if w is None:
            w = by_path[path] = _Wanted(path, m.start, m.end, deleted, None)
        elif m.file_offset == 0 and w.start > m.start:
            w.start, w.end = m.start, m.end
        if exe_addr is not None and m.start <= exe_addr < m.end:
            w.executable = True
    out = []
    for w in by_path.values():
        w.memory_build_id = _build_id_in_memory(core, w.start)
        head_in_core = w.memory_build_id is not None
        if head_in_core or _is_elf(w.path) or w.deleted:
            out.append(w)
    return out


def _c_string_at(core: CoreFile, addr: int, limit: int = 4096) -> str:
    out = b""
    while len(out) < limit:
        chunk = core.read(addr + len(out), 256)
        i = chunk.find(b"\0")
        if i >= 0:
            return (out + chunk[:i]).decode("utf-8", "surrogateescape")
        out += chunk
    return out.decode("utf-8", "surrogateescape")


def _loader_names(core: CoreFile) -> dict[str, str]:
    """The dynamic loader's names of the loaded libraries (``link_map.l_name``) -> mapped path.

    Debuggers look libraries up by these names (``/lib/x86_64-linux-gnu/libz.so.1``), which
    can differ from the resolved paths in the mappings (``/usr/lib/.../libz.so.1.2.13``).
    """
    names: dict[str, str] = {}
    try:
        phdr = core.auxv.get(AT_PHDR)
        phnum = core.auxv.get(5, 0)  # AT_PHNUM
        if phdr is None or not 0 < phnum <= 256:
            return names
        table = core.read(phdr, phnum * 56)
        bias, dyn = None, None
        for i in range(phnum):
            p_type, _, _, p_vaddr = struct.unpack_from("<IIQQ", table, i * 56)
            if p_type == 6:  # PT_PHDR
                bias = phdr - p_vaddr
            elif p_type == 2:  # PT_DYNAMIC
                dyn = p_vaddr
        if bias is None or dyn is None:
            return names
        r_debug = None
        addr = dyn + bias
        for _ in range(512):
            tag, val = struct.unpack("<qQ", core.read(addr, 16))
            if tag == 0:
                break
            if tag == 21:  # DT_DEBUG
                r_debug = val
            addr += 16
        if not r_debug:
            return names
        (lm,) = struct.unpack("<Q", core.read(r_debug + 8, 8))
        for _ in range(4096):
            if not lm:
                break
            _, l_name, l_ld, l_next = struct.unpack("<QQQQ", core.read(lm, 32))
            name = _c_string_at(core, l_name) if l_name else ""
            m = core.mapping_at(l_ld)
            if name.startswith("/") and m is not None and m.path:
                names[name] = (
                    m.path[: -len(" (deleted)")] if m.path.endswith(" (deleted)") else m.path
                )
            lm = l_next
    except (GencoreError, struct.error):
        pass
    return names


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
# The helper process
# --------------------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Reads a file once, hashing it and reporting progress."""

    def __init__(self, f: IO[bytes], progress: Callable[[int], None]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.progress = progress

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
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
            disk_id = _build_id_of_file(f)
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


def _open_output(path: Path, fmt: str) -> tuple[tarfile.TarFile, list[Any]]:
    raw = open(path, "xb")  # noqa: SIM115 - closed through the returned list
    os.fchmod(raw.fileno(), 0o600)
    if fmt == "tar.gz":
        return tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1), [raw]
    zstandard = _zstandard()
    writer = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False)
    return tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT), [writer, raw]


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise BundleError(
            "format='tar.zst' needs the zstandard package",
            stage="bundle",
            advice="pip install 'gencore[zstd]' (or zstandard), or use format='tar.gz'",
        ) from None
    return zstandard


def build_bundle(
    core_path: Path,
    output: Path,
    fmt: str,
    pid: Optional[int],
    progress: Callable[[int, int], None],
    stem: str,
) -> dict[str, Any]:
    """Pack a core, its executable and libraries into ``output`` (runs in the helper)."""
    core = open_core(core_path)
    try:
        wanted = _wanted_files(core)
        aliases = _loader_names(core)
        meta = core.metadata
        stacks = core.python_stacks
        pid = pid if pid is not None and pid == core.pid else None
    finally:
        core.close()
    scripts = _gdb_scripts(wanted)
    sources: list[tuple[str, Optional[IO[bytes]], dict[str, Any]]] = []
    missing = []
    for w in wanted:
        f, source, reason = _open_source(w, pid)
        entry: dict[str, Any] = {
            "path": w.path,
            "build_id": w.memory_build_id,
            "executable": w.executable,
        }
        if f is None:
            missing.append({**entry, "reason": reason})
            continue
        entry.update(source=source, **({"note": reason} if reason else {}))
        sources.append((_member(stem, w.path), f, entry))
    for s in scripts:
        sources.append(
            (
                _member(stem, s),
                open(s, "rb"),
                {"path": s, "build_id": None, "executable": False, "gdb_script": True},
            )
        )  # noqa: SIM115

    core_member = f"{stem}/{core_path.name}"
    total = core_path.stat().st_size
    for _, f, _ in sources:
        total += os.fstat(f.fileno()).st_size  # type: ignore[union-attr]
    done = 0
    last = [0.0]

    def advance(n: int) -> None:
        nonlocal done
        done += n
        now = time.monotonic()
        if now - last[0] > 0.2:
            last[0] = now
            progress(done, total)

    tar, closers = _open_output(output, fmt)
    files_doc = []
    try:
        with open(core_path, "rb") as cf:
            reader = _HashingReader(cf, advance)
            tar.addfile(_tarinfo(core_member, os.fstat(cf.fileno()).st_size), reader)  # type: ignore[arg-type]
            core_doc = {
                "member": core_member,
                "size": os.fstat(cf.fileno()).st_size,
                "sha256": reader.sha.hexdigest(),
            }
        for member, f, entry in sources:
            assert f is not None
            with f:
                data_size = os.fstat(f.fileno()).st_size
                reader = _HashingReader(f, advance)
                if entry.get("build_id") is None and not entry.get("gdb_script"):
                    entry["build_id"] = _build_id_of_file(f)
                    f.seek(0)
                tar.addfile(_tarinfo(member, data_size), reader)  # type: ignore[arg-type]
                files_doc.append(
                    {**entry, "member": member, "size": data_size, "sha256": reader.sha.hexdigest()}
                )
        members = {d["path"]: d["member"] for d in files_doc}
        alias_doc = {}
        for name, target in sorted(aliases.items()):
            if name in members or target not in members:
                continue
            ti = _tarinfo(_member(stem, name), 0)
            ti.type = tarfile.LNKTYPE
            ti.linkname = members[target]
            tar.addfile(ti)
            alias_doc[name] = target
        u = os.uname()
        manifest = {
            "format": 1,
            "gencore": VERSION,
            "pid": meta.get("pid"),
            "time": meta.get("time"),
            "reason": meta.get("reason"),
            "host": meta.get("host") or socket.gethostname(),
            "kernel": {"release": u.release, "version": u.version, "machine": u.machine},
            "python": meta.get("python", {}),
            "core": core_doc,
            "executable": next((d["member"] for d in files_doc if d.get("executable")), None),
            "files": files_doc,
            "aliases": alias_doc,
            "missing": missing,
            "stacks": stacks,
            "bundled_by": {"python": platform.python_version(), "time": time.time()},
        }
        data = json.dumps(manifest, indent=1).encode()
        tar.addfile(_tarinfo(f"{stem}/manifest.json", len(data)), io.BytesIO(data))
        tar.close()
        for c in closers:
            c.close()
    except BaseException:
        for c in closers:
            try:
                c.close()
            except Exception:  # noqa: S110 - best effort while failing
                pass
        raise
    progress(total, total)
    return manifest


def _helper_main() -> int:
    """``python -m gencore.bundle``: read a job on stdin, report JSON lines on stdout."""
    job = json.loads(sys.stdin.read())
    out = sys.stdout

    def progress(done: int, total: int) -> None:
        out.write(json.dumps({"progress": [done, total]}) + "\n")
        out.flush()

    final = Path(job["output"])
    partial = final.with_name("." + final.name + ".partial")
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        stem = final.name[: -len("." + job["format"])]
        manifest = build_bundle(
            Path(job["core"]), partial, job["format"], job.get("pid"), progress, stem
        )
        try:
            os.link(partial, final)
        finally:
            os.unlink(partial)
        if job.get("remove_core"):
            os.unlink(job["core"])
    except BaseException as e:
        try:
            os.unlink(partial)
        except OSError:
            pass
        err = getattr(e, "errno", None)
        out.write(json.dumps({"error": f"{type(e).__name__}: {e}", "errno": err}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ok": str(final), "manifest": manifest}) + "\n")
    out.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "tar.zst":
        _zstandard()


def _job(core: Path, fmt: str, keep_core: bool, pid: Optional[int]) -> tuple[bytes, Path]:
    stem = core.name[: -len(".core")] if core.name.endswith(".core") else core.name
    output = core.with_name(f"{stem}.{fmt}")
    if os.path.lexists(output):
        raise BundleError(
            f"{output} already exists",
            errno=errno_mod.EEXIST,
            stage="bundle",
            advice="pass another name=",
        )
    doc = {
        "core": str(core),
        "output": str(output),
        "format": fmt,
        "pid": pid,
        "remove_core": not keep_core,
    }
    return json.dumps(doc).encode(), output


def _remove_partial(output: Path) -> None:
    try:
        os.unlink(output.with_name("." + output.name + ".partial"))
    except OSError:
        pass


def _helper_cmd() -> list[str]:
    return [sys.executable, "-m", "gencore.bundle"]


class _Reply:
    def __init__(self, on_progress: Optional[ProgressCallback]) -> None:
        self.on_progress = on_progress
        self.result: Optional[dict[str, Any]] = None

    def line(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if "progress" in msg:
            if self.on_progress is not None:
                self.on_progress(*msg["progress"])
        else:
            self.result = msg

    def finish(self, rc: int, stderr: bytes, report: Optional[SnapshotReport]) -> BundlePath:
        r = self.result
        if r is None or "ok" not in r:
            why = (r or {}).get("error") or stderr.decode(errors="replace").strip()[-500:]
            err = (r or {}).get("errno")
            raise BundleError(
                f"building the bundle failed: {why or f'helper exit status {rc}'}",
                errno=err,
                stage="bundle",
                advice=(
                    "free space in the directory and retry"
                    if err in (errno_mod.ENOSPC, errno_mod.EDQUOT)
                    else "the core itself was kept; bundle it with `gencore bundle CORE`"
                ),
            )
        p = BundlePath(r["ok"])
        p.report = report
        p.manifest = r["manifest"]
        return p


def bundle_core(
    core: PathLike,
    *,
    format: str = "tar.gz",
    keep_core: bool = True,
    pid: Optional[int] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    on_progress: Optional[ProgressCallback] = None,
) -> BundlePath:
    """Pack an existing core with its executable, libraries and manifest, next to it.

    The work runs in a helper process. ``pid`` is the live process the core was taken from
    (its ``/proc/PID/map_files`` recovers deleted libraries); leave it ``None`` for old cores.
    """
    _check_format(format)
    core = Path(core)
    report = getattr(core, "report", None)
    data, output = _job(core, format, keep_core, pid)
    reply = _Reply(on_progress)
    try:
        p = subprocess.Popen(
            _helper_cmd(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
    except OSError as e:
        raise BundleError(
            f"cannot start the bundle helper: {describe_errno(e.errno)}",
            errno=e.errno,
            stage="bundle",
            advice="check that the interpreter can start processes",
        ) from None
    err_buf: list[bytes] = []
    t = threading.Thread(target=lambda: err_buf.append(p.stderr.read()), daemon=True)  # type: ignore[union-attr]
    t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(data)
        p.stdin.close()
        for raw in p.stdout:
            reply.line(raw)
            if deadline is not None and time.monotonic() > deadline:
                raise BundleError(
                    f"the bundle was not finished within {timeout:g} s",
                    errno=errno_mod.ETIMEDOUT,
                    stage="bundle",
                    advice="pass a larger timeout=",
                )
        rc = p.wait(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    except BaseException:
        p.kill()
        p.wait()
        _remove_partial(output)  # the killed helper could not
        raise
    t.join(5)
    return reply.finish(rc, b"".join(err_buf), report)


def collect_core(
    directory: Optional[PathLike] = None,
    *,
    format: str = "tar.gz",
    name: Optional[str] = None,
    keep_core: bool = False,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
    on_progress: Optional[ProgressCallback] = None,
) -> BundlePath:
    """Write a core of this process and pack it with everything needed to analyse it elsewhere.

    Returns ``<stem>.tar.gz`` (or ``.tar.zst``): the core, the executable, every file-backed
    ELF mapping at its original path under ``<stem>/``, the interpreter's ``python-gdb.py``
    and ``manifest.json`` (pid, time, host, kernel, Python, build-ids, sha256, Python stacks).
    The core is taken exactly like :func:`~gencore.create_core` (same arguments); the archive
    is built by a helper process, so this interpreter only waits. The loose core is removed
    unless ``keep_core``. ``on_progress(done, total)`` reports the core's writing, then the
    bundling.
    """
    _check_format(format)
    core = create_core(
        directory,
        name=name,
        threads=threads,
        python_stacks=python_stacks,
        filter=filter,
        freeze_timeout=freeze_timeout,
        timeout=timeout,
        freeze_signal=freeze_signal,
        force=force,
        on_progress=on_progress,
    )
    # If bundling fails the core stays where it is: it is the valuable part.
    return bundle_core(
        core,
        format=format,
        keep_core=keep_core,
        pid=os.getpid(),
        timeout=timeout,
        on_progress=on_progress,
    )


async def collect_core_async(
    directory: Optional[PathLike] = None,
    *,
    format: str = "tar.gz",
    name: Optional[str] = None,
    keep_core: bool = False,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
    on_progress: Optional[ProgressCallback] = None,
) -> BundlePath:
    """Like :func:`collect_core`, as a coroutine: no thread, the helper is watched by the loop."""
    _check_format(format)
    core = await create_core_async(
        directory,
        name=name,
        threads=threads,
        python_stacks=python_stacks,
        filter=filter,
        freeze_timeout=freeze_timeout,
        timeout=timeout,
        freeze_signal=freeze_signal,
        force=force,
        on_progress=on_progress,
    )
    data, output = _job(core, format, keep_core, os.getpid())
    reply = _Reply(on_progress)
    proc = await asyncio.create_subprocess_exec(
        *_helper_cmd(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()

        async def lines() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                reply.line(raw)

        err_task = asyncio.ensure_future(proc.stderr.read())
        await asyncio.wait_for(lines(), timeout)
        rc = await proc.wait()
        stderr = await err_task
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            _remove_partial(output)
        raise
    return reply.finish(rc, stderr, core.report)


def start_collect(
    directory: Optional[PathLike] = None,
    *,
    callback: Optional[Callable[[Optional[BaseException], Optional[BundlePath]], None]] = None,
    format: str = "tar.gz",
    name: Optional[str] = None,
    keep_core: bool = False,
    threads: bool = True,
    python_stacks: bool = True,
    filter: int = DEFAULT_FILTER,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    freeze_signal: Optional[int] = None,
    force: bool = False,
) -> concurrent.futures.Future[BundlePath]:
    """Take the snapshot now; bundle it in the background. The callback form of collect_core.

    The freeze and fork happen before this returns. ``callback(error, path)`` is called from a
    daemon thread when the bundle is done.
    """
    from .snapshot import in_thread, start_core

    _check_format(format)
    core_fut = start_core(
        directory,
        name=name,
        threads=threads,
        python_stacks=python_stacks,
        filter=filter,
        freeze_timeout=freeze_timeout,
        timeout=timeout,
        freeze_signal=freeze_signal,
        force=force,
    )
    pid = os.getpid()

    def work() -> BundlePath:
        core = core_fut.result()
        return bundle_core(core, format=format, keep_core=keep_core, pid=pid, timeout=timeout)

    return in_thread(work, callback, "gencore-collect")


# --------------------------------------------------------------------------------------------
# Reading bundles
# --------------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_bundle(path: PathLike) -> bool:
    """True when ``path`` starts like a gzip or zstd stream (a bundle, not a bare core)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == _GZIP_MAGIC or head == _ZSTD_MAGIC


@dataclass
class ExtractedBundle:
    """A bundle unpacked in a directory: ``root`` is the fake ``/`` of the original machine."""

    root: Path
    core: Path
    executable: Optional[Path]
    manifest: dict[str, Any]


def _open_tar(path: Path) -> tuple[tarfile.TarFile, list[Any]]:
    raw = open(path, "rb")  # noqa: SIM115 - closed through the returned list
    head = raw.read(4)
    raw.seek(0)
    if head == _ZSTD_MAGIC:
        reader = _zstandard().ZstdDecompressor().stream_reader(raw)
        return tarfile.open(fileobj=reader, mode="r|"), [reader, raw]
    return tarfile.open(fileobj=raw, mode="r|gz"), [raw]


def _safe_name(name: str) -> Optional[str]:
    if name.startswith("/") or "\0" in name:
        return None
    parts = name.split("/")
    if any(p in ("..",) for p in parts) or len(parts) < 2:
        return None
    return os.path.normpath(name)


def extract_bundle(bundle: PathLike, dest: PathLike, *, core_only: bool = False) -> ExtractedBundle:
    """Unpack a bundle into ``dest`` safely: regular files only, no absolute paths, no ``..``.

    Raises:
        CoreFormatError: the file is not a readable bundle.
    """
    bundle, dest = Path(bundle), Path(dest)
    stem: Optional[str] = None
    core: Optional[Path] = None
    manifest: dict[str, Any] = {}
    try:
        tar, closers = _open_tar(bundle)
    except OSError as e:
        raise CoreFormatError(f"cannot open {bundle}: {e.strerror}", errno=e.errno) from None
    except Exception as e:
        raise CoreFormatError(f"{bundle} is not a readable bundle: {e}") from None
    try:
        for ti in tar:
            name = _safe_name(ti.name)
            if name is None or not (ti.isfile() or ti.islnk()):
                continue  # directories, symlinks, devices and unsafe names are never created
            top = name.split("/", 1)[0]
            stem = stem or top
            if top != stem:
                continue
            if ti.islnk():
                # an alias of a file already extracted from this bundle
                src_name = _safe_name(ti.linkname)
                if core_only or src_name is None or not src_name.startswith(stem + "/"):
                    continue
                src_path, target = dest / src_name, dest / name
                if src_path.is_file() and not src_path.is_symlink() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    os.link(src_path, target)
                continue
            is_core = name == f"{stem}/{stem}.core"
            is_manifest = name == f"{stem}/manifest.json"
            if core_only and not (is_core or is_manifest):
                continue
            src = tar.extractfile(ti)
            if src is None:
                continue
            if is_manifest:
                try:
                    manifest = json.loads(src.read(16 << 20))
                except ValueError:
                    manifest = {}
                if not isinstance(manifest, dict):
                    manifest = {}
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            if is_core:
                core = target
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise CoreFormatError(f"{bundle} is not a readable bundle: {e}") from None
    except Exception as e:  # zlib/zstd errors and anything else a damaged stream raises
        raise CoreFormatError(
            f"{bundle} is not a readable bundle: {type(e).__name__}: {e}"
        ) from None
    finally:
        for c in closers:
            c.close()
    if stem is None or core is None:
        raise CoreFormatError(f"{bundle} holds no <stem>/<stem>.core member: not a gencore bundle")
    root = dest / stem
    exe_member = manifest.get("executable")
    exe = None
    if isinstance(exe_member, str):
        safe = _safe_name(exe_member)
        if safe is not None and (dest / safe).is_file():
            exe = dest / safe
    return ExtractedBundle(root=root, core=core, executable=exe, manifest=manifest)


def open_bundle_core(path: PathLike) -> CoreFile:
    """Open the core inside a bundle (extracted to a private temp dir removed on close)."""
    tmp = tempfile.mkdtemp(prefix="gencore-bundle-")
    try:
        ex = extract_bundle(path, tmp, core_only=True)
        core = open_core(ex.core)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    core.cleanup_dir = tmp
    core.manifest = ex.manifest
    return core


if __name__ == "__main__":
    sys.exit(_helper_main())


__all__ = [
    "BundleError",
    "BundlePath",
    "ExtractedBundle",
    "build_bundle",
    "bundle_core",
    "collect_core",
    "collect_core_async",
    "extract_bundle",
    "is_bundle",
    "open_bundle_core",
    "start_collect",
]
