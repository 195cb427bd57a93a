"""Pure parts of the integrations: the start hook's choice of processes, margins, the
deadline's name in the note, chained-signal validation."""

from __future__ import annotations

import json
import signal

import pytest

from gencore.capture import autoarm
from gencore.capture.options import TriggerConfig, chain_signal_numbers
from gencore.capture.watch import _name_text
from gencore.integrations import deadline_before


def argv(text: str) -> list[bytes]:
    return [a.encode() for a in text.split("\0")]


@pytest.mark.parametrize(
    ("cmd", "children", "armed"),
    [
        ("python\0-c\0from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"
         "\0--multiprocessing-fork", False, True),
        ("python\0-c\0from multiprocessing.forkserver import main; main(3, 4, ['__main__'])",
         False, True),
        ("python\0-c\0from multiprocessing.resource_tracker import main;main(6)", False, True),
        ("python\0-c\0import sys; from multiprocessing.forkserver import main; main(18)\0a.py",
         False, True),
        ("python\0app.py\0from multiprocessing.x", False, False),
        ("python\0worker.py", False, False),
        ("python\0worker.py", True, True),
        ("python\0-m\0gencore.ship.helper\0finish", True, False),
        ("python\0-m\0gencore.capture.zpipe", True, False),
        ("python\0/venv/bin/gencore\0trigger\0123", True, False),
        ("python\0-m\0gencore\0trigger", True, False),
    ],
)  # fmt: skip
def test_the_start_hook_arms_multiprocessing_children_and_asked_subprocesses(cmd, children, armed):
    assert autoarm.wanted({"children": children}, argv(cmd)) is armed


def test_the_environment_round_trips():
    doc = json.loads(autoarm.environment({"signals": [12], "directory": "/d"}, True))
    assert doc == {"install": {"signals": [12], "directory": "/d"}, "children": True}


@pytest.mark.parametrize(
    ("limit", "deadline"), [(10, 8.0), (3, 2.0), (1, 0.5), (300, 270.0), (1000, 970.0)]
)
def test_deadlines_come_a_margin_before_the_limit(limit, deadline):
    assert deadline_before(limit) == deadline


def test_deadline_names_are_json_text_within_the_cap():
    assert _name_text('a"b\\c', 200) == b'a\\"b\\\\c'
    long = _name_text("é" * 500, 200)
    assert len(long) <= 200 and json.loads(b'"' + long + b'"').endswith("...")


def test_chained_signals_are_checked():
    assert chain_signal_numbers(signal.SIGABRT, ()) == (signal.SIGABRT,)
    for bad, why in (
        (signal.SIGSEGV, "cannot be chained"),
        (signal.SIGKILL, "cannot be chained"),
        ("ABRT", "signal numbers"),
        (signal.SIGUSR2, "both a trigger signal"),
    ):
        with pytest.raises(ValueError, match=why):
            chain_signal_numbers(bad, (signal.SIGUSR2,))


def test_a_chained_sigabrt_is_not_also_a_crash_signal(tmp_path):
    cfg = TriggerConfig.build((), tmp_path, on_crash=True, chain_signals=(signal.SIGABRT,))
    fields = cfg.record({}, 0)
    assert signal.SIGABRT in fields["chain_signals"] and fields["nchain"] == 1
    assert signal.SIGABRT not in fields["crash_signals"] and fields["ncrash"] == 4
