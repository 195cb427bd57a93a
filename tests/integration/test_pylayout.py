"""The per-version tables the offline reader falls back to, checked against the running
interpreter itself: the offsets it reports through its own objects (the GENCORE note's
checks), its `_Py_DebugOffsets` (3.13+), live asyncio tasks and futures, and the line numbers
CPython gives each instruction."""

from __future__ import annotations

import asyncio
import ctypes
import dis
import gc
import struct
import sys
import types

import pytest

from gencore.analysis.memory import Unreadable
from gencore.analysis.pylayout import _DEBUG_KEYS, TABLES, debug_offsets
from gencore.analysis.pyobjects import _location_line
from gencore.capture import caplayout

TABLE = TABLES[sys.version_info[:2]]


class Live:
    """This process's memory, by ctypes (addresses the test knows are valid)."""

    def raw(self, addr: int, n: int) -> bytes:
        if not addr:
            raise Unreadable
        return ctypes.string_at(addr, n)

    def u64(self, addr: int) -> int:
        return int(struct.unpack("<Q", self.raw(addr, 8))[0])

    def u32(self, addr: int) -> int:
        return int(struct.unpack("<I", self.raw(addr, 4))[0])

    def readable(self, addr: int, n: int = 8) -> bool:
        return bool(addr)


def test_table_matches_the_offsets_the_process_checks_in_itself():
    note = caplayout.note_layout()
    assert "offsets" in note, note
    for key, value in note["offsets"].items():
        assert TABLE[key] == value, key


@pytest.mark.skipif(sys.version_info < (3, 13), reason="_Py_DebugOffsets exist from 3.13")
def test_table_matches_the_interpreters_debug_offsets():
    runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    dbg = debug_offsets(Live(), runtime)
    assert dbg is not None and dbg["top.version"] == sys.hexversion
    compared = 0
    for name, key in _DEBUG_KEYS.items():
        if name in dbg and key in TABLE:
            assert TABLE[key] == dbg[name], (name, key)
            compared += 1
    assert compared >= 35


def _offsets_of(obj: object, target: object, size: int) -> list[int]:
    words = struct.unpack(f"<{size // 8}Q", ctypes.string_at(id(obj), size // 8 * 8))
    return [8 * i for i, w in enumerate(words) if w == id(target)]


def test_table_matches_live_tasks_and_futures():
    """Each field the reader follows, found in a live C task and future by its value."""
    Future, Task = asyncio.futures._CFuture, asyncio.tasks._CTask
    loop = asyncio.new_event_loop()
    try:
        size = Task.__basicsize__

        def first(f):
            pass

        f = Future(loop=loop)
        f.add_done_callback(first)
        f.add_done_callback(print)
        assert TABLE["fut.loop"] in _offsets_of(f, loop, size)
        assert TABLE["fut.callback0"] in _offsets_of(f, first, size)
        lists = [o for o in gc.get_referents(f) if type(o) is list]
        assert any(TABLE["fut.callbacks"] in _offsets_of(f, lst, size) for lst in lists)
        value, error = object(), ValueError("x")
        done, failed, cancelled = Future(loop=loop), Future(loop=loop), Future(loop=loop)
        done.set_result(value)
        failed.set_exception(error)
        cancelled.cancel()
        assert TABLE["fut.result"] in _offsets_of(done, value, size)
        assert TABLE["fut.exception"] in _offsets_of(failed, error, size)
        state = TABLE["fut.state"]
        states = [ctypes.c_int32.from_address(id(x) + state).value for x in (f, cancelled, done)]
        assert states == [0, 1, 2]
        failed.exception()
        waited = Future(loop=loop)

        async def waiter():
            await waited

        coro = waiter()
        task = Task(coro, loop=loop, name="probe")
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert task._fut_waiter is waited
        assert TABLE["task.fut_waiter"] in _offsets_of(task, waited, size)
        assert TABLE["task.coro"] in _offsets_of(task, coro, size)
        assert TABLE["task.name"] in _offsets_of(task, task.get_name(), size)
        wakeup = waited._callbacks[0][0]
        assert TABLE["wakeup.task"] in _offsets_of(wakeup, task, 64)
        waited.set_result(None)
        loop.run_until_complete(task)
    finally:
        loop.close()


def _codes(module: types.ModuleType) -> list[types.CodeType]:
    out, todo = [], [v.__code__ for v in vars(module).values() if hasattr(v, "__code__")]
    while todo:
        code = todo.pop()
        out.append(code)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the location table exists from 3.11")
def test_location_table_lines_match_cpython():
    """Every instruction's line, as the reader decodes co_linetable, against co_positions()."""
    checked = 0
    for code in _codes(asyncio.tasks) + _codes(dis):
        for unit, (line, *_) in enumerate(code.co_positions()):
            if line is None:
                continue
            assert _location_line(code.co_linetable, unit, code.co_firstlineno) == line
            checked += 1
    assert checked > 1000
