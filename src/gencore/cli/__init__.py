"""The ``gencore`` command.

Exit codes: 0 success, 1 the operation failed (a GencoreError, or a tool failed),
2 bad usage or an unreadable core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .._common import BUNDLE_FORMATS, format_size, stem_of
from ..analysis.core import CoreFile, open_core
from ..errors import CoreFormatError, GencoreError

DEMO_PROGRAM = textwrap.dedent(
    '''
    """gencore demo: a small service with busy threads dumps itself while it keeps running."""
    import hashlib, queue, socket, sys, threading, time
    import gencore

    def handle_requests(q):
        while True:
            item = q.get()
            hashlib.sha256(item * 1000).hexdigest()

    def wait_for_lock(lock):
        with lock:
            pass

    def read_socket(sock):
        sock.recv(1)

    def compute_forever():
        n = 0
        while True:
            n += sum(i * i for i in range(1000))

    lock = threading.Lock(); lock.acquire()
    a, b = socket.socketpair()
    q = queue.Queue()
    for name, target, args in [("worker-queue", handle_requests, (q,)),
                               ("worker-lock", wait_for_lock, (lock,)),
                               ("worker-socket", read_socket, (a,)),
                               ("worker-cpu", compute_forever, ())]:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()
    time.sleep(0.2)
    path = gencore.create_core(sys.argv[1])
    r = path.report
    print(f"{path}\\t{r.pause_s * 1000:.2f}\\t{len(r.threads)}\\t{r.elapsed_s:.2f}", flush=True)
    '''
)


def _print_stacks(core: CoreFile, out: Any) -> None:
    stacks = core.python_stacks
    if not stacks:
        reason = core.metadata.get("reason")
        if reason in ("signal", "crash"):
            why = f"it was written by the {reason} trigger, in a signal handler where Python "
            why += "cannot run"
        elif core.metadata:
            why = "it was written with python_stacks=False"
        else:
            why = "it was not written by gencore"
        print(
            f"no Python stacks stored in this core: {why}. Read them from memory with "
            "`pystack core CORE` (or `gencore debug BUNDLE`).",
            file=out,
        )
        return
    meta = core.metadata
    print(f"Process {core.pid}: {core.command}", file=out)
    py = meta.get("python", {})
    print(
        f"Python v{py.get('version', '?')} ({py.get('executable', '?')}), "
        f"reason: {meta.get('reason', '?')}",
        file=out,
    )
    print("", file=out)
    for t in stacks:
        tid = t.get("native_id") or t.get("ident")
        flags = " (snapshot caller)" if t.get("current") else ""
        print(f'Thread {tid}{flags}: "{t.get("name")}"', file=out)
        for f in t.get("frames", []):
            print(
                f"    {f.get('qualname') or f.get('function')} ({f.get('file')}:{f.get('line')})",
                file=out,
            )
        if t.get("frames_skipped"):
            print(f"    ... {t['frames_skipped']} more frames", file=out)
    if core.incomplete_threads:
        print(
            f"\nincomplete threads (did not stop for the snapshot): "
            f"{', '.join(map(str, core.incomplete_threads))}",
            file=out,
        )


def _info(core: CoreFile) -> dict[str, Any]:
    dumped = sum(m.filesz for m in core.mappings)
    holes = 0
    names = {
        t.get("native_id"): t.get("name")
        for t in core.metadata.get("threads", [])
        if isinstance(t, dict)
    }
    files: dict[str, int] = {}
    for m in core.mappings:
        if m.path:
            files[m.path] = files.get(m.path, 0) + m.size
    anon = sum(m.size for m in core.mappings if not m.path)
    # a capped core leaves omitted anonymous memory out of its PT_LOADs: still mapped
    budget = core.capture.get("budget")
    ranges = budget.get("omitted_ranges") if isinstance(budget, dict) else None
    for r in ranges if isinstance(ranges, list) else []:
        if isinstance(r, list) and len(r) == 2 and core.mapping_at(r[0]) is None:
            anon += r[1] - r[0]
            holes += r[1] - r[0]
    stored = os.stat(core.source or core.path)
    compressed = core.source is not None and not core.manifest
    return {
        "path": str(core.source or core.path),
        "pid": core.pid,
        "command": core.command,
        "signal": core.signal,
        "threads": [
            {"tid": t.tid, "name": names.get(t.tid), "pc": t.pc, "sp": t.sp} for t in core.threads
        ],
        "incomplete_threads": core.incomplete_threads,
        "mappings": len(core.mappings),
        "file_mappings": len(files),
        "largest_files": sorted(files.items(), key=lambda kv: -kv[1])[:5],
        "anonymous_bytes": anon,
        "mapped_bytes": sum(m.size for m in core.mappings) + holes,
        "dumped_bytes": dumped,
        "file_size": os.stat(core.path).st_size,
        "allocated_bytes": os.stat(core.path).st_blocks * 512,
        "compressed_size": stored.st_size if compressed else None,
        "metadata": {k: v for k, v in core.metadata.items() if k not in ("stacks", "threads")},
        "capture": {k: v for k, v in core.capture.items() if k != "threads"},
        "bundle": {k: core.manifest.get(k) for k in ("executable", "files", "missing")}
        if core.manifest
        else None,
    }


def cmd_stacks(args: argparse.Namespace) -> int:
    with open_core(args.core) as core:
        if args.json:
            json.dump(core.python_stacks, sys.stdout, indent=1)
            print()
        else:
            _print_stacks(core, sys.stdout)
    return 0


def _signed_size(n: int) -> str:
    return ("-" if n < 0 else "+") + format_size(abs(n))


def _heap_header(core: CoreFile, census: Any) -> str:
    return (
        f"Python {census.python} heap of pid {core.pid} ({core.command or '?'}), "
        f"from {(core.source or core.path).name}"
    )


def cmd_heap(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise SystemExit("gencore heap: --top must be at least 1")
    with open_core(args.core) as core:
        if args.referrers:
            refs = core.heap_referrers(args.referrers)
            if args.json:
                json.dump(refs.to_json(), sys.stdout, indent=1)
                print()
                return 0
            print(f"{refs.targets:,} objects of type {refs.type}, referenced from:")
            if not refs.referrers:
                print("  (no references found in the containers the census follows)")
            for name, count in refs.referrers[: args.top]:
                print(f"  {count:>12,}  {name}")
            return 0
        census = core.heap(largest=args.largest or 0, show_values=args.show_values)
        if args.since:
            with open_core(args.since) as old_core:
                old = old_core.heap()
                if (old_core.pid, old_core.executable_name) != (core.pid, core.executable_name):
                    print(
                        f"gencore heap: note: {args.since} is of pid {old_core.pid}, "
                        f"{args.core} of pid {core.pid}",
                        file=sys.stderr,
                    )
            diffs = census.since(old)
            if args.json:
                doc = {
                    "python": census.python,
                    "since": str(args.since),
                    "objects": census.objects - old.objects,
                    "bytes": census.bytes - old.bytes,
                    "types": [
                        {
                            "type": d.type,
                            "count": d.count,
                            "bytes": d.bytes,
                            "old_count": d.old_count,
                            "old_bytes": d.old_bytes,
                            "status": d.status,
                        }
                        for d in diffs[: args.top]
                    ],
                }
                json.dump(doc, sys.stdout, indent=1)
                print()
                return 0
            print(_heap_header(core, census) + f", compared with {Path(args.since).name}")
            print(f"{'count':>12}  {'bytes':>12}  type")
            for d in diffs[: args.top or 25]:
                tag = "" if d.status == "changed" else f"  ({d.status})"
                print(f"{d.count:>+12,}  {_signed_size(d.bytes):>12}  {d.type}{tag}")
            print(
                f"total: {census.objects - old.objects:+,} objects, "
                f"{_signed_size(census.bytes - old.bytes)} "
                f"({old.objects:,} -> {census.objects:,} objects, "
                f"{format_size(old.bytes)} -> {format_size(census.bytes)})"
            )
            return 0
        if args.json:
            json.dump(census.to_json(args.top), sys.stdout, indent=1)
            print()
            return 0
        print(_heap_header(core, census))
        print(f"{'count':>12}  {'bytes':>12}  type")
        shown = census.types[: args.top or 25]
        for t in shown:
            print(f"{t.count:>12,}  {format_size(t.bytes):>12}  {t.type}")
        rest = census.types[len(shown) :]
        if rest:
            print(
                f"{sum(t.count for t in rest):>12,}  "
                f"{format_size(sum(t.bytes for t in rest)):>12}  ({len(rest)} more types)"
            )
        share = 100 * census.bytes / census.anon_bytes if census.anon_bytes else 0.0
        print(
            f"total: {census.objects:,} objects ({census.tracked:,} tracked by the collector) in "
            f"{format_size(census.bytes)}; attributed {format_size(census.bytes)} of "
            f"{format_size(census.anon_bytes)} anonymous memory ({share:.0f}%)"
        )
        if census.unreadable:
            print(f"note: {census.unreadable:,} references pointed outside the core; skipped")
        if census.largest:
            print(f"\nlargest objects:\n{'address':>18}  {'bytes':>12}  type")
            for o in census.largest:
                value = f"  {o.value}" if o.value is not None else ""
                print(f"{o.address:#18x}  {format_size(o.bytes):>12}  {o.type}{value}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_core(args.core) as core:
        info = _info(core)
    if core.manifest:
        info["path"] = f"{args.core} (bundle)"
    if args.json:
        json.dump(info, sys.stdout, indent=1)
        print()
        return 0
    print(f"core:     {info['path']}")
    print(f"process:  {info['pid']}  {info['command']}")
    print(
        f"threads:  {len(info['threads'])}"
        + (f" ({len(info['incomplete_threads'])} incomplete)" if info["incomplete_threads"] else "")
    )
    for t in info["threads"]:
        print(f"  {t['tid']:>8}  pc {t['pc']:#014x}  sp {t['sp']:#014x}  {t['name'] or ''}")
    print(
        f"mappings: {info['mappings']} ({info['file_mappings']} files), "
        f"{format_size(info['mapped_bytes'])} mapped, "
        f"{format_size(info['anonymous_bytes'])} anonymous"
    )
    for path, size in info["largest_files"]:
        print(f"  {format_size(size):>10}  {path}")
    if info["compressed_size"] is not None:
        print(
            f"size:     {format_size(info['compressed_size'])} compressed (zstd), "
            f"{format_size(info['file_size'])} as a core, "
            f"{format_size(info['dumped_bytes'])} of memory dumped"
        )
    else:
        print(
            f"size:     {format_size(info['file_size'])} file, "
            f"{format_size(info['allocated_bytes'])} on disk, "
            f"{format_size(info['dumped_bytes'])} of memory dumped"
        )
    budget = info["capture"].get("budget") if isinstance(info.get("capture"), dict) else None
    if isinstance(budget, dict):
        kept = budget.get("kept", {})
        print(
            f"capped:   max_size {format_size(budget.get('max_size', 0))}: kept "
            f"{format_size(sum(kept.values()))} of {format_size(budget.get('dumpable', 0))}, "
            f"omitted {format_size(budget.get('omitted', 0))} in "
            f"{len(budget.get('omitted_ranges', [])) + budget.get('omitted_ranges_unlisted', 0)}"
            " ranges (listed in the core)"
        )
        for name, n in kept.items():
            print(f"  {format_size(n):>10}  {name}")
        print(
            f"  Python walk: {budget.get('python_threads', 0)} thread states, "
            f"{budget.get('python_frames', 0)} frames"
        )
    meta = info["metadata"]
    if meta:
        print(
            f"written:  by gencore {meta.get('gencore')} (reason {meta.get('reason')}) "
            f"for Python {meta.get('python', {}).get('version')}"
        )
        heap = meta.get("heap")
        if isinstance(heap, dict) and "gc_heads" in heap:
            print("heap:     layout recorded: `gencore heap` can census this core")
        elif isinstance(heap, dict):
            why = heap.get("unsupported") or heap.get("error")
            print(f"heap:     no layout ({why}): `gencore heap` cannot census this core")
        watch = meta.get("watch")
        if isinstance(watch, dict) and "stalled_seconds" in watch:
            print(f"watchdog: stalled {watch['stalled_seconds']:.1f} s (thread {watch.get('tid')})")
        elif isinstance(watch, dict) and "rss_bytes" in watch:
            print(
                f"watchdog: resident {format_size(watch['rss_bytes'])} past the limit of "
                f"{format_size(watch.get('rss_limit', 0))}"
            )
        if meta.get("exception"):
            lines = str(meta["exception"].get("text", "")).strip().splitlines()
            print(f"exception: {lines[-1] if lines else meta['exception'].get('type')}")
    if info["bundle"]:
        b = info["bundle"]
        print(
            f"bundle:   {len(b['files'] or [])} files, executable {b['executable']}, "
            f"{len(b['missing'] or [])} missing"
        )
    return 0


class _Progress:
    """A one-line progress display on a terminal (stderr); silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            return
        pct = 100.0 * done / total if total else 0.0
        sys.stderr.write(
            f"\r{self.label}: {format_size(done)} of {format_size(total)} ({pct:.0f}%)   "
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _find_tool(name: str) -> Optional[str]:
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else shutil.which(name)


def cmd_demo(args: argparse.Namespace) -> int:
    directory = Path(args.directory or tempfile.mkdtemp(prefix="gencore-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"starting a Python program with 5 threads; it dumps itself into {directory}")
    program = directory / "gencore_demo_service.py"
    program.write_text(DEMO_PROGRAM)
    p = subprocess.run(
        [sys.executable, str(program), str(directory)], capture_output=True, text=True, timeout=300
    )
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        return 1
    path, pause_ms, nthreads, elapsed = p.stdout.strip().splitlines()[-1].split("\t")
    print(f"core written: {path}")
    print(f"  the program was paused {pause_ms} ms; {nthreads} threads; core ready in {elapsed} s")
    print("\nPython stacks read back from the core:\n")
    with open_core(path) as core:
        _print_stacks(core, sys.stdout)
    exe = os.path.realpath(sys.executable)
    pystack = _find_tool("pystack")
    if pystack:
        print(f"\n$ pystack core {path} {exe}\n")
        r = subprocess.run(
            [pystack, "core", path, exe], capture_output=True, text=True, timeout=300
        )
        print(r.stdout + r.stderr)
        if r.returncode != 0:
            return 1
    print("open it with:")
    print(f"  pystack core --native {path} {exe}")
    print(f"  py-spy dump --core {path}")
    print(f"  gdb -iex 'set auto-load safe-path /' {exe} {path}")
    print("for another machine, pack it with its libraries and open it there:")
    print(f"  gencore bundle {path}")
    print(f"  gencore debug {path[: -len('.core')]}.tar.gz -- --native")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from ..ship.bundle import bundle_core

    progress = _Progress("bundling")
    try:
        path = bundle_core(args.core, format=args.format, keep_core=True, on_progress=progress)
    finally:
        progress.end()
    print(path)
    if path.manifest.get("missing"):
        for m in path.manifest["missing"]:
            print(f"missing: {m['path']}: {m['reason']}", file=sys.stderr)
    return 0


def debug_command(ex: Any, tool: str, extra: list[str]) -> list[str]:
    """The command line that runs ``tool`` on an extracted bundle's own copies of the files."""
    root, core = str(ex.root), str(ex.core)
    exe = str(ex.executable) if ex.executable else None
    if tool == "pystack":
        cmd = [_find_tool("pystack") or "pystack", "core", core]
        if exe:
            cmd.append(exe)
        return [*cmd, "--lib-search-root", root, *extra]
    if tool == "gdb":
        dirs = sorted({str(p.parent) for p in ex.root.rglob("*.so*")})
        cmd = [
            "gdb",
            "-nx",
            "-iex",
            f"set auto-load safe-path {root}",
            "-iex",
            f"set sysroot {root}",
            "-iex",
            f"set solib-search-path {':'.join(dirs)}",
            "-iex",
            "set debuginfod enabled off",
        ]
        if not sys.stdin.isatty() and not extra:
            cmd += ["-batch", "-ex", "info threads", "-ex", "thread apply all bt"]
            # py-bt exists only where the bundle carries the interpreter's python-gdb.py
            if any(f.get("gdb_script") for f in ex.manifest.get("files", [])):
                cmd += ["-ex", "thread apply all py-bt"]
        return [*cmd, *extra, *([exe] if exe else []), core]
    if tool == "py-spy":
        return [_find_tool("py-spy") or "py-spy", "dump", "--core", core, *extra]
    raise ValueError(f"unknown tool {tool!r}")


def local_debug_command(core: str, exe: Optional[str], tool: str, extra: list[str]) -> list[str]:
    """The command line that runs ``tool`` on a bare core with this machine's files."""
    if tool == "pystack":
        return [_find_tool("pystack") or "pystack", "core", core, *([exe] if exe else []), *extra]
    if tool == "gdb":
        cmd = ["gdb", "-nx", "-iex", "set auto-load safe-path /"]
        if not sys.stdin.isatty() and not extra:
            cmd += ["-batch", "-ex", "info threads", "-ex", "thread apply all bt"]
        return [*cmd, *extra, *([exe] if exe else []), core]
    if tool == "py-spy":
        return [_find_tool("py-spy") or "py-spy", "dump", "--core", core, *extra]
    raise ValueError(f"unknown tool {tool!r}")


def _debug_bare_core(path: str, tmp: Path, tool: str, extra: list[str]) -> list[str]:
    """A core that is not a bundle: a ``.core.zst`` is decompressed into ``tmp``; the tools
    use this machine's executable and libraries."""
    from ..ship.extract import decompress_core, is_compressed_core

    core = path
    if is_compressed_core(path):
        core = str(tmp / Path(path).name.removesuffix(".zst"))
        decompress_core(path, core)
    with open_core(core) as c:
        exe = c.metadata.get("python", {}).get("executable")
    if not (isinstance(exe, str) and os.path.exists(exe)):
        exe = None
    print("gencore: not a bundle: using this machine's executable and libraries", file=sys.stderr)
    return local_debug_command(core, exe and os.path.realpath(exe), tool, extra)


def cmd_debug(args: argparse.Namespace) -> int:
    from ..ship.extract import extract_bundle, is_bundle

    extra = list(args.args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    with tempfile.TemporaryDirectory(prefix="gencore-debug-") as tmp:
        bundle = args.bundle
        if "://" in bundle and not bundle.startswith("file://"):
            from ..ship.upload import fetch

            bundle = str(fetch(bundle, Path(tmp)))  # a bundle in object storage
        elif bundle.startswith("file://"):
            bundle = bundle[len("file://") :]
        if not is_bundle(bundle):
            cmd = _debug_bare_core(bundle, Path(tmp), args.tool, extra)
        else:
            ex = extract_bundle(bundle, Path(tmp) / "x")
            if ex.executable is None:
                print("gencore: the bundle has no executable; tools will guess it", file=sys.stderr)
            cmd = debug_command(ex, args.tool, extra)
        if args.print_command:
            print(" ".join(cmd))
        try:
            return subprocess.call(cmd)
        except FileNotFoundError:
            print(f"gencore: {args.tool} is not installed", file=sys.stderr)
            return 1


def cmd_upload(args: argparse.Namespace) -> int:
    from ..errors import UploadError
    from ..ship.upload import pending, upload_file

    if args.pending:
        if len(args.files) != 1:
            print("gencore upload --pending DIR URL: one directory", file=sys.stderr)
            return 2
        files = pending(Path(args.files[0]))
        if not files:
            print(f"gencore: nothing pending in {args.files[0]}", file=sys.stderr)
    else:
        files = [Path(f) for f in args.files]
    rc = 0
    for f in files:
        try:
            print(upload_file(f, args.url, keep_local=args.keep_local, log=_stderr))
        except (UploadError, OSError) as e:
            print(f"gencore: {f}: {e}", file=sys.stderr)
            rc = 1
    return rc


def _stderr(line: str) -> None:
    print(f"gencore: {line}", file=sys.stderr)


def cmd_ls(args: argparse.Namespace) -> int:
    from ..ship.upload import list_cores

    docs = list_cores(args.url)
    if args.json:
        json.dump(docs, sys.stdout, indent=1)
        print()
        return 0
    for d in docs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.get("time") or 0))
        print(
            f"{when}  {d.get('host', '?'):<20} pid {d.get('pid', '?'):<8} "
            f"{str(d.get('reason', '?')):<16} {format_size(d.get('size', 0)):>10}  "
            f"{d.get('object')}"
        )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import FAIL, run_checks

    checks = run_checks(args.directory, trial=args.trial)
    if args.json:
        json.dump([c.as_dict() for c in checks], sys.stdout, indent=1)
        print()
    else:
        for c in checks:
            print(f"{c.level:<4}  {c.name:<13} {c.message}")
            if c.advice and c.level != "OK":
                print(f"{'':<19} -> {c.advice}")
    return 1 if any(c.level == FAIL for c in checks) else 0


def _signal_arg(text: str) -> int:
    import signal as sigmod

    t = text.upper()
    if t.isdigit():
        return int(t)
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(getattr(sigmod, name))
    except AttributeError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def cmd_inject(args: argparse.Namespace) -> int:
    """``gencore trigger --inject PID``: a 3.14+ process that never imported gencore."""
    from ..capture.inject import inject

    doc = inject(args.pid, args.directory, args.wait, args.timeout)
    if "error" in doc:
        print(f"gencore: the core of process {args.pid} failed: {doc['error']}", file=sys.stderr)
        return 1
    print(doc.get("ok") or doc["started"])
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:

    from ..capture.triggers import find_state

    if args.inject:
        return cmd_inject(args)
    state = find_state(args.pid, args.state)
    sig = args.signal or state.get("signal")
    if not sig:
        print(f"gencore: process {args.pid} installed no signal trigger", file=sys.stderr)
        return 1
    directory = Path(state["directory"])
    try:
        # kept open: an exiting process removes its events file, what it wrote stays readable
        events = open(state["events"], "rb")
    except OSError as e:
        print(f"gencore: cannot read the events of process {args.pid}: {e}", file=sys.stderr)
        return 1
    with events:
        events.seek(0, os.SEEK_END)
        os.kill(args.pid, sig)
        return _follow_trigger(args, state, events, directory)


def _follow_trigger(
    args: argparse.Namespace, state: dict[str, Any], events: Any, directory: Path
) -> int:
    """Follow the events of one triggered dump (see cmd_trigger)."""

    from ..capture.triggers import process_alive

    deadline = time.monotonic() + args.timeout
    progress = _Progress("writing")
    name = None
    core_done = False
    buf = ""
    try:
        while time.monotonic() < deadline:
            alive = process_alive(args.pid, state.get("start_time"))
            buf += events.read().decode(errors="replace")
            lines, _, buf = buf.rpartition("\n")
            for line in lines.splitlines():
                word, _, rest = line.partition(" ")
                parts = rest.split()
                if word == "start" and name is None:
                    name = parts[0]
                    if not args.wait:
                        print(directory / name)
                        return 0
                elif word == "skipped" and name is None:
                    reason = parts[0] if parts else "?"
                    print(
                        f"gencore: process {args.pid} skipped the dump ({reason} guard)",
                        file=sys.stderr,
                    )
                    return 1
                elif word == "progress" and parts and parts[0] == name:
                    progress(int(parts[1]), int(parts[2]))
                elif word == "error" and parts and parts[0] == name:
                    progress.end()
                    print(
                        f"gencore: the core failed: {os.strerror(int(parts[1]))}", file=sys.stderr
                    )
                    return 1
                elif word == "done" and parts and parts[0] == name:
                    progress.end()
                    core_done = True
                    print(directory / name)
                    if not state.get("collect") and not state.get("upload"):
                        return 0
                elif word == "bundle" and core_done:
                    print(directory / parts[0])
                    if not state.get("upload"):
                        return 0
                elif word == "upload" and core_done and len(parts) > 1:
                    if name is not None and parts[0].startswith(stem_of(name)):
                        print(parts[1])
                        return 0
                elif word == "upload-error" and core_done and parts:
                    if name is not None and parts[0].startswith(stem_of(name)):
                        print(f"gencore: the upload failed: {rest}", file=sys.stderr)
                        return 1
                elif word == "bundle-error" and core_done:
                    print(f"gencore: bundling failed: {rest}", file=sys.stderr)
                    return 1
            if not alive:  # everything it wrote has been read: the rest is on disk
                progress.end()
                return _after_exit(args.pid, directory, name, core_done, deadline)
            time.sleep(0.05)
    finally:
        progress.end()
    if core_done:
        print(
            "gencore: the bundle is not ready yet (the process may be stuck holding the "
            "GIL; the core above is complete)",
            file=sys.stderr,
        )
        return 0
    print(
        f"gencore: no core from process {args.pid} within {args.timeout:g} s"
        + ("" if name is None else f" ({name} still being written)"),
        file=sys.stderr,
    )
    return 1


def _after_exit(
    pid: int, directory: Path, name: Optional[str], core_done: bool, deadline: float
) -> int:
    """The target exited during its dump: its snapshot child lives on and publishes the
    core (``.NAME.partial`` renamed to NAME) or removes the partial file on failure."""
    if name is None:
        print(f"gencore: process {pid} exited before it started a core", file=sys.stderr)
        return 1
    if core_done:  # printed already; the bundle was due
        print(f"gencore: process {pid} exited before its bundle was built", file=sys.stderr)
        return 0
    final, partial = directory / name, directory / f".{name}.partial"
    while time.monotonic() < deadline and not final.exists() and partial.exists():
        time.sleep(0.05)
    if final.exists():
        print(final)
        print(f"gencore: process {pid} exited; its core is complete", file=sys.stderr)
        return 0
    print(
        f"gencore: process {pid} exited and its core {name} "
        + ("is still being written" if partial.exists() else "was not completed"),
        file=sys.stderr,
    )
    return 1


def _size_arg(text: str) -> int:
    from ..capture.watch import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _install_for_run(install: Callable[..., Any], args: argparse.Namespace) -> None:
    install(
        signals=tuple(args.signal) if args.signal else (_signal_arg("USR2"),),
        directory=args.directory,
        collect=args.collect,
        format=args.format,
        on_crash=args.on_crash,
        on_exception=args.on_exception,
        max_cores=args.max_cores,
        min_interval=args.min_interval,
        min_free=args.min_free,
        hang_timeout=args.on_hang,
        heartbeat_timeout=args.heartbeat_timeout,
        rss_limit=args.on_rss,
        on_memory_error=args.on_memory_error,
        upload=args.upload,
        keep_local=args.keep_local,
        max_total=args.max_total,
        keep_free=args.keep_free,
        compress=args.compress,
        max_size=args.max_size,
    )


def cmd_run(args: argparse.Namespace) -> int:
    import runpy

    from ..capture.triggers import install

    rest = list(args.program)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.module is None and not rest:
        print("gencore run: give a script (gencore run -- script.py) or -m module", file=sys.stderr)
        return 2
    try:
        _install_for_run(install, args)
    except ValueError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore run: {e}", file=sys.stderr)
        return 1
    if args.module is not None:
        sys.argv = [args.module, *rest]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script = rest[0]
        sys.argv = rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gencore`` command."""
    ap = argparse.ArgumentParser(
        prog="gencore",
        description="Core dumps of live Python processes, every thread, without stopping them.",
        epilog="exit codes: 0 success, 1 failure, 2 bad usage or unreadable core",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="dump a small multi-threaded program and read it back")
    d.add_argument("--directory", "-d", help="where to write the core (default: a temp dir)")
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("stacks", help="every Python thread's stack in a gencore core or bundle")
    s.add_argument("core")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stacks)
    h = sub.add_parser(
        "heap",
        help="what uses the memory: objects by type, from a core or bundle alone",
        description="A census of the Python objects in a core: count and bytes (as "
        "sys.getsizeof counts them) per type, largest first. Object values are never "
        "printed unless --show-values is given.",
    )
    h.add_argument("core")
    h.add_argument("--top", type=int, help="show the N largest types (default 25; all in JSON)")
    h.add_argument("--json", action="store_true", help="the documented JSON document")
    h.add_argument("--since", metavar="OLD_CORE", help="differences from an earlier core")
    h.add_argument(
        "--referrers", metavar="TYPE", help="which types hold references to objects of TYPE"
    )
    h.add_argument("--largest", type=int, metavar="N", help="also list the N biggest objects")
    h.add_argument(
        "--show-values",
        action="store_true",
        help="with --largest: a short value of str, bytes and float objects",
    )
    h.set_defaults(func=cmd_heap)
    i = sub.add_parser("info", help="process, threads, mappings and sizes of a core or bundle")
    i.add_argument("core")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    b = sub.add_parser("bundle", help="pack an existing core with its executable and libraries")
    b.add_argument("core")
    b.add_argument("--format", choices=BUNDLE_FORMATS, default="tar.gz")
    b.set_defaults(func=cmd_bundle)
    g = sub.add_parser(
        "debug",
        help="run pystack, gdb or py-spy on a bundle's own copies of the files",
        description="Extract BUNDLE safely into a temporary directory and run the tool there, "
        "with libraries resolved from the bundle (pystack --lib-search-root; gdb sysroot and "
        "python-gdb.py). A bare core (.core, or .core.zst: decompressed into the temporary "
        "directory) is opened with this machine's files. Arguments after -- go to the tool.",
    )
    g.add_argument("bundle")
    g.add_argument("--tool", choices=("pystack", "gdb", "py-spy"), default="pystack")
    g.add_argument("--print-command", action="store_true", help="show the tool's command line")
    g.add_argument("args", nargs=argparse.REMAINDER)
    g.set_defaults(func=cmd_debug)
    o = sub.add_parser("doctor", help="what would stop core dumps here, and how to fix it")
    o.add_argument(
        "--directory",
        "-d",
        help="where cores would be written (default: $GENCORE_DIR or the current directory)",
    )
    o.add_argument("--trial", action="store_true", help="also write and read back a real core")
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=cmd_doctor)
    t = sub.add_parser(
        "trigger",
        help="make a process that installed the trigger dump itself",
        description="Signal PID (which called gencore.install() or runs under `gencore run`) "
        "and print the path of its new core. It finds the process's directory and signal "
        "through the state file the process announced.",
    )
    t.add_argument("pid", type=int)
    t.add_argument(
        "--wait",
        action="store_true",
        help="wait until the core is complete (and the bundle, if the process collects)",
    )
    t.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    t.add_argument("--signal", type=_signal_arg, help="override the announced signal")
    t.add_argument(
        "--inject",
        action="store_true",
        help="for a Python 3.14+ process that never imported gencore: run one create_core in "
        "it through sys.remote_exec (needs ptrace permission: root, CAP_SYS_PTRACE or the "
        "same user)",
    )
    t.add_argument(
        "--directory", "-d", help="with --inject: where the core goes (default: its cwd)"
    )
    t.add_argument("--state", help="the state file, if not in the usual place")
    t.set_defaults(func=cmd_trigger)
    r = sub.add_parser(
        "run",
        help="run a Python program with the triggers installed",
        description="Like `python script.py` / `python -m module`, with gencore's triggers "
        "installed first: gencore run [options] -- script.py args, or -m module args.",
    )
    r.add_argument("-m", dest="module", help="run a library module as a script")
    r.add_argument(
        "--signal",
        action="append",
        type=_signal_arg,
        help="dump on this signal (repeatable; default SIGUSR2)",
    )
    r.add_argument("--directory", "-d", help="where cores go (default $GENCORE_DIR or cwd)")
    r.add_argument("--collect", action="store_true", help="also write a bundle of each core")
    r.add_argument("--format", choices=BUNDLE_FORMATS, default="tar.gz")
    r.add_argument(
        "--on-crash",
        action="store_true",
        help="core on SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT, then die as before",
    )
    r.add_argument("--on-exception", action="store_true", help="core on an unhandled exception")
    r.add_argument(
        "--on-hang",
        type=float,
        metavar="SECONDS",
        help="core when no thread can take the GIL, or the main asyncio loop runs no "
        "callback, for SECONDS",
    )
    r.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        help="core when gencore.heartbeat() is not called for SECONDS (after a first call)",
    )
    r.add_argument(
        "--on-rss",
        metavar="LIMIT",
        help="core when the resident size passes LIMIT: bytes, 300M, 2G, or 80%% of the "
        "cgroup's memory limit (else of RAM)",
    )
    r.add_argument(
        "--on-memory-error", action="store_true", help="core on an unhandled MemoryError"
    )
    r.add_argument("--max-cores", type=int, default=10)
    r.add_argument("--min-interval", type=float, default=1.0)
    r.add_argument(
        "--min-free",
        type=_size_arg,
        default=0,
        metavar="SIZE",
        help="skip a core unless SIZE stays free beyond the process's resident size",
    )
    r.add_argument(
        "--upload",
        metavar="URL",
        help="upload each core (or bundle) to URL/<hostname>/ (s3://, gs://, az://, file://)",
    )
    r.add_argument("--keep-local", action="store_true", help="keep the local file after upload")
    r.add_argument(
        "--compress",
        choices=("zstd",),
        help="write each core as <stem>.core.zst (zstd, compressed as it is written)",
    )
    r.add_argument(
        "--max-size",
        type=_size_arg,
        metavar="SIZE",
        help="every core at most SIZE (64M, 2G): stacks, Python frames and interpreter data "
        "first; what is left out is listed in the core",
    )
    r.add_argument(
        "--max-total", type=_size_arg, default=0, metavar="SIZE", help="core directory budget"
    )
    r.add_argument(
        "--keep-free",
        type=_size_arg,
        default=0,
        metavar="SIZE",
        help="remove the oldest cores to keep SIZE free on the core directory's file system",
    )
    r.add_argument("program", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)
    u = sub.add_parser(
        "upload",
        help="upload cores or bundles to object storage",
        description="Upload FILE... to URL/<hostname>/ with a JSON manifest each, removing "
        "the local files (unless --keep-local); --pending DIR URL uploads what a failed "
        "upload left in DIR.",
    )
    u.add_argument("files", nargs="+", metavar="FILE")
    u.add_argument("url")
    u.add_argument("--pending", action="store_true", help="FILE is a core directory")
    u.add_argument("--keep-local", action="store_true")
    u.set_defaults(func=cmd_upload)
    ls = sub.add_parser("ls", help="list the cores under an object-storage URL (newest first)")
    ls.add_argument("url")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``gencore`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        # The program's own exceptions and exit status are its own: they reach the
        # interpreter (and the installed hooks) untouched.
        return int(args.func(args))
    try:
        return int(args.func(args))
    except CoreFormatError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 2
    except GencoreError as e:
        print(f"gencore: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
