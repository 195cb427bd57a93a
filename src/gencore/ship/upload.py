"""Cores leave the host: uploads to object storage through fsspec, and the local disk budget.

Everything here runs in the helper process (``python -m gencore.ship.helper finish|upload``) or
in the ``gencore`` command, never in the application's interpreter nor in the snapshot child.
The object of ``core_X.core`` uploaded to ``URL`` is ``URL/<hostname>/core_X.core``, with a
JSON manifest next to it (``core_X.core.json``). An existing object is never overwritten.
A file that could not be uploaded stays where it is: ``gencore upload --pending DIR URL``
(or the next core of the same process) tries again.

Credentials and endpoints come from each backend's own configuration chain (for S3: the
AWS environment and config files, ``AWS_ENDPOINT_URL`` for compatible servers).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .._common import VERSION, plain_name
from ..errors import GencoreError, UploadError
from .crypt import is_encrypted

# what gencore writes into a core directory (not the hidden .partial files)
GENCORE_FILE = re.compile(
    r"^core_\d{8}\.\d{6}\.\d+\.\d+(\.core|\.core\.zst|\.tar\.gz|\.tar\.zst)(\.age)?$"
)
MANIFEST_SUFFIX = ".json"
RETRIES = 4
BACKOFF_S = 0.5


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise UploadError(
            "uploads need fsspec and the store's backend",
            stage="upload",
            advice="pip install 'gencore[s3]' (or [gcs], [azure]); fsspec alone for file:// "
            "and memory://",
        ) from None
    return fsspec


# Completing a multipart upload of a large core can take the store a while (AWS says
# minutes); s3fs's default read timeout of 15 s makes botocore resend the request, and the
# resent one then fails because the first one completed the upload.
S3_READ_TIMEOUT = 300


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system and the path inside it for ``url``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    options: dict[str, Any] = {}
    if scheme in ("s3", "s3a"):
        options["config_kwargs"] = {"read_timeout": S3_READ_TIMEOUT}
    fs, root = _fsspec().core.url_to_fs(url, **options)
    return fs, root.rstrip("/")


def _qualified(fs: Any, path: str) -> str:
    return str(fs.unstrip_protocol(path))


def manifest_of(path: Path, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What the manifest says about a core or bundle: host, pid, time, reason, Python, size,
    and the build-ids of a bundle's files."""
    doc: dict[str, Any] = {
        "format": 1,
        "gencore": VERSION,
        "file": path.name,
        "size": path.stat().st_size,
        "host": socket.gethostname(),
        "uploaded": time.time(),
    }
    meta: dict[str, Any] = {}
    if is_encrypted(path):
        doc["encrypted"] = "age"  # shipped as written: only its recipients can read it
    elif path.name.endswith(".core"):
        from ..analysis.core import open_core

        try:
            with open_core(path) as core:
                meta = dict(core.metadata)
                meta.setdefault("pid", core.pid)
        except GencoreError:
            meta = {}
    else:
        meta = _bundle_manifest(path)
        doc["build_ids"] = {
            f["path"]: f.get("build_id") for f in meta.get("files", []) if f.get("path")
        }
    for key in ("pid", "time", "reason", "host"):
        if meta.get(key) is not None:
            doc[key] = meta[key]
    python = meta.get("python")
    if isinstance(python, dict):
        doc["python"] = python.get("version")
    doc.update(extra or {})
    return doc


def _bundle_manifest(path: Path) -> dict[str, Any]:
    """The manifest.json member of a bundle (the last member: the archive is read once)."""
    from .extract import import_zstandard

    try:
        if path.name.endswith(".tar.zst"):
            raw = open(path, "rb")  # noqa: SIM115 - closed below
            stream = import_zstandard().ZstdDecompressor().stream_reader(raw)
            tar = tarfile.open(fileobj=stream, mode="r|")
        else:
            raw = None
            tar = tarfile.open(path, mode="r|gz")
        try:
            for member in tar:
                if member.name.endswith("/manifest.json"):
                    f = tar.extractfile(member)
                    return json.loads(f.read()) if f is not None else {}
        finally:
            tar.close()
            if raw is not None:
                raw.close()
    except (OSError, tarfile.TarError, ValueError):
        pass
    return {}


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(fs: Any, key: str, path: Path) -> None:
    """The object has the file's size, and its checksum where the store gives one (an S3
    ETag of a single-part upload is the MD5 of the bytes)."""
    info = fs.info(key)
    size = path.stat().st_size
    if int(info.get("size", -1)) != size:
        raise UploadError(
            f"{key} has {info.get('size')} bytes after the upload, {path} {size}",
            stage="upload",
            advice="the store truncated the object; retry with gencore upload --pending",
        )
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != _md5(path):
        raise UploadError(
            f"{key}: checksum mismatch after the upload (ETag {etag})",
            stage="upload",
            advice="retry with gencore upload --pending",
        )


