"""The incident page: one HTML document with its CSS, script and SVG inline.

Content is rendered here, so the page reads the same with scripts off, in print and in the
DOM; the script (``report.js``) only zooms the icicle, filters threads and opens folded parts
for printing. Nothing is loaded from the network (the page's Content-Security-Policy forbids
it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from ..._common import VERSION, format_size
from .charts import Bar, bar_chart, diff_chart, empty, icicle, merge_stacks
from .gather import Report, Section, ThreadView
from .trigger import Frame

__all__ = ["asset", "document", "fold", "render"]

TOP_TYPES = 20
TABLE_TYPES = 100
OPEN_GROUPS = 8
STACK_HEAD, STACK_TAIL = 40, 15
"""Of a stack longer than this (repeats folded), the innermost and outermost frames shown."""
"""Thread groups shown unfolded; the rest open on a click (all of them when printing)."""

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)


def asset(name: str) -> str:
    """The text of one of the page's assets (``report.css``, ``report.js``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def document(title: str, body: str) -> str:
    """A complete, self-contained HTML page."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="gencore {VERSION}">'
        f"<title>{_e(title)}</title><style>{asset('report.css')}</style></head>"
        f"<body>{body}<script>{asset('report.js')}</script></body></html>\n"
    )


def _rows(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)


def _header(r: Report) -> str:
    warn = "".join(f'<li class="warn">{_e(w)}</li>' for w in r.warnings)
    exc = r.trigger.detail.get("exception")
    tb = ""
    if isinstance(exc, dict) and exc.get("text"):
        tb = f'<details open class="tb"><summary>Traceback</summary><pre>{_e(exc["text"])}</pre>'
        tb += "</details>"
    return (
        f'<header><p class="kicker">gencore incident report</p><h1>{_e(r.summary)}</h1>'
        f'<div class="cols"><table class="facts">{_rows(r.facts)}</table>'
        f'<table class="facts capture"><caption>Capture</caption>{_rows(r.capture)}</table>'
        f"</div>{f'<ul class=warnings>{warn}</ul>' if warn else ''}{tb}</header>"
    )


def fold(threads: Sequence[ThreadView]) -> list[list[ThreadView]]:
    """Threads grouped by identical stacks: the triggering thread's group first, then the
    largest groups, each group in the core's thread order."""
    groups: dict[tuple[Any, ...], list[ThreadView]] = {}
    for t in threads:
        groups.setdefault(t.key(), []).append(t)
    return sorted(
        groups.values(),
        key=lambda g: (not any(t.triggering for t in g), not g[0].python, -len(g)),
    )


def _frame_li(f: Frame, source: str, repeat: int = 1) -> str:
    src = f'<pre class="src">{_e(source)}</pre>' if source else ""
    times = f' <span class="rep">× {repeat}</span>' if repeat > 1 else ""
    return (
        f'<li><code class="fn">{_e(f.function)}</code> '
        f'<span class="loc">{_e(f.file)}:{f.line}</span>{times}{src}</li>'
    )


def _stack(v: ThreadView) -> str:
    """A stack as a list, innermost first: a frame repeated in a row (recursion) is one item
    with its count; of very deep stacks, the innermost and outermost frames."""
    runs: list[tuple[int, Frame, int]] = []  # (index of the first, frame, repeats)
    for i, f in enumerate(v.frames):
        if runs and runs[-1][1] == f:
            runs[-1] = (runs[-1][0], f, runs[-1][2] + 1)
        else:
            runs.append((i, f, 1))
    cut = len(runs) > STACK_HEAD + STACK_TAIL
    shown = runs[:STACK_HEAD] + runs[-STACK_TAIL:] if cut else runs
    items = []
    for k, (i, f, n) in enumerate(shown):
        if cut and k == STACK_HEAD:
            hidden = sum(r[2] for r in runs[STACK_HEAD:-STACK_TAIL])
            items.append(f"<li class=more>… {hidden} frames between</li>")
        items.append(_frame_li(f, v.sources.get(i, ""), n))
    if v.skipped:
        items.append(f"<li class=more>… {v.skipped} outer frames not recorded</li>")
    return f'<ol class="stack">{"".join(items)}</ol>'


