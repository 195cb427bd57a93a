"""The fleet's page: every core under a prefix, grouped by cause, newest group first.

Groups come from the manifests alone (:func:`gencore.ship.fleet.group_cores`); each group
links to the incident page of its newest core, written next to the fleet's page (one core
downloaded per group, none with ``fetch_reports=False``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..._common import format_size
from ...errors import GencoreError
from .page import document

if TYPE_CHECKING:
    from ...ship.fleet import CoreGroup

__all__ = ["fleet_html", "list_source", "write_fleet"]

BUCKETS = 48


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "?"


def list_source(source: str) -> list[dict[str, Any]]:
    """The manifests under ``source`` (a URL, or a local directory: its uploaded-style
    manifests, else a manifest made on the spot for each gencore file in it)."""
    from ..._common import GENCORE_FILE
    from ...ship.upload import list_cores, manifest_of

    local = None if "://" in source else Path(source)
    docs = list_cores(f"file://{local.resolve()}" if local else source)
    if local is not None and not docs:
        for p in sorted(local.iterdir()):
            if GENCORE_FILE.match(p.name):
                docs.append(manifest_of(p, {"object": str(p)}))
        docs.sort(key=lambda d: d.get("time") or 0, reverse=True)
    return docs


def _timeline(groups: Sequence[CoreGroup], g: CoreGroup) -> str:
    """Cores of ``g`` over the whole listing's time span, as a small histogram."""
    lo = min(x.first for x in groups)
    hi = max(x.last for x in groups)
    span = max(hi - lo, 1.0)
    counts = [0] * BUCKETS
    for d in g.cores:
        t = d.get("time") or d.get("uploaded") or lo
        counts[min(int((float(t) - lo) / span * BUCKETS), BUCKETS - 1)] += 1
    top = max(counts) or 1
    bars = "".join(
        f'<rect x="{i * 5}" y="{20 - 20 * c / top:.1f}" width="4" height="{20 * c / top:.1f}"/>'
        for i, c in enumerate(counts)
        if c
    )
    return (
        f'<svg class="timeline" viewBox="0 0 {BUCKETS * 5} 20" width="{BUCKETS * 5}" height="20" '
        f'role="img" aria-label="cores over time"><title>{_stamp(lo)} .. {_stamp(hi)}</title>'
        f'<line x1="0" x2="{BUCKETS * 5}" y1="19.5" y2="19.5"/>{bars}</svg>'
    )


def _frames(g: CoreGroup) -> str:
    if not g.frames:
        return '<p class="na">no Python frames in these cores\' manifests: grouped by reason</p>'
    items = "".join(
        f'<li><code class="fn">{_e(f.get("function"))}</code> '
        f'<span class="loc">{_e(f.get("file"))}:{_e(f.get("line"))}</span></li>'
        for f in g.frames
    )
    return f'<ol class="stack">{items}</ol>'


def fleet_html(
    source: str,
    groups: Sequence[CoreGroup],
    links: Optional[dict[str, str]] = None,
    errors: Optional[dict[str, str]] = None,
) -> str:
    """The fleet's page: ``links`` maps a group's key to its report's (relative) address,
    ``errors`` to why its report could not be made."""
    links, errors = links or {}, errors or {}
    total = sum(g.count for g in groups)
    rows = []
    for g in groups:
        rep = g.representative
        link = links.get(g.key)
        report = (
            f'<a href="{_e(link)}">report of the newest core</a>'
            if link
            else f'<span class="na">{_e(errors.get(g.key, "report not made (--no-fetch)"))}</span>'
        )
        hosts = ", ".join(g.hosts[:5]) + (
            f" and {len(g.hosts) - 5} more" if len(g.hosts) > 5 else ""
        )
        rows.append(
            f'<details class="group" open id="g-{g.key}"><summary><span class="count">'
            f"{g.count} core{'s' * (g.count != 1)}</span> · {_e(g.cause)}"
            + (f' · <code class="fn">{_e(g.frames[0].get("function"))}</code>' if g.frames else "")
            + f"</summary><table class=facts><tr><th>First</th><td>{_stamp(g.first)}</td></tr>"
            f"<tr><th>Last</th><td>{_stamp(g.last)}</td></tr>"
            f"<tr><th>Hosts</th><td>{_e(hosts)} ({len(g.hosts)})</td></tr>"
            f"<tr><th>Over time</th><td>{_timeline(groups, g)}</td></tr>"
            f"<tr><th>Newest</th><td>{_e(rep.get('object'))} "
            f"({format_size(int(rep.get('size') or 0))})</td></tr>"
            f"<tr><th>Report</th><td>{report}</td></tr></table>{_frames(g)}</details>"
        )
    summary = "".join(
        f'<tr><td class="n">{g.count}</td><td><a href="#g-{g.key}">{_e(g.cause)}</a></td>'
        f"<td><code>{_e(g.frames[0].get('function')) if g.frames else '?'}</code></td>"
        f"<td>{_stamp(g.last)}</td><td class=n>{len(g.hosts)}</td></tr>"
        for g in groups
    )
    table = (
        "<table class=data><thead><tr><th>cores</th><th>cause</th><th>innermost frame</th>"
        f"<th>last</th><th>hosts</th></tr></thead><tbody>{summary}</tbody></table>"
        if groups
        else ""
    )
    body = (
        f'<main><header><p class="kicker">gencore fleet report</p>'
        f"<h1>{total} core{'s' * (total != 1)}, {len(groups)} distinct "
        f"cause{'s' * (len(groups) != 1)}</h1><p class=note>under {_e(source)}, grouped by "
        "reason and the triggering thread's innermost Python frames, newest first</p></header>"
        + table
        + ("".join(rows) or '<p class="na">no gencore cores under this prefix</p>')
        + "</main>"
    )
    return document(f"gencore: {len(groups)} causes under {source}", body)


def _representative(doc: dict[str, Any], dest: Path, tmp: str) -> None:
    """Write the incident page of the core a manifest describes."""
    from ...ship.upload import fetch
    from ..core import open_core
    from . import report_html

    obj = str(doc.get("object"))
    local = obj[len("file://") :] if obj.startswith("file://") else obj
    path = str(fetch(obj, Path(tmp))) if "://" in local else local
    try:
        with open_core(path) as core:
            dest.write_text(report_html(core), encoding="utf-8")
    finally:
        if path != local:
            Path(path).unlink(missing_ok=True)


def write_fleet(
    source: str,
    out: Path,
    *,
    fetch_reports: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> list[CoreGroup]:
    """Write the fleet's page of ``source`` to ``out`` and, unless ``fetch_reports`` is
    false, the newest core's report of each group into ``<out stem>.reports/``. Returns the
    groups."""
    from ...ship.fleet import group_cores

    groups = group_cores(list_source(source))
    links: dict[str, str] = {}
    errors: dict[str, str] = {}
    if fetch_reports and groups:
        folder = out.parent / f"{out.stem}.reports"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="gencore-fleet-") as tmp:
            for g in groups:
                dest = folder / f"{g.key}.html"
                try:
                    _representative(g.representative, dest, tmp)
                    links[g.key] = f"{folder.name}/{dest.name}"
                except (GencoreError, OSError) as e:
                    errors[g.key] = f"no report: {e}"
                    log(f"{g.representative.get('object')}: no report: {e}")
    out.write_text(fleet_html(source, groups, links, errors), encoding="utf-8")
    return groups