def _put_options(fs: Any) -> dict[str, Any]:
    """Backend options of ``put_file``: S3 sends a large file in 16 MiB parts, one at a
    time (s3fs's defaults are 50 MiB parts, 10 at a time: S3-compatible servers of modest
    size, moto's among them, lose parts under that load, and a core is sent in the
    background anyway)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return {"chunksize": 16 << 20, "max_concurrency": 1} if "s3" in protocols else {}


def upload_file(
    path: Path,
    url: str,
    *,
    keep_local: bool = False,
    extra: Optional[dict[str, Any]] = None,
    log: Callable[[str], None] = lambda _: None,
) -> str:
    """Upload one core or bundle to ``url/<hostname>/<name>`` with its manifest; remove the
    local file unless ``keep_local``. Returns the object's URL.

    Raises:
        UploadError: the store is unreachable after the retries, the object exists already,
            or the check after the upload failed; the local file is kept.
    """
    fs, root = filesystem(url)
    host = socket.gethostname()
    key = f"{root}/{host}/{path.name}"
    target = _qualified(fs, key)
    manifest = manifest_of(path, {**(extra or {}), "object": target})
    error: Optional[BaseException] = None
    try:
        exists = fs.exists(key)
    except Exception as e:  # unreachable: the attempts below say so
        exists, error = False, e
    if exists:
        raise UploadError(
            f"{target} exists already: not overwritten",
            stage="upload",
            advice="remove the object or upload to another prefix",
        )
    for attempt in range(RETRIES):
        try:
            # an attempt that failed half-way may have left the object: it is ours to replace
            fs.makedirs(f"{root}/{host}", exist_ok=True)
            fs.put_file(str(path), key, **_put_options(fs))  # streamed, multipart on S3
            _verify(fs, key, path)
            fs.pipe_file(key + MANIFEST_SUFFIX, json.dumps(manifest, indent=1).encode())
            break
        except UploadError:
            raise
        except Exception as e:  # the backends raise their own kinds
            error = e
            log(f"upload of {path.name} failed (attempt {attempt + 1}/{RETRIES}): {e}")
            time.sleep(BACKOFF_S * 2**attempt)
    else:
        raise UploadError(
            f"could not upload {path.name} to {url}: {type(error).__name__}: {error}",
            stage="upload",
            advice="the core stays here; check the store and its credentials, then run "
            f"gencore upload --pending {path.parent} {url}",
        )
    if keep_local:
        (path.parent / f".{path.name}.uploaded").write_text(target + "\n")
    else:
        path.unlink()
    return target


def pending(directory: Path) -> list[Path]:
    """gencore's files in ``directory`` not uploaded yet, oldest first: complete files only
    (a core being written has a hidden ``.partial`` name), and a bundle rather than the core
    it carries."""
    out = [
        p
        for p in directory.iterdir()
        if GENCORE_FILE.match(p.name)
        and not (directory / f".{p.name}.uploaded").exists()
        and not (
            plain_name(p.name).endswith(".core")
            and _has_bundle(directory, plain_name(p.name)[: -len(".core")])
        )
    ]
    return sorted(out, key=lambda p: (p.stat().st_mtime, p.name))


def _has_bundle(directory: Path, stem: str) -> bool:
    kinds = ("tar.gz", "tar.zst", "tar.gz.age", "tar.zst.age")
    return any((directory / f"{stem}.{fmt}").exists() for fmt in kinds)


def enforce_budget(
    directory: Path,
    *,
    max_total: int = 0,
    keep_free: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> list[Path]:
    """Remove the oldest gencore files until they total at most ``max_total`` bytes and the
    file system has ``keep_free`` bytes free; never the newest file, never one being
    written. Returns what was removed."""
    if not max_total and not keep_free:
        return []
    files = sorted(
        (p for p in directory.iterdir() if GENCORE_FILE.match(p.name)),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    removed = []

    def over() -> bool:
        total = sum(p.stat().st_blocks * 512 for p in files)
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        return bool((max_total and total > max_total) or (keep_free and free < keep_free))

    while len(files) > 1 and over():
        victim = files.pop(0)
        size = victim.stat().st_size
        victim.unlink()
        for marker in (directory / f".{victim.name}.uploaded",):
            if marker.exists():
                marker.unlink()
        removed.append(victim)
        log(f"removed {victim.name} ({size} bytes) to keep the core directory's budget")
    return removed


def list_cores(url: str) -> list[dict[str, Any]]:
    """The manifests under ``url`` (every host), newest first."""
    fs, root = filesystem(url)
    docs = []
    for key in fs.find(root):
        if not key.endswith(MANIFEST_SUFFIX) or not GENCORE_FILE.match(
            key.rsplit("/", 1)[-1][: -len(MANIFEST_SUFFIX)]
        ):
            continue
        try:
            doc = json.loads(fs.cat_file(key))
        except (OSError, ValueError):
            continue
        doc.setdefault("object", _qualified(fs, key[: -len(MANIFEST_SUFFIX)]))
        docs.append(doc)
    return sorted(docs, key=lambda d: d.get("time") or d.get("uploaded") or 0, reverse=True)


def fetch(url: str, directory: Path) -> Path:
    """Download one object into ``directory``; returns the local path."""
    fs, key = filesystem(url)
    local = directory / key.rsplit("/", 1)[-1]
    fs.get_file(key, str(local))
    return local
