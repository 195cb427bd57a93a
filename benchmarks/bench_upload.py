"""Uploading a core to an S3-compatible server on 127.0.0.1 (moto's server mode).

    python benchmarks/bench_upload.py [--rss-mib 512] [--repeat 3]

A worker process fills --rss-mib of memory, writes a core with create_core(), then uploads
it with the helper process (``python -m gencore.ship.helper finish --upload``, what upload= and
the triggers run) and then, as a reference, the same file with boto3's ``upload_file`` from
a plain process. Reports MB/s and the CPU time the application's own interpreter spent while
its core was uploaded (the work happens in the helper, so this stays near zero).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process only, not its children


def worker(args: argparse.Namespace) -> None:
    import gencore
    from gencore.capture.options import CoreOptions
    from gencore.ship.client import upload

    ballast = bytearray(os.urandom(1 << 20) * args.rss_mib)
    d = Path(args.dir)
    core = gencore.create_core(d, python_stacks=False)
    size = core.stat().st_size
    opts = CoreOptions(d, upload=args.url, keep_local=True)
    t0, c0 = time.monotonic(), cpu()
    upload(core, opts)
    took, app_cpu = time.monotonic() - t0, cpu() - c0
    del ballast
    print(json.dumps({"size": size, "seconds": took, "app_cpu": app_cpu, "path": str(core)}))


def plain_boto3(path: Path, key: str) -> float:
    code = (
        "import boto3, sys, time; c = boto3.client('s3'); t = time.monotonic(); "
        f"c.upload_file(sys.argv[1], 'bench', {key!r}); print(time.monotonic() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--rss-mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--url")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    ours, plain = [], []
    try:
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", "--rss-mib", str(args.rss_mib)]
                    + ["--dir", d, "--url", f"s3://bench/run{i}/"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                ours.append(json.loads(out))
                # the same core file, uploaded by boto3 from a plain process
                plain.append(plain_boto3(Path(ours[-1]["path"]), f"plain{i}"))
    finally:
        server.stop()
    size = ours[0]["size"]
    result = {
        "size_mib": size / 2**20,
        "gencore_s": statistics.median(r["seconds"] for r in ours),
        "app_cpu_ms": 1000 * statistics.median(r["app_cpu"] for r in ours),
        "boto3_s": statistics.median(plain),
    }
    result["gencore_mb_s"] = size / 1e6 / result["gencore_s"]
    result["boto3_mb_s"] = size / 1e6 / result["boto3_s"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "upload.json").write_text(json.dumps(result, indent=1))
    print("| method | core MiB | time s | MB/s | app CPU ms |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| gencore (helper process, fsspec/s3fs) | {result['size_mib']:.0f} | "
        f"{result['gencore_s']:.2f} | {result['gencore_mb_s']:.0f} | {result['app_cpu_ms']:.0f} |"
    )
    print(
        f"| boto3 upload_file (reference) | {result['size_mib']:.0f} | {result['boto3_s']:.2f} | "
        f"{result['boto3_mb_s']:.0f} | - |"
    )


if __name__ == "__main__":
    main()
