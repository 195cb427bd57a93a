"""The page's sections fed by the newer analyses: asyncio tasks, retained sizes, suspects.

Each is one API call on the core or its census; when this gencore or this core cannot give
it, the section says so in a sentence (the gathered :class:`~.gather.Section`'s ``why``)."""

from __future__ import annotations

from html import escape
from typing import Any

from .charts import empty
from .gather import Section

__all__ = ["retained", "suspects", "tasks"]


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _unavailable(anchor: str, title: str, sec: Section[Any]) -> str:
    return (
        f'<section id="{anchor}"><h2>{_e(title)}</h2>'
        f"{empty(f'not available for this core: {sec.why}')}</section>"
    )


def _items(anchor: str, title: str, sec: Section[Any], what: str) -> str:
    """A section whose items are shown by their JSON form (``to_json()``)."""
    if sec.value is None:
        return _unavailable(anchor, title, sec)
    items = sec.value if isinstance(sec.value, list) else [sec.value]
    out = [f'<section id="{anchor}"><h2>{_e(title)}</h2>']
    if not items:
        out.append(empty(f"no {what} in this core", "note"))
    for it in items[:200]:
        doc = it.to_json() if hasattr(it, "to_json") else it
        out.append(f"<pre class=item>{_e(doc)}</pre>")
    return "".join(out) + "</section>"


def tasks(sec: Section[Any]) -> str:
    """The asyncio tasks section."""
    return _items("tasks", "asyncio tasks", sec, "asyncio tasks")


def retained(sec: Section[Any]) -> str:
    """The retained sizes section."""
    return _items("retained", "Retained sizes", sec, "retained sizes")


def suspects(sec: Section[Any]) -> str:
    """The leak suspects section."""
    return _items("suspects", "Leak suspects", sec, "leak suspects")
