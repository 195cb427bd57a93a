"""Reading bundles: recognise one, and unpack it safely (regular files and in-bundle links).

Independent of the ELF reader: :func:`~gencore.open_core` uses this to get at the core inside
a bundle, ``gencore debug`` to lay out the bundle's files for a debugger.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .._common import PathLike
from ..analysis.reader import elf_end
from ..errors import BundleError, CoreFormatError, GencoreError

__all__ = [
    "ExtractedBundle",
    "decompress_core",
    "extract_bundle",
    "import_zstandard",
    "is_bundle",
    "is_compressed_core",
]

_CHUNK = 1 << 20
_CORE_MEMBERS = (".core", ".core.age", ".core.zst.age")
_GZIP_MAGIC = b"\x1f\x8b"
_ELF_MAGIC = b"\x7fELF"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def import_zstandard(what: str = "format='tar.zst'") -> Any:
    """The ``zstandard`` module, or a :class:`~gencore.BundleError` saying that ``what``
    needs it and how to get it."""
    try:
        import zstandard
    except ImportError:
        alternative = "use format='tar.gz'" if "tar" in what else "leave compress unset"
        raise BundleError(
            f"{what} needs the zstandard package",
            stage="preflight",
            advice=f"pip install 'gencore[zstd]' (or zstandard), or {alternative}",
        ) from None
    return zstandard


def _head(path: PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


def is_compressed_core(path: PathLike) -> bool:
    """True when ``path`` is a zstd stream of an ELF file (a ``.core.zst``)."""
    if _head(path) != _ZSTD_MAGIC:
        return False
    try:
        with open(path, "rb") as raw:
            reader = import_zstandard().ZstdDecompressor().stream_reader(raw)
            return bool(reader.read(4) == _ELF_MAGIC)
    except GencoreError:
        raise
    except Exception:  # a damaged stream: not a compressed core (nor a bundle, later)
        return False


def is_bundle(path: PathLike) -> bool:
    """True when ``path`` starts like a gzip or zstd stream (a bundle, not a bare core)."""
    head = _head(path)
    return head[:2] == _GZIP_MAGIC or (head == _ZSTD_MAGIC and not is_compressed_core(path))


def decompress_core(src: PathLike, dest: PathLike) -> None:
    """Decompress the ``.core.zst`` ``src`` into the new file ``dest`` (0600), sparse: runs of
    zeros (the core's holes) take no disk space.

    Raises:
        CoreFormatError: ``src`` is damaged or truncated (``dest`` is removed).
    """
    zero = bytes(_CHUNK)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with open(src, "rb") as raw, os.fdopen(fd, "wb") as out:
            reader = import_zstandard().ZstdDecompressor().stream_reader(raw, read_size=_CHUNK)
            size = 0
            while True:
                block = reader.read(_CHUNK)
                if not block:
                    break
                if block == zero[: len(block)]:
                    out.seek(len(block), os.SEEK_CUR)
                else:
                    out.write(block)
                size += len(block)
            out.truncate(size)
        # zstd's reader ends quietly at a truncated frame: the ELF headers say how long
        # the core must be
        expected = elf_end(dest)
    except OSError as e:
        os.unlink(dest)
        raise CoreFormatError(
            f"cannot decompress {src}: {e.strerror or e}", errno=e.errno
        ) from None
    except Exception as e:  # zstd's errors: a damaged or truncated frame
        os.unlink(dest)
        raise CoreFormatError(
            f"{src} is not a readable compressed core: {type(e).__name__}: {e}"
        ) from None
    if size < expected:
        os.unlink(dest)
        raise CoreFormatError(
            f"{src} is truncated: it decompresses to {size} bytes, its ELF headers describe "
            f"{expected}"
        )


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
        reader = import_zstandard().ZstdDecompressor().stream_reader(raw)
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
            # an encrypted bundle holds the core as the snapshot child wrote it
            is_core = name in (f"{stem}/{stem}{suffix}" for suffix in _CORE_MEMBERS)
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
        raise CoreFormatError(
            f"{bundle} holds no <stem>/<stem>.core member: not a gencore bundle (an encrypted "
            "bundle, .tar.gz.age, is decrypted first by open_core and gencore debug)"
        )
    root = dest / stem
    exe_member = manifest.get("executable")
    exe = None
    if isinstance(exe_member, str):
        safe = _safe_name(exe_member)
        if safe is not None and (dest / safe).is_file():
            exe = dest / safe
    return ExtractedBundle(root=root, core=core, executable=exe, manifest=manifest)
