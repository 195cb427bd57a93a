"""A zoo of objects of more than 150 types, for the sizes the heap census gives them.

make() returns the objects; sizeof_known(t) says whether the census can know the size of an
instance of t: the __sizeof__ that applies (the first class in the MRO defining one) is one
whose formula gencore reads (heapcalib.sizer_types), else the census must say unknown.
"""

import array
import asyncio
import bz2
import codecs
import collections
import contextvars
import csv
import ctypes
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import heapq
import inspect
import io
import itertools
import json
import lzma
import mmap
import operator
import os
import pathlib
import pickle
import queue
import random
import re
import select
import socket
import sqlite3
import string
import struct
import sys
import threading
import time
import types
import uuid
import weakref
import xml.etree.ElementTree as ET
import zlib

KNOWN_SIZEOF = (
    object, int, str, bytearray, list, dict, set, frozenset, types.CodeType, type,
    types.FrameType, types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType,
    array.array, collections.deque, collections.OrderedDict,
)  # fmt: skip


def sizeof_owner(t: type) -> type:
    return next(b for b in t.__mro__ if "__sizeof__" in b.__dict__)


def sizeof_known(t: type) -> bool:
    """Whether the census reads this type's size (else it must report it unknown)."""
    return sizeof_owner(t) in KNOWN_SIZEOF


class Plain:
    def __init__(self):
        self.a, self.b = 1, "x"


class Slotted:
    __slots__ = ("p", "q")

    def __init__(self):
        self.p, self.q = [1], (2,)


class SubList(list):
    pass


class SubDict(dict):
    pass


class SubTuple(tuple):
    pass


class SubStr(str):
    pass


class SubInt(int):
    pass


class SubBytes(bytes):
    pass


class SubSet(set):
    pass


class SubFloat(float):
    pass


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    pass


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class DC:
    x: int = 1


class WithSizeof:
    def __sizeof__(self):
        return 12345


class Exc(Exception):
    pass


NT = collections.namedtuple("NT", "a b")


def gen():
    a, b, c = 1, 2, 3
    yield a
    yield b + c


async def coro():
    await asyncio.sleep(0)
    return 1


async def agen():
    yield 1


def _iterators(out: list) -> None:
    d, lst = {1: 2}, [1]
    out += [iter(lst), iter((1,)), iter(d), iter({1}), iter("ab"), iter(b"ab"), iter(range(3))]
    out += [reversed(lst), enumerate(lst), zip(lst, lst), map(len, []), filter(None, [])]
    out += [d.keys(), d.values(), d.items(), iter(d.items()), iter(collections.deque())]
    out += [itertools.count(), itertools.cycle(lst), itertools.repeat(1), itertools.chain(lst)]
    out += [itertools.product(lst, lst), itertools.permutations([1, 2])]
    out += [itertools.combinations([1, 2], 1), itertools.combinations_with_replacement(lst, 1)]
    out += [itertools.groupby([]), itertools.islice([], 1), itertools.accumulate([])]
    out += [itertools.starmap(len, []), itertools.tee([])[0], itertools.zip_longest([])]
    out += [itertools.takewhile(None, []), itertools.dropwhile(None, [])]
    out += [itertools.compress([], []), itertools.filterfalse(None, []), iter(bytearray())]


def _builtins(out: list) -> None:
    s = "ü" * 5
    s.encode("utf-8")
    out += [0, 1 << 100, -(1 << 70), True, 3.5, 2j, "ascii", "é" * 10, "€" * 7, "😀" * 3, s]
    out += [b"bytes", bytearray(b"abc" * 10), bytearray(100), [1, 2, 3], list(range(100))]
    out += [(1, 2), (), {"a": 1}, {i: i for i in range(100)}, dict.fromkeys(range(7))]
    out += [{1, 2}, set(range(50)), frozenset({1}), frozenset(range(30)), range(10)]
    out += [slice(1, 2, 3), memoryview(b"abc"), NotImplemented, Ellipsis, None, object()]
    out += [b"x" * 1000, "x" * 1000, tuple(range(1000)), set(range(1000)), [None] * 1000]
    out += [bytearray(b"x" * 1000), {str(i): i for i in range(1000)}, type(Ellipsis)]
    out += [SubList([1, 2]), SubDict(a=1), SubTuple((1, 2, 3)), SubStr("sub"), SubInt(5)]
    out += [SubBytes(b"xy"), SubSet({1}), SubFloat(1.5), Plain(), Slotted(), WithMeta()]
    out += [WithMeta, Plain, Slotted, Color.RED, Color, DC(), WithSizeof(), NT(1, 2)]


