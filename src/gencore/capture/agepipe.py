"""The encrypting filter of ``encrypt_to=`` cores: standard input to one age file on stdout.

The snapshot child starts it (``python .../gencore/capture/agepipe.py LEVEL THREADS
RECIPIENT...``) exactly as it starts :mod:`.zpipe`: stdin a pipe the child writes the core
into in file order, stdout the ``.partial`` file. ``LEVEL`` ``-`` encrypts the core as it
comes (``.core.age``); a number first compresses it with zstd at that level in a forked
process of this filter (``.core.zst.age``), so compression and encryption run side by side.
Nothing but ciphertext is written to stdout. It is run as a script, not with ``-m``, so that
starting it imports only the cryptography packages (and :mod:`zstandard`), not gencore.

The file is age v1 (https://age-encryption.org/v1): for X25519 recipients (``age1...``) it
is written here with the ``cryptography`` package's X25519, HKDF-SHA-256, HMAC-SHA-256 and
ChaCha20-Poly1305 (OpenSSL's, several times faster than pyrage's on a core-sized stream;
``age -d`` and pyrage read it, and the tests check both); a file for an SSH recipient is
written by pyrage (as is every file where ``cryptography`` is not installed). The exit
status tells the child what happened: 0 when the age file is complete, the errno of a
failed write (ENOSPC is 28), or 125 for anything else.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from typing import Any

READ_SIZE = 4 << 20
CHUNK = 64 << 10  # age's STREAM chunk
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _bech32_key(text: str) -> bytes:
    """The 32-byte X25519 key of an ``age1...`` recipient (bech32, checksum verified)."""
    hrp, _, data = text.lower().rpartition("1")
    values = [_BECH32.index(c) for c in data]
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values:
        top, chk = chk >> 25, (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    if hrp != "age" or chk != 1:
        raise ValueError(f"not an age X25519 recipient: {text!r}")
    acc = bits = 0
    out = bytearray()
    for v in values[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if len(out) != 32:
        raise ValueError(f"not an age X25519 recipient: {text!r}")
    return bytes(out)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return bytes(HKDF(hashes.SHA256(), 32, salt, info).derive(ikm))


def age_header(recipients: list[str], file_key: bytes) -> bytes:
    """The age header for X25519 recipients, MAC included."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    lines = [b"age-encryption.org/v1"]
    for text in recipients:
        their = _bech32_key(text)
        eph = X25519PrivateKey.generate()
        share = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        shared = eph.exchange(X25519PublicKey.from_public_bytes(their))
        key = _hkdf(shared, share + their, b"age-encryption.org/v1/X25519")
        body = ChaCha20Poly1305(key).encrypt(bytes(12), file_key, None)
        lines += [b"-> X25519 " + _b64(share), _b64(body)]
    head = b"\n".join(lines) + b"\n---"
    mac = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(head)
    return head + b" " + _b64(mac.finalize()) + b"\n"


