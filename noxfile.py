"""Sessions of the test suite (run through ./scripts/test).

- ``unit``: the fast tier (tests/unit) as an unprivileged user, no debuggers: seconds.
- ``tests``: the whole suite on every CPython 3.9-3.13 found here (pyenv or PATH), each in a
  fresh venv with pystack, py-spy and the other oracles' Python parts; then on 3.14 and 3.15
  in a Debian sid root (``scripts/sid-root``, built once and cached under /var/cache/gencore)
  unless they are on this machine already.
- ``wheels``: the sdist and the x86_64 and aarch64 engine wheels, checked and installed.
- ``aarch64``: the engine on an emulated arm64 Debian machine (``scripts/aarch64-vm test``).
- ``lint``: ruff on everything, mypy --strict on the package.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import nox

VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
SID_VERSIONS = ["3.14", "3.15"]  # from Debian sid when this machine has no such interpreter
# The reader fuzzing is pure Python, the same on every interpreter: its full 10,000 cases run
# on one, a fifth of them on the others (GENCORE_FUZZ_CASES set by hand wins).
FULL_FUZZ_VERSION = "3.13"
SHORT_FUZZ_CASES = "2000"
# Tests marked `once` do not depend on the interpreter's layout (uploads, the reader's
# fuzzing, framework integrations, the HTML report): one host and one sid interpreter run them.
ONCE_VERSIONS = ("3.13", "3.14")
# Tests marked `browser` drive this machine's Chromium and Firefox (the HTML report): the host's
# 3.13 runs them, with the `browser` extra (Playwright, Pillow).
BROWSER_VERSION = "3.13"
nox.options.sessions = ["unit", "tests", "wheels", "aarch64", "lint"]
nox.options.reuse_existing_virtualenvs = False


def _interpreter(version: str) -> str | None:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(
        glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
    )
    return found[-1] if found else shutil.which(f"python{version}")


PYTHONS = [v for v in VERSIONS if _interpreter(v)]
SYSTEM_PYTHON = "/usr/bin/python3"


def _venv(session: nox.Session, exe: str, where: str, extra: str) -> str:
    session.run(exe, "-m", "venv", "--clear", where, external=True)
    py = os.path.join(where, "bin", "python")
    session.run(py, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
    session.run(py, "-m", "pip", "install", "-q", f".[{extra}]", external=True)
    return py


@nox.session(python=False)
def unit(session: nox.Session) -> None:
    """tests/unit as user nobody (when run as root), with no debugger on PATH.

    The system interpreter is used as root: nobody cannot enter root's pyenv directory.
    """
    as_nobody = os.geteuid() == 0 and os.path.exists(SYSTEM_PYTHON)
    exe = SYSTEM_PYTHON if as_nobody else (_interpreter(PYTHONS[-1]) if PYTHONS else None)
    if exe is None:
        session.error("no CPython 3.9-3.13 interpreter found")
    base = tempfile.mkdtemp(prefix="gencore-unit-")
    os.chmod(base, 0o755)
    try:
        py = _venv(session, exe, os.path.join(base, "venv"), "unit")
        shutil.copytree("tests/unit", os.path.join(base, "unit"))
        # the C sources too: an installed package has none, and the structure test counts
        # their lines
        shutil.copytree("src/gencore/_native", os.path.join(base, "native"))
        env = {"PATH": os.path.join(base, "venv", "bin") + ":/usr/bin:/bin", "HOME": base}
        env["GENCORE_NATIVE_SOURCES"] = os.path.join(base, "native")
        cmd_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(base, "unit")]
        cmd = [py, *cmd_args]
        if as_nobody:  # from the copy's directory: nobody may not enter the clone's
            cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
            cmd += ["env", f"--chdir={base}", py, *cmd_args]
        session.run(*cmd, *session.posargs, external=True, env=env)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Build, install and test gencore on each interpreter, with pystack and py-spy."""
    if not PYTHONS:
        session.error("no CPython 3.9-3.13 interpreter found")
    every = VERSIONS + SID_VERSIONS
    only = session.posargs[:1] if session.posargs and session.posargs[0] in every else []
    extra = session.posargs[1:] if only else session.posargs
    failed = []
    for version in only or PYTHONS + SID_VERSIONS:
        try:
            _test_one(session, version, extra)
        except nox.command.CommandFailed:
            failed.append(version)  # the other interpreters still run: the full picture
    if failed:
        session.error(f"the suite failed on Python {', '.join(failed)}")


