"""Every argument of install() and create_core() is checked before anything is installed or
forked: a bad value is a ValueError that names the argument, and nothing is left behind."""

from __future__ import annotations

import math
import signal

import pytest

import gencore
from gencore.capture import engine
from gencore.capture.options import CoreOptions, TriggerConfig

needs_engine = pytest.mark.skipif(not engine.available(), reason="the engine exists on Linux")

NAN, INF = math.nan, math.inf

# (argument, bad values): negative, NaN, infinite, out of range, wrong type
BAD_INSTALL_ARGS = [
    ("max_cores", [-1, 1.5, NAN, 1 << 32, "3", True]),
    ("min_interval", [-1, NAN, INF, 1e12, "1"]),
    ("min_free", [-1, NAN, INF, 1 << 63, "-5M", "lots"]),
    ("crash_timeout", [-1, 0, NAN, INF, None]),
    ("freeze_timeout", [-0.5, NAN, INF]),
    ("timeout", [-1, 0, NAN, INF]),
    ("hang_timeout", [-1, NAN, INF]),
    ("heartbeat_timeout", [-1, NAN, INF]),
    ("rss_limit", [-1, NAN, INF, "150%", "0%", "-3G"]),
    ("rss_interval", [-1, NAN, INF]),
    ("max_total", [-1, NAN, INF, 1 << 63]),
    ("keep_free", [-1, NAN, INF, "-1G"]),
    ("max_size", [-1, 0, NAN, INF, "0"]),
    ("filter", [-1, 0x200, 1.5, True]),
]


@needs_engine
@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, values in BAD_INSTALL_ARGS for v in values]
)
def test_install_rejects_bad_numbers_naming_them(name, value, tmp_path):
    with pytest.raises(ValueError, match=name):
        gencore.install(directory=tmp_path, **{name: value})
    assert gencore.installed() is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, 0, -3, 4096, "USR2", 1.0])
def test_trigger_signals_are_checked(sig, tmp_path):
    with pytest.raises(ValueError, match="signal"):
        TriggerConfig.build((sig,), tmp_path)


def test_a_trigger_config_holds_the_core_options_it_was_given(tmp_path):
    c = TriggerConfig.build(
        (signal.SIGUSR1,),
        tmp_path,
        freeze_signal=signal.SIGRTMIN + 2,
        freeze_timeout=0.5,
        timeout=30,
        filter=0x33,
        compress=None,
        max_size="64M",
        min_free="1G",
        max_cores=0,
        crash_timeout=5,
    )
    assert c.core.freeze_signal == signal.SIGRTMIN + 2
    assert (c.core.freeze_timeout, c.core.timeout, c.core.filter) == (0.5, 30, 0x33)
    assert c.max_size == c.core.max_size == 64 << 20
    assert (c.min_free, c.max_cores, c.crash_timeout) == (1 << 30, 0, 5.0)
    # an exception core is taken with these very options
    opts = c.core.replace(reason="exception", python_stacks=True)
    assert (opts.freeze_signal, opts.freeze_timeout, opts.timeout) == (
        signal.SIGRTMIN + 2,
        0.5,
        30,
    )


def test_unknown_install_arguments_are_type_errors(tmp_path):
    with pytest.raises(TypeError, match="nonsense"):
        TriggerConfig.build((), tmp_path, nonsense=1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", -1),
        ("timeout", NAN),
        ("freeze_timeout", NAN),
        ("freeze_timeout", -1),
        ("filter", 0x400),
        ("max_size", -5),
        ("compress", "gzip"),
        ("method", "other"),
        ("upload", "bucket/prefix"),
        ("name", "a/b"),
    ],
)
def test_create_core_options_are_checked_before_forking(name, value):
    with pytest.raises(ValueError, match=name if name != "upload" else "URL"):
        CoreOptions.build(None, {name: value})  # type: ignore[misc]