def encrypt_stream(src: int, dst: int, recipients: list[str]) -> None:
    """age-encrypt everything read from ``src`` to ``dst`` (file descriptors)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key, nonce = os.urandom(16), os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    _write_all(dst, [age_header(recipients, file_key) + nonce])
    seal = _sealer(aead)
    counter, have = 0, 0
    buf = bytearray(READ_SIZE + CHUNK)
    view = memoryview(buf)
    out = memoryview(bytearray((READ_SIZE // CHUNK + 1) * (CHUNK + 16)))
    with open(src, "rb", buffering=0, closefd=False) as f:
        while True:
            got = f.readinto(view[have:])
            if got:
                have += got
                if have < len(buf):
                    continue
            # every full chunk but the last one read: the final chunk is known at EOF only
            keep = have - (have - 1) // CHUNK * CHUNK if have else 0
            pos = 0
            for at in range(0, have - keep, CHUNK):
                pos += seal(counter.to_bytes(11, "big") + b"\0", view[at : at + CHUNK], out[pos:])
                counter += 1
            if not got:  # end of the stream
                last = counter.to_bytes(11, "big") + b"\1"
                pos += seal(last, view[have - keep : have], out[pos:])
                _write_all(dst, [out[:pos]])
                return
            _write_all(dst, [out[:pos]])
            buf[:keep] = buf[have - keep : have]
            have = keep


def _sealer(aead: Any) -> Any:
    """seal(nonce, data, into): encrypt into a buffer, returning the bytes written (without
    an allocation per chunk where the cryptography package has encrypt_into)."""
    if hasattr(aead, "encrypt_into"):

        def seal_into(nonce: bytes, data: memoryview, into: memoryview) -> int:
            aead.encrypt_into(nonce, data, None, into[: len(data) + 16])
            return len(data) + 16

        return seal_into

    def seal_copy(nonce: bytes, data: memoryview, into: memoryview) -> int:
        sealed = aead.encrypt(nonce, data, None)
        into[: len(sealed)] = sealed
        return len(sealed)

    return seal_copy


def _write_all(fd: int, parts: list[Any]) -> None:
    for data in parts:
        v = memoryview(data)
        while v:
            v = v[os.write(fd, v) :]


def _have_cryptography() -> bool:
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError:
        return False
    return True


def _pyrage_encrypt(source: str, recipients: list[str]) -> None:
    import pyrage

    keys: list[Any] = []
    for t in recipients:
        mod = pyrage.ssh if t.startswith("ssh-") else pyrage.x25519
        keys.append(mod.Recipient.from_str(t))
    pyrage.encrypt_file(source, "/proc/self/fd/1", keys)


def _compress_into(level: int, threads: int, fd: int) -> int:
    """In a forked process: zstd of stdin into ``fd``; the exit status as :func:`main`'s."""
    try:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        with open(0, "rb", buffering=0) as src, open(fd, "wb") as dst:
            cctx.copy_stream(src, dst, read_size=READ_SIZE, write_size=READ_SIZE)
    except OSError as e:
        return e.errno if e.errno and 1 < e.errno < 125 else 125
    except Exception:
        return 125
    return 0


def encrypt(level: str, threads: int, recipients: list[str]) -> int:
    """Encrypt stdin (zstd-compressed first unless ``level`` is ``-``) to stdout."""
    source, helper, r = 0, 0, -1
    if level != "-":
        r, w = os.pipe()
        helper = os.fork()
        if helper == 0:  # the compressor: stdin -> pipe
            os.close(r)
            os._exit(_compress_into(int(level), threads, w))
        os.close(w)
        os.close(0)
        source = r
    try:
        if any(t.startswith("ssh-") for t in recipients) or not _have_cryptography():
            _pyrage_encrypt(f"/proc/self/fd/{source}", recipients)
        else:
            encrypt_stream(source, 1, recipients)
    except OSError as e:
        m = _OS_ERROR.search(str(e))
        code = e.errno or (int(m.group(1)) if m else 125)
        return code if 1 < code < 125 else 125
    except Exception as e:  # pyrage.EncryptError carries the OS error in its text
        m = _OS_ERROR.search(str(e))
        code = int(m.group(1)) if m else 125
        return code if 1 < code < 125 else 125
    finally:
        if helper:  # a compressor still writing gets EPIPE and ends
            os.close(r)
            _, status = os.waitpid(helper, 0)
    code = os.waitstatus_to_exitcode(status) if helper else 0
    return code if code == 0 or 1 < code < 125 else 125


def main(argv: list[str]) -> int:
    """Run :func:`encrypt`; the exit status is the errno of a failure."""
    try:
        return encrypt(argv[0], int(argv[1]), argv[2:])
    except OSError as e:
        return e.errno if e.errno and 1 < e.errno < 125 else 125
    except Exception:
        return 125


if __name__ == "__main__":
    del sys.path[0]  # this package's directory: its modules must not shadow others
    sys.exit(main(sys.argv[1:]))
