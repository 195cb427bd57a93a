"""Read ELF cores (ours or the kernel's): threads, mappings, notes, memory, GENCORE metadata.

This is the only module that reads ELF bytes: headers and segments through pyelftools, notes
with its own bounds-checked parser, and what analysis needs from memory (build-ids of mapped
ELF images, the dynamic loader's library names). Every malformed input raises
:class:`~gencore.CoreFormatError`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Optional, TypeVar

from .._common import PathLike
from ..errors import CoreFormatError, GencoreError, MemoryUnavailableError

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_X86_XSTATE = 0x202
NT_X86_XSAVE_LAYOUT = 0x205
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
NT_GENCORE_JSON = 0x47430001
NT_GENCORE_CAPTURE = 0x47430002
NT_GNU_BUILD_ID = 3
AT_PHDR = 3
AT_PHNUM = 5
PT_DYNAMIC = 2
PT_NOTE = 4
PT_PHDR = 6
DT_DEBUG = 21

_C = TypeVar("_C", bound="ElfCore")

X86_64_REGS = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
    "fs_base gs_base ds es fs gs"
).split()
AARCH64_REGS = [f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"]
EM_X86_64 = 62
EM_AARCH64 = 183
# e_machine -> (the registers of NT_PRSTATUS's pr_reg, the note's size; pr_fpvalid is last)
PRSTATUS_LAYOUT = {EM_X86_64: (X86_64_REGS, 336), EM_AARCH64: (AARCH64_REGS, 392)}


@dataclass(frozen=True)
class Note:
    """One ELF note: owner name, type and raw descriptor bytes."""

    owner: str
    type: int
    data: bytes


@dataclass(frozen=True)
class Thread:
    """A thread from an ``NT_PRSTATUS`` note."""

    tid: int
    registers: dict[str, int]
    signal: int
    fpvalid: bool

    @property
    def pc(self) -> int:
        """Instruction pointer (``rip`` on x86_64, ``pc`` on aarch64)."""
        return self.registers.get("rip", self.registers.get("pc", 0))

    @property
    def sp(self) -> int:
        """Stack pointer (``rsp`` on x86_64, ``sp`` on aarch64)."""
        return self.registers.get("rsp", self.registers.get("sp", 0))


@dataclass(frozen=True)
class Mapping:
    """A ``PT_LOAD`` segment with the file it maps (from ``NT_FILE``), if any."""

    start: int
    end: int
    flags: str
    offset: int
    filesz: int
    path: Optional[str] = None
    file_offset: Optional[int] = None

    @property
    def size(self) -> int:
        """Virtual size of the mapping."""
        return self.end - self.start


@dataclass
class ElfCore:
    """The ELF side of an opened core: threads, mappings, notes and memory.

    :class:`~gencore.CoreFile` (what :func:`~gencore.open_core` returns) adds the Python-level
    answers on top of it."""

    path: Path
    machine: int
    notes: list[Note]
    mappings: list[Mapping]
    threads: list[Thread]
    pid: Optional[int] = None
    ppid: Optional[int] = None
    uid: Optional[int] = None
    command: str = ""
    executable_name: str = ""
    signal: int = 0
    auxv: dict[int, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    capture: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    cleanup_dir: Optional[str] = None
    source: Optional[Path] = None
    """The file given to :func:`open_core` when ``path`` is a temporary copy of the core
    (from a bundle or a ``.core.zst``)."""
    _f: Optional[BinaryIO] = None
    _size: int = 0

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.cleanup_dir is not None:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)
            self.cleanup_dir = None

    @property
    def python_stacks(self) -> list[dict[str, Any]]:
        """Python stacks stored by gencore (innermost frame first), or ``[]``."""
        return list(self.metadata.get("stacks", []))

    @property
    def incomplete_threads(self) -> list[int]:
        """Threads that the snapshot could not park (partial registers)."""
        return [t["tid"] for t in self.capture.get("threads", []) if t.get("state") == "incomplete"]

    def mapping_at(self, addr: int) -> Optional[Mapping]:
        """The mapping that contains ``addr``, if any."""
        lo, hi = 0, len(self.mappings)
        while lo < hi:
            mid = (lo + hi) // 2
            m = self.mappings[mid]
            if addr < m.start:
                hi = mid
            elif addr >= m.end:
                lo = mid + 1
            else:
                return m
        return None

    def _unmapped(self, addr: int) -> str:
        """Why an address in no PT_LOAD is not in the core (a capped core leaves omitted
        anonymous memory out of its PT_LOADs)."""
        budget = self.capture.get("budget")
        if isinstance(budget, dict):
            for r in budget.get("omitted_ranges") or []:
                if isinstance(r, list) and len(r) == 2 and r[0] <= addr < r[1]:
                    return (
                        f"address {addr:#x} was left out of the core by max_size "
                        f"(omitted {r[0]:#x}-{r[1]:#x})"
                    )
            return f"address {addr:#x} is not in the core: unmapped, or left out by max_size"
        return f"address {addr:#x} is not mapped in the core"

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of memory at ``addr`` as the core holds them.

        Holes in the file read as zeros (the kernel and gencore leave absent pages as holes).
        Raises :class:`MemoryUnavailableError` for addresses that are unmapped, whose
        mapping was not dumped, or that ``max_size`` left out.
        """
        out = bytearray()
        while size > 0:
            m = self.mapping_at(addr)
            if m is None:
                raise MemoryUnavailableError(self._unmapped(addr))
            rel = addr - m.start
            if rel >= m.filesz:
                raise MemoryUnavailableError(
                    f"address {addr:#x} is in {m.path or 'an anonymous mapping'} "
                    f"({m.start:#x}-{m.end:#x}), which was not dumped"
                )
            n = min(size, m.filesz - rel)
            if self._f is None:
                raise ValueError("the core file is closed")
            if m.offset + rel >= self._size:
                chunk = b""
            else:
                self._f.seek(m.offset + rel)
                chunk = self._f.read(n)
            if len(chunk) < n:
                raise CoreFormatError(
                    f"{self.path} is truncated: mapping {m.start:#x} needs bytes up to "
                    f"{m.offset + m.filesz} but the file has {self._size}"
                )
            out += chunk
            addr += n
            size -= n
        return bytes(out)

    def c_string(self, addr: int, limit: int = 4096) -> str:
        """The NUL-terminated string at ``addr`` (at most ``limit`` bytes)."""
        out = b""
        while len(out) < limit:
            chunk = self.read(addr + len(out), 256)
            i = chunk.find(b"\0")
            if i >= 0:
                return (out + chunk[:i]).decode("utf-8", "surrogateescape")
            out += chunk
        return out.decode("utf-8", "surrogateescape")

    def build_id_at(self, start: int) -> Optional[str]:
        """The GNU build-id of the ELF image mapped at ``start``, from the core's memory."""
        try:
            hdr = self.read(start, 64)
            if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return None
            (phoff,) = struct.unpack_from("<Q", hdr, 32)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
            if phentsize != 56 or phnum > 256:
                return None
            phdrs = self.read(start + phoff, phnum * 56)
            for i in range(phnum):
                p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * 56)
                if p_type == PT_NOTE and 0 < p_filesz <= 65536:
                    bid = build_id_from_notes(self.read(start + p_offset, p_filesz))
                    if bid:
                        return bid
        except (GencoreError, struct.error, ValueError):
            return None
        return None

    def _dynamic_section(self) -> Optional[int]:
        """Address of the executable's ``_DYNAMIC`` (from AT_PHDR's program headers)."""
        phdr = self.auxv.get(AT_PHDR)
        phnum = self.auxv.get(AT_PHNUM, 0)
        if phdr is None or not 0 < phnum <= 256:
            return None
        table = self.read(phdr, phnum * 56)
        bias, dyn = None, None
        for i in range(phnum):
            p_type, _, _, p_vaddr = struct.unpack_from("<IIQQ", table, i * 56)
            if p_type == PT_PHDR:
                bias = phdr - p_vaddr
            elif p_type == PT_DYNAMIC:
                dyn = p_vaddr
        return None if bias is None or dyn is None else dyn + bias

    def loader_names(self) -> dict[str, str]:
        """The dynamic loader's names of the loaded libraries (``link_map.l_name``) -> the
        mapped path.

        Debuggers look libraries up by these names (``/lib/x86_64-linux-gnu/libz.so.1``),
        which can differ from the resolved paths of the mappings
        (``/usr/lib/x86_64-linux-gnu/libz.so.1.2.13``).
        """
        names: dict[str, str] = {}
        try:
            addr = self._dynamic_section()
            if addr is None:
                return names
            r_debug = None
            for _ in range(512):
                tag, val = struct.unpack("<qQ", self.read(addr, 16))
                if tag == 0:
                    break
                if tag == DT_DEBUG:
                    r_debug = val
                addr += 16
            if not r_debug:
                return names
            (lm,) = struct.unpack("<Q", self.read(r_debug + 8, 8))
            for _ in range(4096):
                if not lm:
                    break
                _, l_name, l_ld, l_next = struct.unpack("<QQQQ", self.read(lm, 32))
                name = self.c_string(l_name) if l_name else ""
                m = self.mapping_at(l_ld)
                if name.startswith("/") and m is not None and m.path:
                    names[name] = strip_deleted(m.path)[0]
                lm = l_next
        except (GencoreError, struct.error):
            pass
        return names


