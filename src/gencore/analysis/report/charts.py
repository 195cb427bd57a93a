"""Inline SVG for the incident page: the merged icicle of every thread's stack, bar charts and
a squarified treemap. Pure functions from numbers to markup; no scripts needed to read them
(the page's script only adds zooming)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Optional

from ..._common import format_size
from .trigger import Frame

__all__ = ["Bar", "Icicle", "bar_chart", "diff_chart", "icicle", "squarify", "treemap"]

WIDTH = 1200
ROW = 18
MAX_NODES = 2500
"""Icicle rectangles drawn at most: the narrowest go first (a page stays small and fast with
thousands of threads of different stacks)."""


def _hue(key: str) -> int:
    """A stable colour per module/file: the same file has the same colour on every page."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % 50 + 5


def _a(text: object) -> str:
    return escape(str(text), quote=True)


@dataclass
class Icicle:
    """One node of the merged stacks: a function called through the same chain of callers
    in ``count`` threads."""

    function: str
    file: str
    count: int = 0
    trig: bool = False
    children: dict[tuple[str, str], Icicle] = field(default_factory=dict)


def merge_stacks(stacks: Sequence[tuple[Sequence[Frame], bool]]) -> Icicle:
    """The tree of ``stacks`` (each innermost frame first, with whether it is the triggering
    thread's), merged from the outermost frame down by function and file."""
    root = Icicle("all threads", "", 0)
    for frames, trig in stacks:
        node = root
        node.count += 1
        node.trig |= trig
        for f in reversed(frames):
            key = (f.function, f.file)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Icicle(f.function, f.file)
            child.count += 1
            child.trig |= trig
            node = child
    return root


def _layout(root: Icicle) -> tuple[list[tuple[Icicle, float, int]], int]:
    """``(node, start fraction, depth)`` of the widest MAX_NODES nodes, and how many were left
    out; children ordered widest first."""
    total = max(root.count, 1)
    out: list[tuple[Icicle, float, int]] = []
    level = [(root, 0.0)]
    depth = 0
    dropped = 0
    min_count = 0
    # the widest nodes fit: find the count below which nodes are not drawn
    counts = sorted(_counts(root), reverse=True)
    if len(counts) > MAX_NODES:
        min_count = counts[MAX_NODES - 1] + 1
    while level:
        nxt = []
        for node, x in level:
            out.append((node, x, depth))
            cx = x
            for child in sorted(node.children.values(), key=lambda c: (-c.count, c.function)):
                if child.count < min_count:
                    dropped += _size(child)
                else:
                    nxt.append((child, cx))
                cx += child.count / total
        level = nxt
        depth += 1
    return out, dropped


def _counts(node: Icicle) -> list[int]:
    out, todo = [], [node]
    while todo:
        n = todo.pop()
        out.append(n.count)
        todo.extend(n.children.values())
    return out


def _size(node: Icicle) -> int:
    return len(_counts(node))


