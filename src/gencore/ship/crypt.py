"""Encrypted cores and bundles: standard age files, written as a stream, read with an identity.

``encrypt_to=`` names age recipients (X25519 ``age1...`` keys, or ``ssh-ed25519``/``ssh-rsa``
public keys); the snapshot child then writes the core through :mod:`gencore.capture.agepipe`,
a filter that encrypts on the way to disk, so no plaintext core is ever written, and bundles
are encrypted by the helper the same way. The files are those of the ``age`` tool
(``age -d -i KEY core.core.age > core.core``) and ``age``'s files are read here.

The implementation is pyrage (the Rust ``age`` crate), ``pip install 'gencore[age]'``.
Reading (:func:`decrypt_file`) takes identities from a file (``AGE-SECRET-KEY-1...`` lines, or
an OpenSSH private key) given as an argument or in ``$GENCORE_IDENTITY``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from .._common import PathLike
from ..errors import CoreFormatError, DecryptionError, GencoreError

__all__ = [
    "AGE_MAGIC",
    "DecryptionError",
    "decrypt_file",
    "import_pyrage",
    "is_encrypted",
    "load_identities",
    "parse_recipients",
]

AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
IDENTITY_ENV = "GENCORE_IDENTITY"
_CHUNK = 1 << 20
_OS_ERROR = re.compile(r"\(os error (\d+)\)")

Recipients = Union[str, "list[str]", "tuple[str, ...]", None]


def import_pyrage(what: str = "encrypt_to") -> Any:
    """The ``pyrage`` module, or a :class:`~gencore.GencoreError` saying how to get it."""
    try:
        import pyrage
    except ImportError:
        raise GencoreError(
            f"{what} needs the pyrage package (age encryption)",
            stage="preflight",
            advice="pip install 'gencore[age]' (or pyrage)",
        ) from None
    return pyrage


def parse_recipients(value: Recipients) -> tuple[str, ...]:
    """The ``encrypt_to`` argument as a tuple of checked recipient strings (``()``: none).

    Accepts one string (recipients separated by commas or whitespace) or a sequence of them;
    None or an empty sequence is no encryption.

    Raises:
        ValueError: a recipient is not an age X25519 or SSH public key (the message names it).
    """
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ()
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"encrypt_to must be age recipients (age1...), got {value!r}")
    items: list[str] = []
    for text in texts:
        if text.strip().startswith("ssh-"):  # "ssh-ed25519 AAAA... comment": one key
            items.append(" ".join(text.split()[:2]))
        else:
            items += [r for r in re.split(r"[,\s]+", text) if r]
    if not items:
        raise ValueError("encrypt_to names no recipient: pass an age public key (age1...)")
    pyrage = import_pyrage()
    for r in items:
        _recipient(pyrage, r)
    return tuple(items)


def _recipient(pyrage: Any, text: str) -> Any:
    try:
        if text.startswith("ssh-"):
            return pyrage.ssh.Recipient.from_str(text)
        return pyrage.x25519.Recipient.from_str(text)
    except Exception as e:  # pyrage.RecipientError and friends
        raise ValueError(
            f"encrypt_to: {text[:80]!r} is not an age recipient ({e}); pass the public key "
            "printed by `age-keygen` (age1...) or an ssh-ed25519/ssh-rsa public key"
        ) from None


def recipient_objects(recipients: tuple[str, ...]) -> list[Any]:
    """pyrage recipient objects for checked recipient strings."""
    pyrage = import_pyrage()
    return [_recipient(pyrage, r) for r in recipients]


def is_encrypted(path: PathLike) -> bool:
    """True when ``path`` starts like an age file (binary or armored)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(AGE_ARMOR))
    except OSError:
        return False
    return head.startswith(AGE_MAGIC) or head.startswith(AGE_ARMOR)


def load_identities(identity: Optional[PathLike] = None) -> list[Any]:
    """The identities in ``identity`` (else ``$GENCORE_IDENTITY``'s file): ``AGE-SECRET-KEY-1``
    lines (comments allowed, as ``age-keygen`` writes them) or an OpenSSH private key.

    Raises:
        DecryptionError: no identity file was given, or it holds no usable identity.
    """
    path = identity if identity is not None else os.environ.get(IDENTITY_ENV)
    if not path:
        raise DecryptionError(
            "this file is encrypted (age) and no identity was given",
            stage="read",
            advice=f"pass --identity FILE (or set ${IDENTITY_ENV}) with the age key of one "
            "of its recipients",
        )
    pyrage = import_pyrage("reading an encrypted core")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DecryptionError(
            f"cannot read the identity file {path}: {e.strerror}",
            errno=e.errno,
            stage="read",
            advice="pass the file age-keygen wrote (AGE-SECRET-KEY-1...)",
        ) from None
    found: list[Any] = []
    try:
        if b"PRIVATE KEY-----" in data:
            found.append(pyrage.ssh.Identity.from_buffer(data))
        for line in data.decode("ascii", "replace").splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                found.append(pyrage.x25519.Identity.from_str(line))
    except Exception as e:  # pyrage.IdentityError
        raise DecryptionError(
            f"the identity file {path} holds a key pyrage cannot use ({e})",
            stage="read",
            advice="pass an age identity (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH key",
        ) from None
    if not found:
        raise DecryptionError(
            f"the identity file {path} holds no age identity",
            stage="read",
            advice="pass the file age-keygen wrote (AGE-SECRET-KEY-1...)",
        )
    return found


class _SparseWriter:
    """A file writer that leaves all-zero blocks as holes (cores are mostly holes)."""

    def __init__(self, fd: int) -> None:
        self.f = os.fdopen(fd, "wb", buffering=0)
        self.size = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        if n and not data.strip(b"\0"):
            self.f.seek(n, os.SEEK_CUR)
        else:
            self.f.write(data)
        self.size += n
        return n

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        self.f.truncate(self.size)
        self.f.close()


def decrypt_file(src: PathLike, dest: PathLike, identity: Optional[PathLike] = None) -> None:
    """Decrypt the age file ``src`` into the new file ``dest`` (0600, sparse).

    Raises:
        DecryptionError: no identity, or none of them opens the file (exit status 1 in the
            command line).
        CoreFormatError: the file is damaged or truncated (``dest`` is removed).
    """
    identities = load_identities(identity)
    pyrage = import_pyrage("reading an encrypted core")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    out = _SparseWriter(fd)
    try:
        with open(src, "rb", buffering=0) as raw:
            pyrage.decrypt_io(raw, out, identities)
        out.close()
    except BaseException as e:
        try:
            out.f.close()
        finally:
            os.unlink(dest)
        if isinstance(e, pyrage.DecryptError) and "no matching keys" in str(e).lower():
            raise DecryptionError(
                f"{src} is encrypted to other keys than the identity given",
                stage="read",
                advice="pass --identity FILE (or $GENCORE_IDENTITY) with the key of one of "
                "the recipients it was written for",
            ) from None
        if isinstance(e, (pyrage.DecryptError, OSError)):
            m = _OS_ERROR.search(str(e))
            raise CoreFormatError(
                f"{src} is not a readable age file (damaged or truncated): {e}",
                errno=int(m.group(1)) if m else getattr(e, "errno", None),
            ) from None
        raise
