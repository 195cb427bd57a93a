"""``open_core``: a core (plain, ``.core.zst`` or inside a bundle) opened for analysis.

:class:`CoreFile` is the ELF view of :mod:`gencore.analysis.reader` plus the answers read from
the process's memory (the heap census); this module is the one place that knows every kind of
file gencore reads, so the reader stays an ELF parser and the analyses never import each other.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._common import PathLike
from ..ship.extract import decompress_core, extract_bundle, is_bundle, is_compressed_core
from .heap import Census, Referrers, census, referrers
from .reader import ElfCore, open_elf

__all__ = ["CoreFile", "open_core"]


class CoreFile(ElfCore):
    """An opened core. Use :func:`open_core`; close it (or use ``with``) when done."""

    @property
    def python_stacks(self) -> list[dict[str, Any]]:
        """Python stacks stored by gencore (innermost frame first), or ``[]``."""
        return list(self.metadata.get("stacks", []))

    def heap(self, largest: int = 0, show_values: bool = False) -> Census:
        """Census of the objects in this core's Python heap, by type (see
        :mod:`gencore.analysis.heap`).

        Iterate it for ``(type, count, bytes)``; ``.since(older)`` and ``.referrers(type)``
        answer what grew and who holds it.
        """
        return census(self, largest=largest, show_values=show_values)

    def heap_referrers(self, type_name: str) -> Referrers:
        """Which types hold references to objects of ``type_name`` (``"__main__.Order"``)."""
        return referrers(self, type_name)


def open_core(path: PathLike) -> CoreFile:
    """Open an ELF core file, a compressed core or the core inside a bundle, and parse its
    notes and headers.

    A ``.core.zst`` (``compress="zstd"``) is decompressed, and a bundle (``.tar.gz``/
    ``.tar.zst`` from :func:`~gencore.collect_core`) has its core extracted, into a private
    temporary directory (``$TMPDIR``) removed by :meth:`CoreFile.close`; ``CoreFile.source``
    is then the file given here and ``CoreFile.path`` the temporary core. A bundle's manifest
    is in ``CoreFile.manifest``.

    Raises:
        CoreFormatError: the file is missing, not an ELF core or bundle, or damaged.
    """
    compressed = is_compressed_core(path)
    if not compressed and not is_bundle(path):
        return open_elf(Path(path), CoreFile)
    tmp = tempfile.mkdtemp(prefix="gencore-core-" if compressed else "gencore-bundle-")
    try:
        if compressed:
            target = Path(tmp) / Path(path).name.removesuffix(".zst")
            decompress_core(path, target)
            core, manifest = open_elf(target, CoreFile), {}
        else:
            ex = extract_bundle(path, tmp, core_only=True)
            core, manifest = open_elf(ex.core, CoreFile), ex.manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    core.cleanup_dir = tmp
    core.manifest = manifest
    core.source = Path(path)
    return core
