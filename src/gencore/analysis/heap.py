"""What uses the memory of a core's Python heap, and why it is kept (``gencore heap``).

The census counts and sizes every object by type (:func:`census`). From it, :class:`Census`
answers the questions of a leak hunt: what would be freed if an object went (its **retained**
bytes, from the dominator tree over the object graph, :meth:`Census.retained`), how an object
is held (the shortest **path** from a root, :meth:`Census.path_to`), which objects or groups
retain most of the heap (**leak suspects**, :meth:`Census.suspects`), and which ``str`` and
``bytes`` values are held more than once (:meth:`Census.duplicates`).

The walk needs no interpreter attached and no debug symbols: the GENCORE note records where
the collector's lists start and how objects of each kind are laid out, found and checked inside
the process (:mod:`gencore.capture.heaplayout`). The work runs in C inside the extension
(:mod:`gencore.analysis.heapnative`), or in Python where the extension is absent
(:mod:`gencore.analysis.heapwalk`, :mod:`gencore.analysis.heapgraph`); both give the same
answers. The roots, and which interpreter is walked, come from the offline object model
(:mod:`gencore.analysis.heaproots`).
"""

from __future__ import annotations

from typing import Optional

from ..errors import HeapUnavailableError
from . import heapresults
from .heappath import HeapPath, PathStep
from .heapquery import make_census
from .heapresults import Census as Census
from .heapresults import Duplicate as Duplicate
from .heapresults import HeapObject as HeapObject
from .heapresults import Referrers as Referrers
from .heapresults import Retained as Retained
from .heapresults import RetainedObject as RetainedObject
from .heapresults import RetainedType as RetainedType
from .heapresults import Suspect as Suspect
from .heapresults import TypeDiff as TypeDiff
from .heapresults import TypeStat as TypeStat
from .heaproots import CoreFile

__all__ = [
    *heapresults.__all__,
    "HeapPath",
    "HeapUnavailableError",
    "PathStep",
    "census",
    "referrers",
]


def census(
    core: CoreFile,
    largest: int = 0,
    show_values: bool = False,
    interpreter: Optional[int] = None,
    engine: Optional[str] = None,
) -> Census:
    """Count and size every object in ``core``'s heap, by type.

    ``largest`` also keeps the N biggest single objects; ``show_values`` adds a short value
    (for ``str``, ``bytes`` and ``float``) to them: off by default, a core's values may be
    private. ``interpreter`` censuses another interpreter of the process (by id; the default
    is the one that took the core); ``engine`` insists on the ``native`` or ``pure`` walker
    (the default: native where the extension is built, ``GENCORE_HEAP_ENGINE=pure``
    overrides).

    Raises:
        HeapUnavailableError: the core has no heap layout (kernel cores, old versions,
            free-threaded or debug interpreters), or no such interpreter.
        CoreFormatError: the core's GC lists are damaged.
    """
    return make_census(core, largest, show_values, interpreter, engine)


def referrers(core: CoreFile, type_name: str) -> Referrers:
    """Which types hold references to objects of ``type_name``, with counts."""
    return census(core).referrers(type_name)