def _group(g: list[ThreadView], opened: bool) -> str:
    first = g[0]
    trig = next((t for t in g if t.triggering), None)
    n = len(g)
    what = "same stack" if n > 1 else "stack"
    if not first.python:
        what = "no Python stack" if n == 1 else "no Python stack (native threads, or unknown)"
    top = first.frames[0] if first.frames else None
    where = (
        f' — <code class="fn">{_e(top.function)}</code> '
        f'<span class="loc">{_e(Path(top.file).name)}:{top.line}</span>'
        if top
        else ""
    )
    badge = '<span class="badge">triggering thread</span>' if trig else ""
    ids = ", ".join(
        f'<span class="tid{" trig" if t.triggering else ""}">{t.tid}</span>'
        + (f' <span class="tname">{_e(t.name)}</span>' if t.name else "")
        + (f' <span class="state">{_e(t.state)}</span>' if t.state in ("incomplete",) else "")
        for t in g
    )
    stack = _stack(first) if first.frames else ""
    if first.native:
        who = f" of thread {first.tid}" if n > 1 else ""
        items = "".join(f'<li><code class="nat">{_e(x)}</code></li>' for x in first.native)
        stack += (
            f'<details class="native"><summary>native frames{who}</summary>'
            f'<ol class="stack">{items}</ol></details>'
        )
    search = " ".join(
        [*(str(t.tid) for t in g), *(t.name or "" for t in g)]
        + sorted({f"{f.function} {f.file}" for f in first.frames})
    ).lower()
    return (
        f'<details class="group{" trig" if trig else ""}"{" open" if opened else ""} '
        f'data-search="{_e(search)}"><summary><span class="count">{n} '
        f"thread{'s' * (n != 1)}</span>: {what}{where} {badge}</summary>"
        f'<p class="tids">{ids}</p>{stack}</details>'
    )


def _threads(sec: Section[list[ThreadView]]) -> str:
    threads = sec.value or []
    groups = fold(threads)
    py = [t for t in threads if t.python]
    head = (
        f'<section id="threads"><h2>Threads <small>{len(threads)} threads, '
        f"{len(py)} with a Python stack, {len(groups)} distinct stacks</small></h2>"
    )
    notes = empty(sec.why) if sec.why else f'<p class="note">{_e(sec.note)}</p>'
    flame = ""
    if py:
        svg, dropped = icicle(merge_stacks([(t.frames, t.triggering) for t in py]))
        left = f" ({dropped} narrow frames not drawn)" if dropped else ""
        flame = (
            f"<h3>All threads' stacks merged <small>outermost on top; width = threads; click "
            f"to zoom, click the top bar to go back{left}</small></h3>"
            f'<div class="flame">{svg}</div>'
        )
    html = [_group(g, i < OPEN_GROUPS) for i, g in enumerate(groups)]
    # the triggering thread's stack first, then the overview, then the other stacks
    first = html.pop(0) if groups and any(t.triggering for t in groups[0]) else ""
    tools = (
        '<div class="tools"><input id="filter" type="search" '
        'placeholder="filter: function, file, thread id or name" aria-label="filter threads">'
        ' <button type="button" id="openall">open all</button>'
        ' <button type="button" id="closeall">fold all</button></div>'
    )
    return (
        f"{head}{notes}{f'<h3>Triggering thread</h3>{first}' if first else ''}{flame}"
        f"<h3>Stacks <small>innermost frame first; identical stacks folded</small></h3>{tools}"
        f'<div class="groups">{"".join(html)}</div></section>'
    )


