"""``open_core``: a core (plain, ``.core.zst`` or inside a bundle) opened for analysis.

:class:`CoreFile` is the ELF view of :mod:`gencore.analysis.reader` plus the answers read from
the process's memory (the heap census); this module is the one place that knows every kind of
file gencore reads, so the reader stays an ELF parser and the analyses never import each other.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .._common import PathLike, plain_name
from ..ship.crypt import decrypt_file, is_encrypted
from ..ship.extract import decompress_core, extract_bundle, is_bundle, is_compressed_core
from .memory import CoreMemory
from .pylayout import ProcessMemory, find_layout
from .pyobjects import PyModel
from .reader import EM_X86_64, ElfCore, open_elf
from .stacks import ThreadStack, iter_stacks, note_stacks
from .tasks import TaskReport, find_tasks

if TYPE_CHECKING:
    from .heap import Census, Referrers

__all__ = ["CoreFile", "open_core"]


class CoreFile(ElfCore):
    """An opened core. Use :func:`open_core`; close it (or use ``with``) when done."""

    _memory: Optional[CoreMemory] = None
    _model: Optional[PyModel] = None

    @property
    def python_stacks(self) -> list[dict[str, Any]]:
        """Python stacks stored by gencore (innermost frame first), or ``[]``."""
        return list(self.metadata.get("stacks", []))

    def memory(self) -> CoreMemory:
        """The process's memory as this core holds it, read by address, completed from the
        mapped files on this machine where the core left them out and their build-ids match
        (kept open until :meth:`close`)."""
        if self._memory is None:
            self._memory = ProcessMemory(self)
        return self._memory

    def python(self) -> PyModel:
        """The interpreter's objects in this core's memory (see
        :mod:`gencore.analysis.pyobjects`), with the layout :func:`~gencore.analysis.pylayout.
        find_layout` found.

        Raises:
            PythonUnavailableError: no interpreter this reader knows is in the core.
        """
        if self._model is None:
            mem = self.memory()
            layout = find_layout(self, mem)
            pointers = {}
            if self.machine == EM_X86_64:
                pointers = {t.registers.get("fs_base", 0): t.tid for t in self.threads}
            self._model = PyModel(mem, layout, pointers)
        return self._model

    def stacks(self, locals: bool = False, source: str = "memory") -> Iterator[ThreadStack]:
        """Every Python thread's stack (innermost frame first), one thread at a time.

        ``source="memory"`` reads them from the core's memory (every kind of core);
        ``"note"`` gives the copy gencore stored in its note, when there is one. ``locals``
        adds each frame's local variables (short texts of their values; memory only).

        Raises:
            PythonUnavailableError: (memory) the interpreter cannot be read from this core.
        """
        if source == "note":
            return note_stacks(self)
        if source != "memory":
            raise ValueError(f"source must be 'memory' or 'note', not {source!r}")
        return iter_stacks(self, self.python(), with_locals=locals)

    def tasks(self, include_done: bool = False) -> TaskReport:
        """Every pending asyncio task (all tasks still in memory with ``include_done``): id,
        name, state, coroutine frames, what it is blocked on, the tasks it awaits and those
        awaiting it, its loop and the loop's thread (see :mod:`gencore.analysis.tasks`).

        Raises:
            PythonUnavailableError: the interpreter cannot be read from this core.
        """
        return find_tasks(self, self.python(), include_done)

    def close(self) -> None:
        """Close the underlying file and unmap its memory."""
        self._model = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        super().close()

    def heap(
        self,
        largest: int = 0,
        show_values: bool = False,
        interpreter: Optional[int] = None,
        engine: Optional[str] = None,
    ) -> Census:
        """Census of the objects in this core's Python heap, by type (see
        :mod:`gencore.analysis.heap`).

        Iterate it for ``(type, count, bytes)``; ``.since(older)``, ``.referrers(type)``,
        ``.retained()``, ``.path_to(type_or_address)``, ``.suspects()`` and
        ``.duplicates()`` answer what grew, who holds it and why it is kept.
        ``interpreter`` (an id) censuses a subinterpreter's heap.
        """
        from .heap import census  # the heap's modules load when a census is asked for

        return census(
            self, largest=largest, show_values=show_values, interpreter=interpreter, engine=engine
        )

    def heap_referrers(self, type_name: str) -> Referrers:
        """Which types hold references to objects of ``type_name`` (``"__main__.Order"``)."""
        from .heap import referrers

        return referrers(self, type_name)


def decrypted(path: PathLike, tmp: PathLike, identity: Optional[PathLike] = None) -> Path:
    """``path`` itself, or when it is an age file (``encrypt_to=``) its plaintext, decrypted
    into the private directory ``tmp`` with ``identity`` (else ``$GENCORE_IDENTITY``).

    Raises:
        DecryptionError: no identity, or not one of the file's recipients.
        CoreFormatError: the age file is damaged or truncated.
    """
    src = Path(path)
    if not is_encrypted(src):
        return src
    name = plain_name(src.name)
    target = Path(tmp) / (name if name != src.name else name + ".plain")
    decrypt_file(src, target, identity)
    return target


def _unwrap(path: Path, tmp: Path, identity: Optional[PathLike]) -> tuple[CoreFile, dict[str, Any]]:
    """Decrypt, decompress and unpack ``path`` into ``tmp`` until a core is left (an encrypted
    bundle holds an encrypted core: two layers); intermediate files are removed."""
    work, manifest = path, {}  # type: tuple[Path, dict[str, Any]]
    for _ in range(6):
        if is_encrypted(work):
            nxt = decrypted(work, tmp, identity)
        elif is_compressed_core(work):
            nxt = tmp / work.name.removesuffix(".zst")
            if nxt == work or nxt.exists():
                nxt = nxt.with_name(nxt.name + ".core")
            decompress_core(work, nxt)
        elif is_bundle(work):
            ex = extract_bundle(work, tmp / "bundle", core_only=True)
            nxt, manifest = ex.core, ex.manifest
        else:
            break
        if work != path:
            work.unlink()
        work = nxt
    return open_elf(work, CoreFile), manifest


def open_core(path: PathLike, identity: Optional[PathLike] = None) -> CoreFile:
    """Open an ELF core file, a compressed or encrypted core or the core inside a bundle, and
    parse its notes and headers.

    An age file (``.core.age``, ``.tar.gz.age``... from ``encrypt_to=``) is decrypted with
    ``identity`` (an age identity file, else ``$GENCORE_IDENTITY``'s), a ``.core.zst``
    (``compress="zstd"``) is decompressed, and a bundle (``.tar.gz``/``.tar.zst`` from
    :func:`~gencore.collect_core`) has its core extracted, into a private temporary
    directory (``$TMPDIR``, mode 0700) removed by :meth:`CoreFile.close`; ``CoreFile.source``
    is then the file given here and ``CoreFile.path`` the temporary core. A bundle's manifest
    is in ``CoreFile.manifest``.

    Raises:
        CoreFormatError: the file is missing, not an ELF core or bundle, or damaged.
        DecryptionError: an encrypted file without an identity that opens it.
    """
    if not is_encrypted(path) and not is_compressed_core(path) and not is_bundle(path):
        return open_elf(Path(path), CoreFile)
    tmp = tempfile.mkdtemp(prefix="gencore-core-")
    try:
        core, manifest = _unwrap(Path(path), Path(tmp), identity)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    core.cleanup_dir = tmp
    core.manifest = manifest
    core.source = Path(path)
    return core