def strip_deleted(path: str) -> tuple[str, bool]:
    """A mapping's path without the kernel's `` (deleted)`` suffix, and whether it had one."""
    if path.endswith(" (deleted)"):
        return path[: -len(" (deleted)")], True
    return path, False


def build_id_from_notes(data: bytes) -> Optional[str]:
    """The GNU build-id in a PT_NOTE segment's bytes, as hex."""
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name_end = off + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            return None
        if ntype == NT_GNU_BUILD_ID and data[off + 12 : off + 12 + namesz].rstrip(b"\0") == b"GNU":
            return data[name_end : name_end + descsz].hex()
        off = desc_end
    return None


def build_id_of_file(f: IO[bytes]) -> Optional[str]:
    """The GNU build-id of an ELF file on disk (``None`` if it has none or is not ELF)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                for n in seg.iter_notes():  # type: ignore[attr-defined,unused-ignore]
                    if n["n_type"] == "NT_GNU_BUILD_ID":
                        return str(n["n_desc"])
    except (ELFError, ValueError, struct.error, OSError, AttributeError, KeyError):
        return None
    return None


def _split_notes(data: bytes, path: Path) -> list[Note]:
    """The notes of a PT_NOTE segment (Elf64_Nhdr, 4-byte aligned), bounds-checked.

    Done here rather than with pyelftools' note iterator, which decodes NT_FILE's file names
    one byte at a time (a core has thousands) and types notes by name only for known owners.
    """
    notes = []
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name_off = off + 12
        desc_off = name_off + ((namesz + 3) & ~3)
        end = desc_off + ((descsz + 3) & ~3)
        if desc_off + descsz > len(data):
            raise CoreFormatError(f"{path}: note at offset {off} runs past its segment")
        owner = data[name_off : name_off + namesz].split(b"\0", 1)[0].decode("latin-1")
        notes.append(Note(owner, ntype, data[desc_off : desc_off + descsz]))
        off = end
    return notes


def _c_string(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _parse_notes(core: ElfCore) -> None:
    files: list[tuple[int, int, int, str]] = []
    reg_names, pr_size = PRSTATUS_LAYOUT.get(core.machine, PRSTATUS_LAYOUT[EM_X86_64])
    for note in core.notes:
        d = note.data
        if note.owner == "CORE" and note.type == NT_PRSTATUS and len(d) >= pr_size:
            regs = struct.unpack_from(f"<{len(reg_names)}Q", d, 112)
            core.threads.append(
                Thread(
                    tid=struct.unpack_from("<i", d, 32)[0],
                    registers=dict(zip(reg_names, regs)),
                    signal=struct.unpack_from("<h", d, 12)[0],
                    fpvalid=bool(struct.unpack_from("<i", d, pr_size - 8)[0]),
                )
            )
        elif note.owner == "CORE" and note.type == NT_PRPSINFO and len(d) >= 136:
            (core.uid,) = struct.unpack_from("<I", d, 16)
            core.pid, core.ppid = struct.unpack_from("<ii", d, 24)
            core.executable_name = _c_string(d[40:56])
            core.command = _c_string(d[56:136])
        elif note.owner == "CORE" and note.type == NT_SIGINFO and len(d) >= 4:
            core.signal = struct.unpack_from("<i", d, 0)[0]
        elif note.owner == "CORE" and note.type == NT_AUXV:
            for i in range(0, len(d) - 15, 16):
                k, v = struct.unpack_from("<QQ", d, i)
                if k == 0:
                    break
                core.auxv[k] = v
        elif note.owner == "CORE" and note.type == NT_FILE and len(d) >= 16:
            count, page = struct.unpack_from("<QQ", d, 0)
            if 16 + count * 24 > len(d):
                raise CoreFormatError(f"{core.path}: NT_FILE note claims {count} entries")
            names = d[16 + count * 24 :].split(b"\0")
            for i in range(count):
                s, e, off = struct.unpack_from("<QQQ", d, 16 + i * 24)
                name = names[i].decode("utf-8", "surrogateescape") if i < len(names) else ""
                files.append((s, e, off * page, name))
        elif note.owner == "GENCORE" and note.type in (NT_GENCORE_JSON, NT_GENCORE_CAPTURE):
            try:
                doc = json.loads(d.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise CoreFormatError(f"{core.path}: GENCORE note is not JSON: {e}") from None
            if not isinstance(doc, dict):
                raise CoreFormatError(f"{core.path}: GENCORE note is not a JSON object")
            if note.type == NT_GENCORE_JSON:
                core.metadata = doc
            else:
                core.capture = doc
    by_start = {s: (e, off, name) for s, e, off, name in files}
    core.mappings = [
        Mapping(
            m.start, m.end, m.flags, m.offset, m.filesz, by_start[m.start][2], by_start[m.start][1]
        )
        if m.start in by_start
        else m
        for m in core.mappings
    ]


def open_elf(p: Path, cls: type[_C]) -> _C:
    """Open the ELF core ``p`` as an instance of ``cls`` (an :class:`ElfCore`) and parse its
    notes and headers.

    Raises:
        CoreFormatError: the file is missing, not an ELF core, or damaged.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        f = open(p, "rb")  # noqa: SIM115 - kept open by CoreFile
    except OSError as e:
        raise CoreFormatError(
            f"cannot open {p}: {e.strerror}", errno=e.errno, stage="read"
        ) from None
    try:
        size = os.fstat(f.fileno()).st_size
        elf = ELFFile(f)
        if elf.header["e_type"] != "ET_CORE":
            raise CoreFormatError(f"{p} is an ELF file but not a core ({elf.header['e_type']})")
        core = cls(path=p, machine=0, notes=[], mappings=[], threads=[], _f=f, _size=size)
        machine = elf.header["e_machine"]
        core.machine = (
            {"EM_X86_64": EM_X86_64, "EM_AARCH64": EM_AARCH64}.get(machine, 0)
            if isinstance(machine, str)
            else int(machine)
        )
        first_note = True
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE" and first_note:
                first_note = False
                if seg["p_offset"] + seg["p_filesz"] > size:
                    raise CoreFormatError(f"{p} is truncated inside its notes")
                f.seek(seg["p_offset"])
                core.notes.extend(_split_notes(f.read(seg["p_filesz"]), p))
            elif seg["p_type"] == "PT_LOAD":
                if (
                    seg["p_vaddr"] + seg["p_memsz"] > 1 << 64
                    or seg["p_filesz"] > seg["p_memsz"]
                    or seg["p_offset"] >= 1 << 62
                ):
                    raise CoreFormatError(
                        f"{p} has an impossible PT_LOAD segment at {seg['p_vaddr']:#x}"
                    )
                fl = seg["p_flags"]
                flags = (
                    ("r" if fl & 4 else "-") + ("w" if fl & 2 else "-") + ("x" if fl & 1 else "-")
                )
                core.mappings.append(
                    Mapping(
                        seg["p_vaddr"],
                        seg["p_vaddr"] + seg["p_memsz"],
                        flags,
                        seg["p_offset"],
                        seg["p_filesz"],
                    )
                )
        core.mappings.sort(key=lambda m: m.start)
        _parse_notes(core)
        return core
    except CoreFormatError:
        f.close()
        raise
    except (
        ELFError,
        ValueError,
        struct.error,
        OverflowError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        AssertionError,
        UnicodeDecodeError,
        MemoryError,
    ) as e:
        f.close()
        raise CoreFormatError(f"{p} is not a readable ELF core: {type(e).__name__}: {e}") from None
    except Exception as e:  # construct's own errors and anything else pyelftools raises
        f.close()
        raise CoreFormatError(f"{p} is not a readable ELF core: {type(e).__name__}: {e}") from None


def elf_end(path: PathLike) -> int:
    """Where the last segment (or the PN_XNUM section header) of the ELF core ``path`` ends:
    how long the file must be.

    Raises:
        ValueError: it is not an ELF file, or its headers are impossible or truncated.
    """
    with open(path, "rb") as f:
        eh = f.read(64)
        if len(eh) < 64 or eh[:4] != b"\x7fELF":
            raise ValueError("it does not start with an ELF header")
        phoff, shoff = struct.unpack_from("<QQ", eh, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", eh, 0x36)
        end = shoff + shentsize * shnum if shnum else 0
        if phnum == 0xFFFF and shoff:
            f.seek(shoff)
            sh = f.read(64)
            phnum = struct.unpack_from("<I", sh, 44)[0] if len(sh) == 64 else 0
        if phentsize != 56 or phnum > 1 << 24:
            raise ValueError("its program header table is impossible")
        f.seek(phoff)
        table = f.read(phnum * 56)
        if len(table) < phnum * 56:
            raise ValueError("it is truncated inside its program headers")
        for i in range(phnum):
            offset, _vaddr, _paddr, filesz = struct.unpack_from("<QQQQ", table, i * 56 + 8)
            end = max(end, offset + filesz)
        return end