def _fuzz_env(version: str) -> dict[str, str]:
    if "GENCORE_FUZZ_CASES" in os.environ or version == FULL_FUZZ_VERSION:
        return {}
    return {"GENCORE_FUZZ_CASES": SHORT_FUZZ_CASES}


def _marks(version: str, extra: list[str]) -> list[str]:
    if any(a == "-m" or a.startswith("-m") for a in extra):
        return []
    skip = [] if version in ONCE_VERSIONS else ["once"]
    skip += [] if version == BROWSER_VERSION else ["browser"]
    return ["-m", " and ".join(f"not {m}" for m in skip)] if skip else []


def _test_one(session: nox.Session, version: str, extra: list[str]) -> None:
    extra = [*_marks(version, extra), *extra]
    exe = _interpreter(version)
    if exe is None and version in SID_VERSIONS:
        session.log(f"=== Python {version}: in the Debian sid root")
        session.run(
            "scripts/sid-root", "test", version, *extra, external=True, env=_fuzz_env(version)
        )
        return
    if exe is None:
        session.error(f"no Python {version} here")
    session.log(f"=== Python {version}: {exe}")
    venv = os.path.join(session.create_tmp(), f"venv-{version}")
    py = _venv(session, exe, venv, "test,browser" if version == BROWSER_VERSION else "test")
    # each interpreter's temporary files (cores) go when its run ends: CI disks are small
    tmp = tempfile.mkdtemp(prefix=f"gencore-tests-{version}-", dir=session.create_tmp())
    env = {"PATH": os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"], "TMPDIR": tmp}
    env.update(_fuzz_env(version))
    try:
        _pytest(session, py, extra, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pytest(session: nox.Session, py: str, args: list[str], env: dict[str, str]) -> None:
    session.run(py, "-m", "pytest", "-p", "no:cacheprovider", *args, external=True, env=env)


@nox.session(python=False)
def wheels(session: nox.Session) -> None:
    """Build the sdist and wheels (scripts/build-wheels), then install each wheel with no
    compiler reachable on 3.9-3.13 and, in the sid root, 3.14 and 3.15 (tests/wheels)."""
    session.run("scripts/build-wheels", external=True)
    session.run("scripts/sid-root", "ensure", external=True)
    venv = os.path.join(session.create_tmp(), "venv-wheels")
    exe = _interpreter(PYTHONS[-1]) if PYTHONS else None
    if exe is None:
        session.error("no CPython 3.9-3.13 interpreter found")
    session.run(exe, "-m", "venv", "--clear", venv, external=True)
    py = os.path.join(venv, "bin", "python")
    session.run(py, "-m", "pip", "install", "-q", "pytest", external=True)
    env = {
        "GENCORE_WHEEL_TESTS": "1",
        "GENCORE_DIST": os.path.abspath("dist"),
        "GENCORE_AUDITWHEEL": os.path.abspath(".nox/build/bin/auditwheel"),
    }
    _pytest(session, py, ["tests/wheels", *session.posargs], env)


@nox.session(python=False)
def aarch64(session: nox.Session) -> None:
    """The engine on arm64: ``scripts/aarch64-vm test`` boots an emulated arm64 Debian machine
    (qemu TCG, built once and cached), installs the cross-built aarch64 wheel there with no
    compiler and runs the oracle, failure, kernel-method and API tests with gdb, eu-stack,
    pystack and py-spy inside. Arguments go to pytest in the VM."""
    session.run("scripts/aarch64-vm", "test", *session.posargs, external=True)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff on the package, tests and benchmarks; mypy --strict on the package."""
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", external=True)
    session.run("mypy", "--strict", "--ignore-missing-imports", "src/gencore", external=True)
