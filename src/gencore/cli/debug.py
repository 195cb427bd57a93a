"""``gencore bundle`` and ``gencore debug``: pack a core; run a debugger on a bundle's files."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from .._common import BUNDLE_FORMATS
from ..analysis.core import open_core
from ._format import Progress, find_tool, identity_option


def cmd_bundle(args: argparse.Namespace) -> int:
    from ..ship.bundle import bundle_core

    progress = Progress("bundling")
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
        cmd = [find_tool("pystack") or "pystack", "core", core]
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
        return [find_tool("py-spy") or "py-spy", "dump", "--core", core, *extra]
    raise ValueError(f"unknown tool {tool!r}")


def local_debug_command(core: str, exe: Optional[str], tool: str, extra: list[str]) -> list[str]:
    """The command line that runs ``tool`` on a bare core with this machine's files."""
    if tool == "pystack":
        return [find_tool("pystack") or "pystack", "core", core, *([exe] if exe else []), *extra]
    if tool == "gdb":
        cmd = ["gdb", "-nx", "-iex", "set auto-load safe-path /"]
        if not sys.stdin.isatty() and not extra:
            cmd += ["-batch", "-ex", "info threads", "-ex", "thread apply all bt"]
        return [*cmd, *extra, *([exe] if exe else []), core]
    if tool == "py-spy":
        return [find_tool("py-spy") or "py-spy", "dump", "--core", core, *extra]
    raise ValueError(f"unknown tool {tool!r}")


def plain_core(path: Path, tmp: Path, identity: Optional[str]) -> Path:
    """``path``, or the ELF core it holds: decrypted (age) and decompressed into ``tmp``."""
    from ..analysis.core import decrypted
    from ..ship.extract import decompress_core, is_compressed_core

    work = decrypted(path, tmp, identity)
    if is_compressed_core(work):
        target = tmp / work.name.removesuffix(".zst")
        decompress_core(work, target)
        work = target
    return work


def _debug_bare_core(
    path: str, tmp: Path, tool: str, extra: list[str], identity: Optional[str]
) -> list[str]:
    """A core that is not a bundle: a ``.core.zst`` is decompressed and a ``.core.age``
    decrypted into ``tmp``; the tools use this machine's executable and libraries."""
    core = str(plain_core(Path(path), tmp, identity))
    with open_core(core) as c:
        exe = c.metadata.get("python", {}).get("executable")
    if not (isinstance(exe, str) and os.path.exists(exe)):
        exe = None
    print("gencore: not a bundle: using this machine's executable and libraries", file=sys.stderr)
    return local_debug_command(core, exe and os.path.realpath(exe), tool, extra)


def cmd_debug(args: argparse.Namespace) -> int:
    from ..analysis.core import decrypted
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
        bundle = str(decrypted(bundle, tmp, args.identity))
        if not is_bundle(bundle):
            cmd = _debug_bare_core(bundle, Path(tmp), args.tool, extra, args.identity)
        else:
            ex = extract_bundle(bundle, Path(tmp) / "x")
            ex.core = plain_core(ex.core, ex.core.parent, args.identity)  # an encrypted core
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


def register(sub: Any) -> None:
    """Add ``bundle``, ``debug`` to the ``gencore`` command's subparsers."""
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
        "directory) is opened with this machine's files. Encrypted files (.age) are decrypted "
        "with --identity. Arguments after -- go to the tool.",
    )
    g.add_argument("bundle")
    g.add_argument("--tool", choices=("pystack", "gdb", "py-spy"), default="pystack")
    g.add_argument("--print-command", action="store_true", help="show the tool's command line")
    identity_option(g)
    g.add_argument("args", nargs=argparse.REMAINDER)
    g.set_defaults(func=cmd_debug)
