"""Run the test suite on every CPython 3.9-3.13 found on this machine (pyenv or PATH)."""

from __future__ import annotations

import glob
import os
import shutil

import nox

VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = False


def _interpreter(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(
        glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
    )
    return found[-1] if found else shutil.which(f"python{version}")


PYTHONS = [v for v in VERSIONS if _interpreter(v)]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Build, install and test gencore on each interpreter, with pystack and py-spy."""
    if not PYTHONS:
        session.error("no CPython 3.9-3.13 interpreter found")
    only = session.posargs[:1] if session.posargs and session.posargs[0] in VERSIONS else []
    extra = session.posargs[1:] if only else session.posargs
    for version in only or PYTHONS:
        exe = _interpreter(version)
        venv = os.path.join(session.create_tmp(), f"venv-{version}")
        session.log(f"=== Python {version}: {exe}")
        session.run(exe, "-m", "venv", "--clear", venv, external=True)
        py = os.path.join(venv, "bin", "python")
        session.run(py, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
        session.run(py, "-m", "pip", "install", "-q", ".[test]", external=True)
        session.run(
            py,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *extra,
            external=True,
            env={"PATH": os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"]},
        )


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff on the package, tests and benchmarks; mypy on the package."""
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", external=True)
    session.run("mypy", "--ignore-missing-imports", "src/gencore", external=True)
