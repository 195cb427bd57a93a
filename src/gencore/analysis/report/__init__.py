"""``gencore report``: one self-contained HTML page per incident, and a fleet's view.

The page is gathered from an opened core through the same API the commands use
(:func:`gather`: metadata, capture report, Python stacks, heap census and what derives from it)
and rendered with inline CSS, script and SVG (:func:`render`), so it opens offline from a
ticket attachment::

    from gencore import open_core
    from gencore.analysis.report import report_html

    with open_core("core_20250101.120000.1234.001.core") as core:
        html = report_html(core, since="core_20250101.115000.1234.001.core")

:mod:`.fleet` renders the view of many uploaded cores grouped by cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .gather import Report, Section, ThreadView, gather
from .page import render
from .trigger import Frame, Trigger, trigger_of

if TYPE_CHECKING:
    from ..core import CoreFile

__all__ = [
    "Frame",
    "Report",
    "Section",
    "ThreadView",
    "Trigger",
    "gather",
    "render",
    "report_html",
    "trigger_of",
]


def report_html(
    core: CoreFile,
    *,
    since: Optional[str] = None,
    with_source: bool = True,
    native: bool = False,
) -> str:
    """The incident page of an opened core as one HTML document (see :func:`gather` for
    ``since``, ``with_source`` and ``native``)."""
    return render(gather(core, since=since, with_source=with_source, native=native))
