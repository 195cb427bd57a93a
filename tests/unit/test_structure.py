"""The shape the package keeps: no import cycles (lazy imports included), short functions,
C files of one job each. A new maintainer relies on these to change one thing in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import gencore

PKG = Path(gencore.__file__).parent
MAX_FUNCTION_LINES = 100
MAX_C_LINES = 700


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of the package that ``name`` imports, anywhere in its body."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod in known:
                out.add(mod)
            for a in node.names:
                if f"{mod}.{a.name}" in known:
                    out.add(f"{mod}.{a.name}")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    # importing a.b.c runs a and a.b first: package __init__ files count as edges only when
    # they import something themselves, which the walk above sees
    out.discard(name)
    return out


def test_no_import_cycles() -> None:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) - {"gencore"} for m, p in mods.items()}
    state: dict[str, int] = {}
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of a function that hold code: its docstring, blank lines and comments left out."""
    body = getattr(node, "body", [])
    first = body[0] if body else None
    skip: set[int] = set()
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        skip = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    n = 0
    for i in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        text = source[i - 1].strip()
        if i in skip or not text or text.startswith("#"):
            continue
        n += 1
    return n


def test_functions_are_short() -> None:
    long = []
    for p in PKG.rglob("*.py"):
        source = p.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, source)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(PKG)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "functions over 100 lines of code:\n" + "\n".join(long)


def _native_sources() -> Path:
    """The C sources: $GENCORE_NATIVE_SOURCES (the unit tier's copy; an installed package
    carries none), else the tree these tests sit in."""
    env = os.environ.get("GENCORE_NATIVE_SOURCES")
    native = Path(env) if env else Path(__file__).parents[2] / "src" / "gencore" / "_native"
    assert list(native.glob("*.c")), f"no C sources in {native}: set GENCORE_NATIVE_SOURCES"
    return native


def test_c_files_have_one_job() -> None:
    native = _native_sources()
    big = [
        f"{p.name}: {n} lines"
        for p in sorted(native.glob("*.c"))
        if (n := len(p.read_text().splitlines())) > MAX_C_LINES
    ]
    assert not big, "C files over ~700 lines:\n" + "\n".join(big)
