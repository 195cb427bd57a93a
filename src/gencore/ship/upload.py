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

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .._common import BUNDLE_KINDS, GENCORE_FILE, VERSION, file_stem, plain_name
from ..errors import GencoreError, UploadError
from .crypt import is_encrypted

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
        from ..analysis.report.trigger import trigger_of

        try:
            with open_core(path) as core:
                meta = dict(core.metadata)
                meta.setdefault("pid", core.pid)
                meta["trigger"] = trigger_of(core).to_json()
        except GencoreError:
            meta = {}
    else:
        meta = _bundle_manifest(path)
        doc["build_ids"] = {
            f["path"]: f.get("build_id") for f in meta.get("files", []) if f.get("path")
        }
    # the triggering thread's innermost frames: ls --group groups cores by them
    for key in ("pid", "time", "reason", "host", "trigger"):
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


PART_SIZE = 8 << 20
PARTS_AT_ONCE = 10


def _is_s3(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocols


def _put(fs: Any, path: Path, key: str) -> None:
    """Send the file to ``key``. On S3, through boto3's transfer manager where boto3 is
    installed (``gencore[s3]`` has it): 8 MiB parts, 10 at a time, measured faster than
    s3fs's own multipart upload (BENCHMARKS.md, uploads); a long read timeout lets the store
    complete a large multipart upload without the request being sent again. Elsewhere, and
    without boto3, fsspec's ``put_file`` (streamed; multipart on S3)."""
    if _is_s3(fs):
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError:
            fs.put_file(str(path), key, chunksize=PART_SIZE, max_concurrency=PARTS_AT_ONCE)
            return
        bucket, _, name = key.partition("/")
        client = boto3.client("s3", config=Config(read_timeout=S3_READ_TIMEOUT))
        transfer = TransferConfig(
            multipart_threshold=PART_SIZE,
            multipart_chunksize=PART_SIZE,
            max_concurrency=PARTS_AT_ONCE,
        )
        client.upload_file(str(path), bucket, name, Config=transfer)
        return
    fs.put_file(str(path), key)


def upload_file(
    path: Path,
    url: str,
    *,
    keep_local: bool = False,
    extra: Optional[dict[str, Any]] = None,
    log: Callable[[str], None] = lambda _: None,
    deadline: Optional[float] = None,
) -> str:
    """Upload one core or bundle to ``url/<hostname>/<name>`` with its manifest; remove the
    local file unless ``keep_local``. Returns the object's URL. Retries stop at ``deadline``
    (``time.monotonic()``): a helper's uploads are bounded in time.

    Raises:
        UploadError: the store is unreachable after the retries, the object exists already,
            or the check after the upload failed; the local file is kept.
    """
    fs, root = filesystem(url)
    host = socket.gethostname()
    key = f"{root}/{host}/{path.name}"
    target = _qualified(fs, key)
    # the manifest (it reads the core's notes) is made while the bytes go
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gencore-manifest")
    manifest = pool.submit(manifest_of, path, {**(extra or {}), "object": target})
    pool.shutdown(wait=False)
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
        if attempt and deadline is not None and time.monotonic() >= deadline:
            break
        try:
            # an attempt that failed half-way may have left the object: it is ours to replace
            fs.makedirs(f"{root}/{host}", exist_ok=True)
            _put(fs, path, key)
            _verify(fs, key, path)
            doc = json.dumps(manifest.result(), indent=1).encode()
            fs.pipe_file(key + MANIFEST_SUFFIX, doc)
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
        and not uploaded(p)
        and not (plain_name(p.name).endswith(".core") and _has_bundle(directory, file_stem(p.name)))
    ]
    return sorted(out, key=_age)


def uploaded(path: Path) -> bool:
    """Whether ``path`` was uploaded and kept (``keep_local``): its marker exists."""
    return (path.parent / f".{path.name}.uploaded").exists()


def _age(p: Path) -> tuple[int, str]:
    try:
        return p.stat().st_mtime_ns, p.name
    except OSError:
        return 0, p.name


def _has_bundle(directory: Path, stem: str) -> bool:
    return any((directory / f"{stem}{kind}").exists() for kind in BUNDLE_KINDS)


@dataclass(frozen=True)
class Removed:
    """A file the budget removed: its path, its bytes on disk, and whether it was still
    waiting to be uploaded."""

    path: Path
    bytes: int
    unuploaded: bool

    @property
    def event(self) -> str:
        """Its line in the events file (the snapshot child writes the same)."""
        word = "removed-unuploaded" if self.unuploaded else "removed"
        return f"{word} {self.path.name} {self.bytes}"


def _disk_bytes(p: Path) -> int:
    try:
        return p.stat().st_blocks * 512
    except OSError:
        return 0


def enforce_budget(
    directory: Path,
    *,
    max_total: int = 0,
    keep_free: int = 0,
    new_bytes: int = 0,
    uploads: bool = False,
    keep_newest: bool = True,
) -> list[Removed]:
    """Remove the oldest of gencore's files until they (and ``new_bytes`` about to appear)
    total at most ``max_total`` bytes on disk and the file system has ``keep_free`` bytes
    free. Never a file being written; never the newest with ``keep_newest``. With
    ``uploads``, a file without its upload marker is reported as not uploaded. The snapshot
    child applies the same rule (``gc_room.c``) before it publishes a core."""
    if not max_total and not keep_free:
        return []
    files = sorted((p for p in directory.iterdir() if GENCORE_FILE.match(p.name)), key=_age)
    total = new_bytes + sum(_disk_bytes(p) for p in files)
    removed = []

    def over() -> bool:
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        return bool((max_total and total > max_total) or (keep_free and free < keep_free))

    while len(files) > (1 if keep_newest else 0) and over():
        victim = files.pop(0)
        size = _disk_bytes(victim)
        marker = directory / f".{victim.name}.uploaded"
        was_uploaded = marker.exists()
        try:
            victim.unlink()
        except FileNotFoundError:
            continue  # another helper's budget took it
        if was_uploaded:
            marker.unlink(missing_ok=True)
        total -= size
        removed.append(Removed(victim, size, uploads and not was_uploaded))
    return removed


@contextlib.contextmanager
def directory_lock(directory: Path, deadline: float) -> Iterator[bool]:
    """Hold the directory's upload lock (``.gencore.lock``, flock) while the block runs;
    yields False when it could not be taken before ``deadline`` (time.monotonic())."""
    fd = os.open(directory / ".gencore.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.2)
        yield True
    finally:
        os.close(fd)  # releases the lock


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
