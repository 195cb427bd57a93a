"""The encrypting filter of ``encrypt_to=`` cores: standard input to one age file on stdout.

The snapshot child starts it (``python .../gencore/capture/agepipe.py LEVEL THREADS
RECIPIENT...``) exactly as it starts :mod:`.zpipe`: stdin a pipe the child writes the core
into in file order, stdout the ``.partial`` file. ``LEVEL`` ``-`` encrypts the core as it
comes (``.core.age``); a number first compresses it with zstd at that level in a forked
process of this filter (``.core.zst.age``), so compression and encryption run side by side.
Nothing but ciphertext is written to stdout. It is run as a script, not with ``-m``, so that
starting it imports only :mod:`pyrage` (and :mod:`zstandard`), not gencore.

The exit status tells the child what happened: 0 when the age file is complete, the errno of
a failed write (ENOSPC is 28), or 125 for anything else.
"""

from __future__ import annotations

import os
import re
import sys

READ_SIZE = 4 << 20
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _recipients(texts: list[str]) -> list[object]:
    import pyrage

    out: list[object] = []
    for t in texts:
        mod = pyrage.ssh if t.startswith("ssh-") else pyrage.x25519
        out.append(mod.Recipient.from_str(t))
    return out


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
    import pyrage

    keys = _recipients(recipients)
    source, helper, r = "/proc/self/fd/0", 0, -1
    if level != "-":
        r, w = os.pipe()
        helper = os.fork()
        if helper == 0:  # the compressor: stdin -> pipe
            os.close(r)
            os._exit(_compress_into(int(level), threads, w))
        os.close(w)
        os.close(0)
        source = f"/proc/self/fd/{r}"
    try:
        pyrage.encrypt_file(source, "/proc/self/fd/1", keys)
    except (pyrage.EncryptError, OSError) as e:
        m = _OS_ERROR.search(str(e))
        code = int(m.group(1)) if m else getattr(e, "errno", None) or 125
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