def _functions(out: list) -> None:
    out += [lambda: 0, make.__code__, len, [].append, Plain().__init__, property(lambda s: 1)]
    out += [staticmethod(len), classmethod(len), functools.partial(len)]
    out += [functools.lru_cache(maxsize=10)(len), operator.itemgetter(1)]
    out += [operator.attrgetter("a"), operator.methodcaller("x"), sys._getframe()]
    out += [sys.modules["json"], types.SimpleNamespace(a=1), types.MappingProxyType({})]
    out += [weakref.ref(Plain), weakref.WeakValueDictionary(), weakref.WeakSet()]
    out += [property().getter, int.__add__, str.join, object.__init__]
    out += [Plain.__dict__["__init__"], Slotted.__dict__["p"], Plain.__dict__["__dict__"]]
    out += [types.new_class("Dyn"), types.ModuleType("m"), super(Plain, Plain())]
    g = gen()
    next(g)
    g2 = gen()
    list(g2)
    c = coro()
    out += [gen(), g, g2, c, agen(), inspect.signature(make)]


def _errors(out: list) -> None:
    out += [Exc("boom"), ValueError("v"), KeyError("k"), OSError(2, "no"), StopIteration(1)]
    try:
        1 / 0  # noqa: B018 - the exception is the sample
    except ZeroDivisionError as e:
        out += [e, e.__traceback__]
    out += [BufferError("b"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")]
    out += [SyntaxError("s"), MemoryError(), SystemExit(1), KeyboardInterrupt(), GeneratorExit()]


def _stdlib(out: list) -> None:
    out += [array.array("i", range(10)), array.array("d", [1.0] * 40), array.array("b")]
    out += [collections.deque(range(100)), collections.deque(), collections.OrderedDict(a=1)]
    out += [collections.defaultdict(list), collections.Counter("abcab")]
    out += [collections.ChainMap({}), collections.UserDict(), decimal.Decimal("1.5")]
    out += [decimal.Decimal(10) ** 50, fractions.Fraction(1, 3), datetime.datetime(2020, 1, 1)]
    out += [datetime.date(2020, 1, 1), datetime.timedelta(1), datetime.timezone.utc]
    out += [datetime.time(1), io.BytesIO(b"x" * 100), io.StringIO("s" * 50)]
    out += [open(__file__, "rb"), open(__file__), open(__file__, "rb", buffering=0)]
    out += [re.compile(r"a+b"), re.match("a", "a"), struct.Struct("<iq")]
    out += [threading.Lock(), threading.RLock(), threading.Event(), threading.Condition()]
    out += [threading.local(), queue.Queue(), queue.SimpleQueue(), contextvars.ContextVar("v")]
    out += [contextvars.copy_context(), uuid.UUID(int=5), pathlib.PurePosixPath("/a")]
    out += [zlib.compressobj(), zlib.decompressobj(), hashlib.sha256(), hashlib.md5()]
    out += [random.Random(1), pickle.Pickler(io.BytesIO()), pickle.Unpickler(io.BytesIO())]
    out += [json.JSONDecoder(), json.JSONEncoder(), ET.Element("tag", a="1")]
    out += [sqlite3.connect(":memory:"), ctypes.c_int(5), (ctypes.c_char * 10)()]
    out += [codecs.getincrementaldecoder("utf-8")(), mmap.mmap(-1, 4096), socket.socket()]
    out += [select.epoll(), bz2.BZ2Compressor(), lzma.LZMACompressor(), string.Formatter()]
    loop = asyncio.new_event_loop()
    out += [loop, asyncio.Future(loop=loop), csv.reader([]), csv.writer(io.StringIO())]
    out += [heapq, decimal.getcontext(), sys.flags, sys.version_info, sys.float_info]
    out += [os.stat(__file__), time.localtime(0), collections.OrderedDict().keys()]


def make() -> list:
    """Objects of more than 150 types (with their type objects, frames, generators...)."""
    out: list = []
    for part in (_builtins, _iterators, _functions, _errors, _stdlib):
        part(out)
    return out
