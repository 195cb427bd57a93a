"""Build small ELF cores in memory for the unit tests: notes and PT_LOAD segments, laid out
the way the kernel (and gencore) lay them out. No debugger or root needed."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

PAGE = 4096


def note(owner: str, ntype: int, desc: bytes) -> bytes:
    name = owner.encode() + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def prstatus(tid: int, rip: int = 0x401000, rsp: int = 0x7FFF0000, sig: int = 0) -> bytes:
    d = bytearray(336)
    struct.pack_into("<h", d, 12, sig)
    struct.pack_into("<i", d, 32, tid)
    regs = [0] * 27
    regs[16], regs[19] = rip, rsp
    struct.pack_into("<27Q", d, 112, *regs)
    struct.pack_into("<i", d, 328, 1)
    return bytes(d)


def prpsinfo(pid: int, ppid: int, uid: int, fname: str, args: str) -> bytes:
    d = bytearray(136)
    struct.pack_into("<I", d, 16, uid)
    struct.pack_into("<ii", d, 24, pid, ppid)
    d[40 : 40 + len(fname[:15])] = fname[:15].encode()
    d[56 : 56 + len(args[:79])] = args[:79].encode()
    return bytes(d)


def nt_file(entries: list[tuple[int, int, int, str]]) -> bytes:
    head = struct.pack("<QQ", len(entries), PAGE)
    body = b"".join(struct.pack("<QQQ", s, e, off // PAGE) for s, e, off, _ in entries)
    return head + body + b"".join(p.encode() + b"\0" for *_, p in entries)


@dataclass
class Segment:
    vaddr: int
    size: int
    data: bytes = b""  # dumped bytes (p_filesz = len(data)); the rest is not in the core
    flags: int = 6  # PF_R | PF_W
    path: str | None = None
    file_offset: int = 0


@dataclass
class Core:
    pid: int = 4242
    threads: list[int] = field(default_factory=lambda: [4242, 4243])
    segments: list[Segment] = field(default_factory=list)
    auxv: dict[int, int] = field(default_factory=dict)
    metadata: dict | None = None
    extra_notes: list[bytes] = field(default_factory=list)

    def build(self) -> bytes:
        notes = [note("CORE", 1, prstatus(self.threads[0]))]
        notes.append(note("CORE", 3, prpsinfo(self.pid, 1, 1000, "python3", "python3 app.py")))
        aux = b"".join(struct.pack("<QQ", k, v) for k, v in self.auxv.items()) + bytes(16)
        notes.append(note("CORE", 6, aux))
        files = [
            (s.vaddr, s.vaddr + s.size, s.file_offset, s.path) for s in self.segments if s.path
        ]
        notes.append(note("CORE", 0x46494C45, nt_file(files)))
        for tid in self.threads[1:]:
            notes.append(note("CORE", 1, prstatus(tid)))
        notes += self.extra_notes
        if self.metadata is not None:
            notes.append(note("GENCORE", 0x47430001, json.dumps(self.metadata).encode()))
        blob = b"".join(notes)
        segs = sorted(self.segments, key=lambda s: s.vaddr)
        phnum = 1 + len(segs)
        notes_off = 64 + 56 * phnum
        off = (notes_off + len(blob) + PAGE - 1) // PAGE * PAGE
        ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
        ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
        phdrs = struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(blob), 0, 4)
        data = b""
        for s in segs:
            phdrs += struct.pack(
                "<IIQQQQQQ", 1, s.flags, off + len(data), s.vaddr, 0, len(s.data), s.size, PAGE
            )
            data += s.data
        head = ehdr + phdrs + blob
        return head + bytes(off - len(head)) + data


def tiny_elf_image(build_id: bytes) -> bytes:
    """The first page of an ELF shared object with one PT_NOTE holding a GNU build-id."""
    gnu = note("GNU", 3, build_id)
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 120, 120, 120, len(gnu), len(gnu), 4)
    img = ehdr + phdr + gnu
    return img + bytes(PAGE - len(img))
