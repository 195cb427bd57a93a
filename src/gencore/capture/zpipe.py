"""The compressor of ``compress="zstd"`` cores: standard input to one zstd frame on stdout.

The snapshot child starts it (``python .../gencore/capture/zpipe.py LEVEL THREADS``) with stdin a
pipe the child writes the core into, in file order, and stdout the ``.partial`` file. It runs
at the child's lower priority and dies with it. It is run as a script, not with ``-m``, so
that starting it imports only :mod:`zstandard`, not gencore.

The exit status tells the child what happened: 0 when the frame is complete, the errno of a
failed write (ENOSPC is 28), or 125 for anything else (1 is left to Python's own errors).
"""

from __future__ import annotations

import sys

READ_SIZE = 4 << 20


def compress(level: int, threads: int) -> None:
    """Compress stdin to stdout until end of file."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with open(0, "rb", buffering=0, closefd=False) as src, open(1, "wb", closefd=False) as dst:
        cctx.copy_stream(src, dst, read_size=READ_SIZE, write_size=READ_SIZE)


def main(argv: list[str]) -> int:
    """Run :func:`compress`; the exit status is the errno of a failure."""
    try:
        compress(int(argv[0]), int(argv[1]))
    except OSError as e:
        return e.errno if e.errno and 1 < e.errno < 125 else 125
    except Exception:
        return 125
    return 0


if __name__ == "__main__":
    del sys.path[0]  # this package's directory: its modules must not shadow others
    sys.exit(main(sys.argv[1:]))