def icicle(root: Icicle) -> tuple[str, int]:
    """The SVG of a merged-stacks tree (root on top) and how many small nodes it left out.

    Each node is a ``<g>`` with its start and width as fractions (``data-x``, ``data-w``) for
    the page's zoom, a ``<title>`` naming the function, file and thread count."""
    nodes, dropped = _layout(root)
    depth = max((d for _, _, d in nodes), default=0) + 1
    total = max(root.count, 1)
    height = depth * ROW
    parts = [
        f'<svg class="icicle" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="merged stacks of {root.count} threads" '
        'preserveAspectRatio="xMinYMin meet">'
    ]
    for node, x, d in nodes:
        w = node.count / total
        px, pw = x * WIDTH, max(w * WIDTH - 1, 0.5)
        hue = _hue(node.file or node.function)
        cls = ' class="trig"' if node.trig else ""
        label = node.function if d else f"all threads ({root.count})"
        chars = int(pw / 7)
        text = label if len(label) <= chars else (label[: chars - 1] + "…" if chars > 3 else "")
        where = f" — {node.file}" if node.file else ""
        parts.append(
            f'<g data-x="{x:.6f}" data-w="{w:.6f}" data-d="{d}"{cls}>'
            f"<title>{_a(label)}{_a(where)}: {node.count} thread{'s' * (node.count != 1)}"
            f"</title>"
            f'<rect x="{px:.1f}" y="{d * ROW}" width="{pw:.1f}" height="{ROW - 1}" '
            f'fill="hsl({hue},85%,{62 if d else 80}%)"/>'
            f'<text x="{px + 3:.1f}" y="{d * ROW + 13}">{_a(text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts), dropped


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value (bytes) and the text after it."""

    label: str
    value: float
    text: str


def bar_chart(bars: Sequence[Bar], css: str = "bars") -> str:
    """Horizontal bars, longest first as given; labels left, values right."""
    if not bars:
        return ""
    top = max((b.value for b in bars), default=0) or 1
    label_w, bar_w, row = 360, 560, 20
    h = row * len(bars)
    out = [
        f'<svg class="{css}" viewBox="0 0 {label_w + bar_w + 260} {h}" width="100%" '
        f'role="img" style="max-height:{h * 1.2:.0f}px">'
    ]
    for i, b in enumerate(bars):
        y = i * row
        w = max(b.value / top * bar_w, 1)
        label = b.label if len(b.label) <= 50 else b.label[:49] + "…"
        out.append(
            f"<g><title>{_a(b.label)}: {_a(b.text)}</title>"
            f'<text class="l" x="{label_w - 6}" y="{y + 14}">{_a(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 14}">{_a(b.text)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def diff_chart(items: Sequence[tuple[str, int, int]]) -> str:
    """Diverging bars of ``(type, bytes change, count change)``: growth right, shrinkage
    left."""
    if not items:
        return ""
    top = max(abs(b) for _, b, _ in items) or 1
    label_w, half, row = 360, 280, 20
    mid = label_w + half
    h = row * len(items)
    out = [
        f'<svg class="bars diff" viewBox="0 0 {label_w + 2 * half + 200} {h}" width="100%" '
        f'role="img" style="max-height:{h * 1.2:.0f}px">'
        f'<line x1="{mid}" x2="{mid}" y1="0" y2="{h}"/>'
    ]
    for i, (name, nbytes, count) in enumerate(items):
        y = i * row
        w = max(abs(nbytes) / top * half, 1)
        x = mid if nbytes >= 0 else mid - w
        sign = "+" if nbytes >= 0 else "-"
        text = f"{sign}{format_size(abs(nbytes))}, {count:+,} objects"
        label = name if len(name) <= 50 else name[:49] + "…"
        cls = "grow" if nbytes >= 0 else "shrink"
        out.append(
            f'<g class="{cls}"><title>{_a(name)}: {_a(text)}</title>'
            f'<text class="l" x="{label_w - 6}" y="{y + 14}">{_a(label)}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"/>'
            f'<text x="{mid + half + 6}" y="{y + 14}">{_a(text)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _worst(row: Sequence[float], side: float) -> float:
    s = sum(row)
    if s <= 0 or side <= 0:
        return float("inf")
    return max(max(side * side * r / (s * s), (s * s) / (side * side * r)) for r in row if r > 0)


def squarify(
    values: Sequence[float], x: float, y: float, w: float, h: float
) -> list[tuple[float, float, float, float]]:
    """Rectangles ``(x, y, w, h)`` tiling the box with areas proportional to ``values``
    (largest first), as square as the squarified algorithm of Bruls, Huizing and van Wijk
    makes them."""
    total = sum(v for v in values if v > 0)
    if total <= 0 or w <= 0 or h <= 0:
        return [(x, y, 0.0, 0.0) for _ in values]
    scale = w * h / total
    areas = [max(v, 0) * scale for v in values]
    out: list[tuple[float, float, float, float]] = []
    i = 0
    while i < len(areas):
        side = min(w, h)
        row = [areas[i]]
        j = i + 1
        while j < len(areas) and _worst(row + [areas[j]], side) <= _worst(row, side):
            row.append(areas[j])
            j += 1
        s = sum(row)
        if w >= h:  # a column on the left
            cw = s / h if h else 0
            cy = y
            for a in row:
                rh = a / cw if cw else 0
                out.append((x, cy, cw, rh))
                cy += rh
            x, w = x + cw, w - cw
        else:  # a row on top
            rh = s / w if w else 0
            cx = x
            for a in row:
                rw = a / rh if rh else 0
                out.append((cx, y, rw, rh))
                cx += rw
            y, h = y + rh, h - rh
        i = j
    return out


def treemap(items: Sequence[tuple[str, float, str]], width: int = WIDTH, height: int = 420) -> str:
    """A treemap of ``(label, value, tooltip)``, largest first."""
    items = [it for it in items if it[1] > 0]
    if not items:
        return ""
    rects = squarify([v for _, v, _ in items], 0, 0, width, height)
    out = [
        f'<svg class="treemap" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'style="max-height:{height}px">'
    ]
    for (label, _, tip), (x, y, w, h) in zip(items, rects):
        hue = _hue(label)
        chars = int(w / 7)
        text = label if len(label) <= chars else (label[: chars - 1] + "…" if chars > 3 else "")
        out.append(
            f"<g><title>{_a(tip)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w - 1, 0):.1f}" '
            f'height="{max(h - 1, 0):.1f}" fill="hsl({hue + 180},55%,72%)"/>'
            + (f'<text x="{x + 4:.1f}" y="{y + 15:.1f}">{_a(text)}</text>' if h > 18 else "")
            + "</g>"
        )
    out.append("</svg>")
    return "".join(out)


def empty(text: str, css: Optional[str] = None) -> str:
    """A paragraph saying what a section cannot show, and why."""
    return f'<p class="{css or "na"}">{_a(text)}</p>'
