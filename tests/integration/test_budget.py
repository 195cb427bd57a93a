"""The directory's budget holds at every instant, and triggers never wait on the network.

A sampler looks at the directory every 100 ms while a process writes a storm of cores: the
completed files (gencore's names, not the hidden .partial ones) never exceed max_total, the
newest core is always kept, and with the store down every core is still published within
seconds of its signal.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, run
from test_upload import S3

from gencore._common import GENCORE_FILE

pytestmark = pytest.mark.once  # the budget is the same C and Python on every interpreter

TRIGGERED = str(PROGRAMS / "triggered.py")
MIB = 1 << 20


class Sampler:
    """Every 100 ms: the bytes on disk of gencore's completed files in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples: list[tuple[int, list[str]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            total, names = 0, []
            for p in self.directory.iterdir():
                if GENCORE_FILE.match(p.name):
                    try:
                        total += p.stat().st_blocks * 512
                        names.append(p.name)
                    except FileNotFoundError:
                        pass  # removed while we looked
            self.samples.append((total, sorted(names)))
            time.sleep(0.1)

    def finish(self) -> list[tuple[int, list[str]]]:
        self.stop.set()
        self.thread.join()
        return self.samples


def storm(tmp_path: Path, env: dict | None = None, **args) -> tuple[dict, list]:
    d = tmp_path / "cores"
    d.mkdir()
    sampler = Sampler(d)
    try:
        r = run(
            [sys.executable, TRIGGERED, "storm", json.dumps({"dir": str(d), **args})],
            timeout=600,
            env=env or {},
        )
    finally:
        samples = sampler.finish()
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), samples


@pytest.mark.slow
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_max_total_holds_at_every_sample(tmp_path, compress):
    doc, samples = storm(
        tmp_path,
        count=6,
        interval=1.5,
        ballast=48,
        options={"max_total": "120M", "compress": compress},
    )
    events = doc["events"]
    made = [line.split()[1] for line in events.splitlines() if line.startswith("done ")]
    assert len(made) == 6, events
    over = [s for s in samples if s[0] > 120 * MIB]
    assert not over, over[:3]
    assert max(s[0] for s in samples) > 60 * MIB  # the files were there, and big
    assert "removed core_" in events, events  # room was made...
    assert made[-1] in samples[-1][1]  # ...and the newest core kept


@pytest.mark.slow
def test_an_unreachable_store_delays_no_core(tmp_path):
    """Six signals 3 s apart with the store down: six cores, each published within 5 s."""
    s3 = S3()  # never started: connections are refused
    doc, _ = storm(
        tmp_path,
        env=s3.env,
        count=6,
        interval=3,
        ballast=16,
        options={"upload": "s3://cores/down/"},
    )
    events = doc["events"]
    assert events.count("done ") == 6, events
    assert all(dt < 5 for dt in doc["published_after"]), doc["published_after"]
    assert "upload-error" in events  # the helpers tried, beside the cores


@pytest.mark.slow
def test_the_budget_holds_while_the_store_is_down(tmp_path):
    """Server stopped, six ~100 MiB cores one second apart, max_total=250M: never over at
    any sample; once the server is back, gencore upload --pending sends what is left."""
    s3 = S3()
    s3.start()
    s3.stop()
    doc, samples = storm(
        tmp_path,
        env=s3.env,
        count=6,
        interval=1,
        ballast=96,
        options={"upload": "s3://cores/down/", "max_total": "250M"},
    )
    events = doc["events"]
    assert events.count("done ") == 6, events
    over = [s for s in samples if s[0] > 250 * MIB]
    assert not over, over[:3]
    assert "removed-unuploaded core_" in events, events  # said so when it had to
    left = sorted(p.name for p in (tmp_path / "cores").iterdir() if GENCORE_FILE.match(p.name))
    assert left
    s3.start()
    try:
        r = run(
            [
                sys.executable,
                "-m",
                "gencore",
                "upload",
                "--pending",
                str(tmp_path / "cores"),
                "s3://cores/down/",
            ],
            env=s3.env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        uploaded = {Path(u).name for u in r.stdout.split()}
        assert uploaded == set(left), (uploaded, left)
    finally:
        s3.stop()
