"""pytest plugin: a core of the test process when a test runs too long or crashes.

Enabled with ``--gencore-dir DIR`` (or the ini option ``gencore_dir``); otherwise it does
nothing. Each test runs under a :func:`gencore.deadline`: ``--gencore-timeout S``, or by
default pytest-timeout's timeout for that test minus a margin, so that the core is written
before pytest-timeout acts. The deadline is native, so a test that holds the GIL in C gets
its core too. A crash of the test process (SIGSEGV, SIGABRT, a stack overflow) gets a core
through ``on_crash``. The report of a test whose deadline passed has a ``gencore`` section
with the core's path and the hanging thread's top Python frames, and a ``gencore_core``
user property (JUnit XML). pytest-xdist workers each write their own cores.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytest

from . import deadline_before

_KEY = "gencore-cores"
_F = TypeVar("_F", bound=Callable[..., Any])


def _hook(**options: Any) -> Callable[[_F], _F]:
    """``pytest.hookimpl`` with its type kept (mypy may run without pytest installed)."""
    mark: Callable[[_F], _F] = pytest.hookimpl(**options)
    return mark


_TOP_FRAMES = 8


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gencore", "core dumps of hanging or crashing tests (gencore)")
    group.addoption(
        "--gencore-dir",
        metavar="DIR",
        help="write a core of the test process here when a test passes its deadline or "
        "the process crashes (enables the plugin)",
    )
    group.addoption(
        "--gencore-timeout",
        type=float,
        metavar="SECONDS",
        help="a test's deadline (default: pytest-timeout's timeout minus a margin; "
        "0: crashes only)",
    )
    group.addoption(
        "--gencore-bundle",
        action="store_true",
        default=None,
        help="also pack each core with the executable and libraries (a bundle)",
    )
    parser.addini("gencore_dir", "directory for cores of hanging or crashing tests")
    parser.addini("gencore_timeout", "a test's deadline in seconds (see --gencore-timeout)")
    parser.addini("gencore_bundle", "pack each core into a bundle", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("gencore_dir") or config.getini("gencore_dir")
    if not directory:
        return
    timeout = config.getoption("gencore_timeout")
    if timeout is None and config.getini("gencore_timeout"):
        try:
            timeout = float(config.getini("gencore_timeout"))
        except ValueError:
            raise pytest.UsageError(
                f"gencore_timeout must be a number of seconds, got "
                f"{config.getini('gencore_timeout')!r}"
            ) from None
    if timeout is not None and timeout < 0:
        raise pytest.UsageError(f"--gencore-timeout must not be negative, got {timeout}")
    bundle = config.getoption("gencore_bundle")
    if bundle is None:
        bundle = bool(config.getini("gencore_bundle"))
    config.pluginmanager.register(CorePlugin(config, Path(directory), timeout, bundle), _KEY)


class CorePlugin:
    """The plugin once enabled: triggers installed for the session, a deadline per test."""

    def __init__(
        self, config: pytest.Config, directory: Path, timeout: Optional[float], bundle: bool
    ) -> None:
        import gencore

        if not gencore.supported():
            raise pytest.UsageError(
                "--gencore-dir: gencore cannot write cores on this platform (Linux on x86_64 "
                "or aarch64 with the engine built); remove the option"
            )
        self.config = config
        self.timeout = timeout
        self.directory = directory.resolve()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            gencore.install(
                signals=(),
                directory=self.directory,
                on_crash=True,
                collect=bundle,
                min_interval=0,
                max_cores=0,
            )
        except (OSError, ValueError, gencore.GencoreError) as e:
            raise pytest.UsageError(f"--gencore-dir {directory}: {e}") from None
        self.started = time.time()
        self.reported: set[str] = set()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        import gencore

        gencore.uninstall()

    def pytest_report_header(self, config: pytest.Config) -> str:
        what = "crashes" if self.timeout == 0 else "crashes and tests past their deadline"
        return f"gencore: cores of {what} to {self.directory}"

    # -- the deadline ------------------------------------------------------------------------

    def _seconds(self, item: pytest.Item) -> tuple[float, bool]:
        """The test's deadline (0: none) and whether it covers the test function only
        (pytest-timeout's func_only)."""
        settings = _timeout_settings(item)
        func_only = bool(settings and settings.func_only)
        if self.timeout is not None:
            return self.timeout, func_only
        if settings and settings.timeout:
            return deadline_before(float(settings.timeout)), func_only
        return 0.0, False

    def _arm(self, item: pytest.Item) -> Any:
        import gencore

        seconds, _ = self._seconds(item)
        if not seconds:
            return None
        # a file outside the rootdir has a nodeid without its path
        name = item.nodeid if not item.nodeid.startswith("::") else f"{item.path}{item.nodeid}"
        dl = gencore.deadline(seconds, name=name)
        item.stash[_deadline_key] = dl
        return dl

    def _around(self, item: pytest.Item, call_only: bool) -> Generator[None, Any, None]:
        """A deadline around the protocol, or around the call with pytest-timeout's
        func_only."""
        dl = self._arm(item) if self._seconds(item)[1] is call_only else None
        try:
            yield
        finally:
            if dl is not None:
                dl.cancel()

    @_hook(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, None]:
        yield from self._around(item, call_only=False)

    @_hook(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        yield from self._around(item, call_only=True)

    @_hook(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        dl = item.stash.get(_deadline_key, None)
        if dl is None or item.nodeid in self.reported or not dl.passed:
            return
        self.reported.add(item.nodeid)
        text, path = describe(dl)
        report.sections.append(("gencore", text))
        if path is not None:
            report.user_properties.append(("gencore_core", str(path)))

    # -- crashed xdist workers (in the controller) -------------------------------------------

    @_hook(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        cores = _new_crash_cores(self.directory, self.started, self.reported)
        if cores:
            self.reported.update(str(c) for c in cores)
            lines = "\n".join(f"gencore: crash core {c}" for c in cores)
            report.longrepr = f"{report.longrepr}\n{lines}"
            report.sections.append(("gencore", lines))


_deadline_key = pytest.StashKey[Any]()


def _timeout_settings(item: pytest.Item) -> Any:
    """pytest-timeout's settings for this test (timeout, method, func_only), or None."""
    plugin = item.config.pluginmanager.get_plugin("timeout")
    if plugin is None or not hasattr(plugin, "_get_item_settings"):
        return None
    try:
        return plugin._get_item_settings(item)
    except Exception:  # a private function of another plugin: never break the run
        return None


def describe(dl: Any, wait: float = 30.0) -> tuple[str, Optional[Path]]:
    """The report section of a deadline that passed: the core's path and the hanging
    thread's top Python frames (read back from the core)."""
    path = dl.core
    if path is None:
        return (
            f"the test passed its {dl.seconds:g} s deadline but no core was written (a guard "
            "skipped it: free space, or max_cores; see the gencore log)",
            None,
        )
    until = time.monotonic() + wait
    partial = path.with_name(f".{path.name}.partial")
    while not path.exists() and partial.exists() and time.monotonic() < until:
        time.sleep(0.05)
    lines = [f"core: {path} (the test passed its {dl.seconds:g} s deadline)"]
    if not path.exists():
        lines.append("the core is not complete yet (still being written)")
        return "\n".join(lines), path
    lines += top_frames(path)
    return "\n".join(lines), path


def top_frames(path: Path) -> list[str]:
    """Lines naming the top Python frames of the core's first thread (the one whose deadline
    passed), read from the core's memory; a sentence where this gencore cannot read them."""
    import gencore

    try:
        with gencore.open_core(path) as core:
            tid = core.threads[0].tid if core.threads else None
            stacks = getattr(core, "stacks", None)
            if stacks is None:
                return [f"Python frames: pystack core {path}"]
            for t in stacks():
                if t.tid == tid:
                    out = [f"thread {tid} ({t.name or '?'}), innermost frame first:"]
                    for f in t.frames[:_TOP_FRAMES]:
                        out.append(f"    {f.qualname or f.function} ({f.file}:{f.line})")
                    return out
    except Exception as e:  # the report must not fail because the core cannot be read
        return [f"Python frames could not be read from the core: {e}"]
    return [f"thread {tid}: no Python frames found in the core"]


def _new_crash_cores(directory: Path, since: float, seen: set[str]) -> list[Path]:
    """Crash cores written in ``directory`` since ``since`` and not reported yet."""
    import gencore

    out = []
    for p in sorted(directory.glob("core_*.core*")):
        if str(p) in seen or p.name.endswith(".partial") or p.stat().st_mtime < since:
            continue
        try:
            with gencore.open_core(p) as core:
                if core.metadata.get("reason") == "crash":
                    out.append(p)
        except gencore.GencoreError:
            continue
    return out
