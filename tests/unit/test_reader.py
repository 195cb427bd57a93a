"""open_core on synthetic cores: notes, threads, mappings, memory, damage."""

from __future__ import annotations

import struct

import pytest
from coregen import PAGE, Core, Segment, note, tiny_elf_image

import gencore
from gencore import MemoryUnavailableError


def write(tmp_path, core: Core, name: str = "x.core"):
    p = tmp_path / name
    p.write_bytes(core.build())
    return p


def sample() -> Core:
    heap = bytes(range(256)) * (2 * PAGE // 256)
    return Core(
        segments=[
            Segment(0x10000, 2 * PAGE, heap),
            Segment(0x20000, 4 * PAGE, b""),  # listed, nothing dumped
            Segment(0x30000, PAGE, tiny_elf_image(b"\x12\x34" * 10), 5, "/usr/lib/libdemo.so"),
        ],
        auxv={3: 0x400040, 5: 13},
        metadata={"format": 1, "reason": "api", "stacks": [{"name": "MainThread", "frames": []}]},
    )


def test_threads_process_and_metadata(tmp_path):
    with gencore.open_core(write(tmp_path, sample())) as core:
        assert [t.tid for t in core.threads] == [4242, 4243]
        assert core.threads[0].pc == 0x401000 and core.threads[0].sp == 0x7FFF0000
        assert (core.pid, core.ppid, core.uid) == (4242, 1, 1000)
        assert core.executable_name == "python3" and core.command == "python3 app.py"
        assert core.auxv == {3: 0x400040, 5: 13}
        assert core.metadata["reason"] == "api"
        assert [s["name"] for s in core.python_stacks] == ["MainThread"]


def test_mappings_carry_nt_file_paths(tmp_path):
    with gencore.open_core(write(tmp_path, sample())) as core:
        assert [(m.start, m.size, m.filesz) for m in core.mappings] == [
            (0x10000, 2 * PAGE, 2 * PAGE),
            (0x20000, 4 * PAGE, 0),
            (0x30000, PAGE, PAGE),
        ]
        assert core.mappings[2].path == "/usr/lib/libdemo.so"
        assert core.mappings[2].flags == "r-x" and core.mappings[0].flags == "rw-"
        assert core.mapping_at(0x20010) is core.mappings[1]
        assert core.mapping_at(0x50000) is None


def test_memory_reads_byte_for_byte_and_refuses_what_is_absent(tmp_path):
    with gencore.open_core(write(tmp_path, sample())) as core:
        assert core.read(0x10000 + 300, 4) == bytes([44, 45, 46, 47])
        assert core.read(0x10000 + PAGE - 2, 4) == bytes([254, 255, 0, 1])  # across pages
        with pytest.raises(MemoryUnavailableError, match="not dumped"):
            core.read(0x20000, 8)
        with pytest.raises(MemoryUnavailableError, match="not mapped"):
            core.read(0x90000, 8)


def test_build_id_and_strings_from_memory(tmp_path):
    c = sample()
    c.segments[0] = Segment(0x10000, PAGE, b"hello\0world" + bytes(PAGE - 11))
    with gencore.open_core(write(tmp_path, c)) as core:
        assert core.build_id_at(0x30000) == "1234" * 10
        assert core.build_id_at(0x10000) is None  # not an ELF image
        assert core.c_string(0x10000) == "hello" and core.c_string(0x10006) == "world"


def test_truncated_core_is_a_format_error(tmp_path):
    data = sample().build()
    p = tmp_path / "cut.core"
    p.write_bytes(data[: len(data) - PAGE])
    with gencore.open_core(p) as core, pytest.raises(gencore.CoreFormatError, match="truncated"):
        core.read(0x30000, 16)
    p.write_bytes(data[:100])
    with pytest.raises(gencore.CoreFormatError):
        gencore.open_core(p)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "not a readable ELF core"),
        (b"not an elf at all" * 10, "not a readable ELF core"),
        (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<H", 2) + bytes(100), "not a core"),
    ],
)
def test_not_a_core(tmp_path, blob, message):
    p = tmp_path / "bad"
    p.write_bytes(blob)
    with pytest.raises(gencore.CoreFormatError, match=message):
        gencore.open_core(p)


def test_a_note_running_past_its_segment(tmp_path):
    c = sample()
    c.extra_notes.append(struct.pack("<III", 5, 1 << 20, 1) + b"CORE\0\0\0\0")
    with pytest.raises(gencore.CoreFormatError, match="runs past"):
        gencore.open_core(write(tmp_path, c))


def test_gencore_note_must_be_a_json_object(tmp_path):
    c = sample()
    c.metadata = None
    c.extra_notes.append(note("GENCORE", 0x47430001, b"[1, 2]"))
    with pytest.raises(gencore.CoreFormatError, match="JSON object"):
        gencore.open_core(write(tmp_path, c))


def test_missing_file(tmp_path):
    with pytest.raises(gencore.CoreFormatError, match="cannot open"):
        gencore.open_core(tmp_path / "nope.core")
