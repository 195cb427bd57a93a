"""encrypt_to=: cores and bundles written as age files, read back with an identity.

The oracle is the ``age`` command (Debian's): it decrypts what gencore writes, and gencore
reads what it encrypts. Encryption does not depend on the interpreter's layout: these tests
run once (``once``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import py_version, real_python, run, tool

import gencore

pytestmark = pytest.mark.once

PROGRAM = """
import gencore, json, os, sys, threading
opts = json.loads(sys.argv[2])
token = "TERCES"[::-1] + "_" + os.urandom(16).hex()
ev = threading.Event()
ts = [threading.Thread(target=ev.wait, name=f"waiter-{i}") for i in range(3)]
for t in ts:
    t.start()
try:
    if opts.pop("collect", False):
        p = gencore.collect_core(sys.argv[1], **opts)
    else:
        p = gencore.create_core(sys.argv[1], **opts)
finally:
    ev.set()
print(json.dumps({"path": str(p), "token": token, "tids": [t.native_id for t in ts]}))
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("team", "other"):
        p = run([tool("age-keygen"), "-o", str(d / name)])
        assert p.returncode == 0, p.stderr
        out[name] = str(d / name)
        out[name + "_pub"] = run([tool("age-keygen"), "-y", str(d / name)]).stdout.strip()
    return out


def dump(tmp: Path, **opts) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    p = run([sys.executable, "-c", PROGRAM, str(tmp), json.dumps(opts)])
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory, keys) -> dict:
    tmp = tmp_path_factory.mktemp("encrypted")
    return dump(tmp, encrypt_to=keys["team_pub"])


def test_the_core_is_an_age_file_age_decrypts(encrypted, keys, tmp_path):
    path = Path(encrypted["path"])
    assert path.name.endswith(".core.age")
    data = path.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"\x7fELF" not in data and encrypted["token"].encode() not in data
    assert b"SECRET_" not in data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no plaintext, no partial
    plain = tmp_path / "core"
    p = run([tool("age"), "-d", "-i", keys["team"], "-o", str(plain), str(path)])
    assert p.returncode == 0, p.stderr
    assert encrypted["token"].encode() in plain.read_bytes()  # the same core, encrypted
    s = run([tool("pystack"), "core", str(plain), real_python()])
    assert s.returncode == 0, s.stdout + s.stderr
    seen = {int(t) for t in re.findall(r"^Traceback for thread (\d+)", s.stdout, re.M)}
    assert set(encrypted["tids"]) < seen and len(seen) == 4