def _heap(r: Report) -> str:
    sec = r.heap
    out = ['<section id="heap"><h2>Heap <small>Python objects by type</small></h2>']
    if sec.value is None:
        out.append(empty(f"not available for this core: {sec.why}"))
        return "".join(out) + "</section>"
    c = sec.value
    share = (
        f" ({100 * c.bytes / c.anon_bytes:.0f}% of the anonymous memory)" if c.anon_bytes else ""
    )
    out.append(
        f'<p class="note">{c.objects:,} objects ({c.tracked:,} tracked by the collector), '
        f"{format_size(c.bytes)}{share}, Python {_e(c.python)}"
        + (
            f"; {c.unreadable:,} references pointed outside the core, skipped"
            if c.unreadable
            else ""
        )
        + "</p>"
    )
    top = c.types[:TOP_TYPES]
    out.append("<h3>Largest types <small>bytes as sys.getsizeof counts them</small></h3>")
    out.append(
        bar_chart(
            [Bar(t.type, t.bytes, f"{format_size(t.bytes)}, {t.count:,} objects") for t in top]
        )
    )
    rows = "".join(
        f'<tr><td class="n">{i + 1}</td><td><code>{_e(t.type)}</code></td>'
        f'<td class="n">{t.count:,}</td><td class="n">{format_size(t.bytes)}</td></tr>'
        for i, t in enumerate(c.types[:TABLE_TYPES])
    )
    more = len(c.types) - TABLE_TYPES
    out.append(
        f'<details class="table"><summary>Table of the {min(len(c.types), TABLE_TYPES)} largest '
        f"types{f' (of {len(c.types)})' if more > 0 else ''}</summary><table class=data>"
        f"<thead><tr><th>#</th><th>type</th><th>objects</th><th>bytes</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )
    return "".join(out) + "</section>"


def _diff(r: Report) -> str:
    sec = r.diff
    out = ['<section id="diff"><h2>Heap growth <small>against an earlier core</small></h2>']
    if sec.value is None:
        out.append(empty(f"not available: {sec.why}"))
        return "".join(out) + "</section>"
    out.append(f'<p class="note">{_e(sec.note)}</p>')
    diffs = sec.value
    if not diffs:
        out.append(empty("no type changed between the two cores", "note"))
        return "".join(out) + "</section>"
    top = sorted(diffs, key=lambda d: -abs(d.bytes))[:TOP_TYPES]
    out.append(diff_chart([(d.type, d.bytes, d.count) for d in top]))
    rows = "".join(
        f"<tr><td><code>{_e(d.type)}</code>{'' if d.status == 'changed' else f' ({d.status})'}"
        f'</td><td class="n">{d.count:+,}</td><td class="n">'
        f"{'+' if d.bytes >= 0 else '-'}{format_size(abs(d.bytes))}</td>"
        f'<td class="n">{d.old_count:,} → {d.old_count + d.count:,}</td></tr>'
        for d in diffs[:TABLE_TYPES]
    )
    out.append(
        '<details class="table"><summary>Table of the changes</summary><table class=data>'
        "<thead><tr><th>type</th><th>objects</th><th>bytes</th><th>count</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )
    return "".join(out) + "</section>"


def _nav(r: Report) -> str:
    links = [("threads", "Threads"), ("tasks", "Tasks"), ("heap", "Heap")]
    links += [("retained", "Retained"), ("suspects", "Suspects"), ("diff", "Growth")]
    return (
        '<nav aria-label="sections">'
        + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links)
        + "</nav>"
    )


def render(r: Report) -> str:
    """The incident page of ``r`` as one HTML document."""
    from .sections import retained, suspects, tasks

    body = (
        _nav(r)
        + "<main>"
        + _header(r)
        + _threads(r.threads)
        + tasks(r.tasks)
        + _heap(r)
        + retained(r.retained)
        + suspects(r.suspects)
        + _diff(r)
        + "</main>"
        + f"<footer>gencore {VERSION} · generated "
        + _e(time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(r.generated)))
        + f" from {_e(r.source)}</footer>"
    )
    return document(r.title, body)
