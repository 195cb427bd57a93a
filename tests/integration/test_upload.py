"""Cores leave the host: uploads through fsspec to a real S3-compatible server (moto's server
mode on 127.0.0.1), to file:// and memory://, and the local disk budget."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore
from gencore.ship import upload as _upload

# Uploads, manifests and the budget are the same Python on every interpreter.
pytestmark = pytest.mark.once

TRIGGERED = str(PROGRAMS / "triggered.py")
HOST = socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """A moto S3 server on 127.0.0.1 with one bucket, and the environment that reaches it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_MAX_ATTEMPTS": "1",  # an unreachable server fails fast (gencore retries)
        }
        self.server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="cores")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def fs(self):
        return fsspec.filesystem(
            "s3",
            key="testing",
            secret="testing",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            skip_instance_cache=True,
        )


@pytest.fixture
def s3():
    server = S3()
    server.start()
    yield server
    server.stop()


def wait_for(cond, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def start_stuck(tmp_path: Path, env: dict, *opts: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "gencore", "run", "-d", str(tmp_path), *opts, "--"]
        + [TRIGGERED, "stuck"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert json.loads(p.stdout.readline())["ready"] == p.pid
    return p


def test_a_signal_core_goes_to_s3_and_opens_in_pystack(tmp_path, s3):
    p = start_stuck(tmp_path, s3.env, "--collect", "--upload", "s3://cores/prod/")
    try:
        r = run([sys.executable, "-m", "gencore", "trigger", str(p.pid), "--wait"])
        assert r.returncode == 0, r.stderr
        core_name = Path(r.stdout.split()[0]).name
        assert r.stdout.split()[-1].startswith("s3://cores/prod/")  # the uploaded bundle
        bundle_name = core_name[: -len(".core")] + ".tar.gz"
        key = f"cores/prod/{HOST}/{bundle_name}"
        fs = s3.fs()
        assert wait_for(lambda: fs.exists(key + ".json")), fs.find("cores")
        # the upload removed the local bundle and the loose core it carries
        assert wait_for(lambda: not list(tmp_path.glob("core_*"))), list(tmp_path.iterdir())
        manifest = json.loads(fs.cat_file(key + ".json"))
        assert manifest["pid"] == p.pid and manifest["reason"] == "signal"
        assert manifest["size"] == fs.info(key)["size"] and manifest["host"] == HOST
        assert manifest["build_ids"] and manifest["object"] == f"s3://{key}"
        # the object, fetched by `gencore debug`, opens in pystack with every thread
        r = run(
            [sys.executable, "-m", "gencore", "debug", "--tool", "pystack", f"s3://{key}"],
            env=s3.env,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.count("Traceback for thread") >= 5 and "stuck_in_c" in r.stdout
        ls = run([sys.executable, "-m", "gencore", "ls", "s3://cores/prod/", "--json"], env=s3.env)
        (listed,) = json.loads(ls.stdout)
        assert listed["object"] == f"s3://{key}" and listed["pid"] == p.pid
    finally:
        p.kill()
        p.wait()


def test_an_unreachable_store_keeps_the_core_until_upload_pending(tmp_path, s3):
    s3.stop()  # the store is down when the core is written
    p = start_stuck(tmp_path, s3.env, "--upload", "s3://cores/later/")
    try:
        events = Path(gencore.capture.delivery.find_state(p.pid)["events"])
        r = run([sys.executable, "-m", "gencore", "trigger", str(p.pid), "--wait"])
        # the core is written; gencore trigger reports the failed upload
        assert r.returncode == 1 and "the upload failed" in r.stderr, r.stdout + r.stderr
        core = Path(r.stdout.split()[0])
        assert wait_for(lambda: "finished " in events.read_text(), 120), events.read_text()
        text = events.read_text()
        assert f"upload-error {core.name} " in text and "gencore upload --pending" in text
        assert core.exists()  # nothing lost
    finally:
        p.kill()
        p.wait()
    s3.start()  # back again: the pending core goes up
    r = run(
        [
            sys.executable,
            "-m",
            "gencore",
            "upload",
            "--pending",
            str(tmp_path),
            "s3://cores/later/",
        ],
        env=s3.env,
    )
    assert r.returncode == 0, r.stderr
    key = f"cores/later/{HOST}/{core.name}"
    assert r.stdout.split() == [f"s3://{key}"]
    assert not core.exists() and s3.fs().info(key)["size"] > 0
    fs = s3.fs()
    local = tmp_path / "fetched.core"
    fs.get_file(key, str(local))
    out = run([tool("pystack"), "core", str(local), real_python()]).stdout
    assert out.count("Traceback for thread") >= 5, out[-2000:]


def test_the_directory_stays_within_max_total(tmp_path):
    r = run([sys.executable, TRIGGERED, "budget", json.dumps({"dir": str(tmp_path)})], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    seen = doc["seen"]
    made = [line.split()[1] for line in doc["events"].splitlines() if line.startswith("done ")]
    assert len(seen) == 5 and len(made) == 5, doc["events"]
    for core, step in zip(made, seen):
        assert step["total"] <= 250 << 20, step  # after each core
        assert core in step["names"], step  # the newest core is never removed
    assert doc["events"].count("removed core_") >= 2, doc["events"]


def test_file_and_memory_urls_never_overwrite(tmp_path):
    (tmp_path / "c").mkdir()
    core = gencore.create_core(tmp_path / "c", python_stacks=False)
    store = tmp_path / "store"
    copy = tmp_path / "copy.core"
    copy.write_bytes(core.read_bytes())
    r = run(
        [sys.executable, "-m", "gencore", "upload", "--keep-local", str(core), f"file://{store}"]
    )
    assert r.returncode == 0, r.stderr
    obj = store / HOST / core.name
    assert obj.read_bytes() == copy.read_bytes() and core.exists()
    manifest = json.loads((store / HOST / (core.name + ".json")).read_text())
    assert manifest["reason"] == "api" and manifest["pid"] == os.getpid()
    # the same name again: refused, the local file stays
    r = run([sys.executable, "-m", "gencore", "upload", str(core), f"file://{store}"])
    assert r.returncode == 1 and "exists already" in r.stderr and core.exists()
    ls = run([sys.executable, "-m", "gencore", "ls", f"file://{store}"])
    assert core.name in ls.stdout and "api" in ls.stdout
    # memory:// in this process, through the same code the helper runs
    url = _upload.upload_file(core, "memory://bucket/x/")
    assert url.startswith("memory://") and not core.exists()
    assert url.endswith(f"bucket/x/{HOST}/{core.name}") and fsspec.open(url).fs.exists(url)
    (doc,) = _upload.list_cores("memory://bucket/x/")
    assert doc["object"] == url and doc["size"] == copy.stat().st_size


def test_bad_upload_and_budget_arguments(tmp_path):
    for kwargs, name in [
        ({"upload": "not a url"}, "upload"),
        ({"max_total": "lots"}, "max_total"),
        ({"keep_free": -1}, "keep_free"),
    ]:
        with pytest.raises(ValueError, match=name):
            gencore.install(directory=tmp_path, **kwargs)


@pytest.mark.slow
def test_create_core_and_collect_core_upload(tmp_path, s3):
    import asyncio

    os.environ.update(s3.env)  # the helper process inherits the store's settings
    try:
        (tmp_path / "a").mkdir()
        core = gencore.create_core(tmp_path / "a", upload="s3://cores/api/", python_stacks=False)
        assert core.url == f"s3://cores/api/{HOST}/{core.name}" and not core.exists()
        assert s3.fs().info(core.url)["size"] > 0
        bundle = asyncio.run(
            gencore.collect_core_async(tmp_path / "a", upload="s3://cores/api/", keep_local=True)
        )
        assert bundle.url.endswith(bundle.name) and bundle.exists()
        manifest = json.loads(s3.fs().cat_file(bundle.url + ".json"))
        assert manifest["reason"] == "api" and manifest["build_ids"]
        s3.stop()  # unreachable: the core is kept and the error says where
        with pytest.raises(gencore.UploadError, match="not uploaded") as e:
            gencore.create_core(tmp_path / "a", upload="s3://cores/api/", python_stacks=False)
        assert e.value.path is not None and e.value.path.exists()
        assert "gencore upload --pending" in str(e.value)
    finally:
        for k in s3.env:
            os.environ.pop(k, None)