def test_gencore_reads_it_with_an_identity(encrypted, keys):
    path = encrypted["path"]
    for how in (["--identity", keys["team"]], []):
        env = {} if how else {"GENCORE_IDENTITY": keys["team"]}
        p = run([sys.executable, "-m", "gencore", "stacks", path, *how], env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("waiter-") == 3
    with gencore.open_core(path, identity=keys["team"]) as c:
        assert len(c.threads) == 4
        tmp = c.path.parent
        assert oct(tmp.stat().st_mode & 0o777) == "0o700"
    assert not tmp.exists()  # the plaintext goes with close()


def test_a_wrong_or_missing_identity_is_exit_1_with_a_sentence(encrypted, keys):
    p = run(
        [sys.executable, "-m", "gencore", "info", encrypted["path"], "--identity", keys["other"]]
    )
    assert p.returncode == 1
    assert "encrypted to other keys than the identity given" in p.stderr, p.stderr
    p = run([sys.executable, "-m", "gencore", "heap", encrypted["path"]])
    assert p.returncode == 1 and "no identity was given" in p.stderr, p.stderr
    with pytest.raises(gencore.DecryptionError):
        gencore.open_core(encrypted["path"], identity=keys["other"])


def test_a_truncated_age_file_is_a_core_format_error(encrypted, keys, tmp_path):
    data = Path(encrypted["path"]).read_bytes()
    for cut in (40, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.core.age"
        bad.write_bytes(data[:cut])
        p = run([sys.executable, "-m", "gencore", "info", str(bad), "--identity", keys["team"]])
        assert p.returncode == 2, (cut, p.stderr)
        with pytest.raises(gencore.CoreFormatError):
            gencore.open_core(bad, identity=keys["team"])
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("gencore-core-*/cut*"))


def test_gencore_reads_what_the_age_command_encrypted(encrypted, keys, tmp_path):
    plain = tmp_path / "x.core"
    run([tool("age"), "-d", "-i", keys["team"], "-o", str(plain), encrypted["path"]])
    again = tmp_path / "x.core.age"
    p = run([tool("age"), "-r", keys["other_pub"], "-o", str(again), str(plain)])
    assert p.returncode == 0, p.stderr
    p = run([sys.executable, "-m", "gencore", "stacks", str(again), "--identity", keys["other"]])
    assert p.returncode == 0 and p.stdout.count("waiter-") == 3, p.stderr
    armored = tmp_path / "armored.core.age"
    run([tool("age"), "-a", "-r", keys["team_pub"], "-o", str(armored), str(plain)])
    with gencore.open_core(armored, identity=keys["team"]) as c:
        assert len(c.threads) == 4


def test_invalid_recipients_are_refused_before_any_fork(tmp_path, keys):
    for bad in ("age1notakey", "", " ", ["age1xyz"], 42, keys["team"]):
        with pytest.raises(ValueError, match="encrypt_to"):
            gencore.create_core(tmp_path, encrypt_to=bad)
    with pytest.raises(ValueError, match="method='native'"):
        gencore.create_core(tmp_path, encrypt_to=keys["team_pub"], method="kernel")
    assert list(tmp_path.iterdir()) == []


def test_compressed_and_encrypted(tmp_path, keys):
    r = dump(tmp_path, encrypt_to=[keys["team_pub"], keys["other_pub"]], compress="zstd")
    assert r["path"].endswith(".core.zst.age")
    dec = subprocess.run(
        f"{tool('age')} -d -i {keys['other']} {r['path']} | {tool('zstd')} -d -q -o {tmp_path}/c",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert dec.returncode == 0, dec.stderr
    assert (tmp_path / "c").read_bytes()[:4] == b"\x7fELF"
    with gencore.open_core(r["path"], identity=keys["team"]) as c:
        assert len(c.threads) == 4


def test_ssh_ed25519_recipients(tmp_path):
    key = tmp_path / "id"
    p = run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    assert p.returncode == 0, p.stderr
    r = dump(tmp_path / "cores", encrypt_to=(tmp_path / "id.pub").read_text().strip())
    out = tmp_path / "plain"
    p = run([tool("age"), "-d", "-i", str(key), "-o", str(out), r["path"]])
    assert p.returncode == 0, p.stderr
    with gencore.open_core(r["path"], identity=key) as c:
        assert len(c.threads) == 4


def test_an_encrypted_bundle(tmp_path, keys):
    r = dump(tmp_path, encrypt_to=keys["team_pub"], collect=True)
    path = Path(r["path"])
    assert path.name.endswith(".tar.gz.age") and b"\x1f\x8b" not in path.read_bytes()[:200]
    assert not list(tmp_path.glob("*.core*"))  # the loose core went into the bundle
    listing = subprocess.run(
        f"{tool('age')} -d -i {keys['team']} {path} | tar tzf -",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    stem = path.name[: -len(".tar.gz.age")]
    names = listing.stdout.split()
    assert f"{stem}/{stem}.core.age" in names and f"{stem}/manifest.json" in names
    assert any(n.endswith("/python" + py_version()) for n in names), names
    with gencore.open_core(path, identity=keys["team"]) as c:
        assert len(c.threads) == 4
        assert c.manifest["core"]["encrypted"] == "age"
    p = run(
        [sys.executable, "-m", "gencore", "debug", "--identity", keys["team"]]
        + ["--tool", "py-spy", str(path)]
    )
    assert p.returncode == 0 and p.stdout.count("waiter-") == 3, p.stdout + p.stderr


def test_uploads_ship_the_encrypted_file_and_say_so(tmp_path, keys):
    store = tmp_path / "store"
    store.mkdir()
    r = dump(tmp_path / "cores", encrypt_to=keys["team_pub"], upload=f"file://{store}")
    objs = list(store.rglob("*.core.age"))
    assert len(objs) == 1 and objs[0].read_bytes().startswith(b"age-encryption.org/v1\n")
    manifest = json.loads(objs[0].with_name(objs[0].name + ".json").read_text())
    assert manifest["encrypted"] == "age" and manifest["file"] == objs[0].name
    assert r["token"] not in objs[0].with_name(objs[0].name + ".json").read_text()


TRIGGERED = """
import os, signal, sys, time
token = "TERCES"[::-1] + "_" + os.urandom(16).hex()
os.kill(os.getpid(), signal.SIGUSR2)  # the C handler dumps; the helper thread publishes
deadline = time.monotonic() + 120
while not [n for n in os.listdir(sys.argv[1]) if n.endswith(".core.age")]:
    assert time.monotonic() < deadline, "no core"
    time.sleep(0.05)
print(token)
"""


def test_gencore_run_redacts_and_encrypts_triggered_cores(tmp_path, keys):
    script = tmp_path / "app.py"
    script.write_text(TRIGGERED)
    cores = tmp_path / "cores"
    cores.mkdir()
    cmd = [sys.executable, "-m", "gencore", "run", "--directory", str(cores), "--redact"]
    p = run([*cmd, "--encrypt-to", keys["team_pub"], "--", str(script), str(cores)])
    assert p.returncode == 0, p.stdout + p.stderr
    token = p.stdout.split()[-1]
    (core,) = cores.glob("*.core.age")
    plain = tmp_path / "plain.core"
    d = run([tool("age"), "-d", "-i", keys["team"], "-o", str(plain), str(core)])
    assert d.returncode == 0, d.stderr
    data = plain.read_bytes()
    assert data[:4] == b"\x7fELF" and token.encode() not in data
    with gencore.open_core(plain) as c:
        assert c.capture["redact"]["policy"] == "values" and c.metadata["reason"] == "signal"
    s = run([tool("pystack"), "core", str(plain), real_python()])
    assert s.returncode == 0 and "app.py" in s.stdout, s.stdout + s.stderr
