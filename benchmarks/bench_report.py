"""The incident page of a 1,000-thread core: its size, the time to write it, and the time
Debian's chromium needs to render it, side by side with the same browser on a page of the
same bytes that holds only text (what a browser needs for the bytes alone).

    python benchmarks/bench_report.py [--threads 1000] [--repeat 5] [--distinct]

Needs Playwright (pip install '.[browser]') and chromium at /usr/bin/chromium. Render time is
measured in the page: navigation start to the end of the load event plus one forced layout of
the whole document (``document.body.getBoundingClientRect`` after the load), at 1280x800.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path

HERE = Path(__file__).parent
INCIDENT = HERE.parent / "tests" / "programs" / "incident.py"
CHROMIUM = "/usr/bin/chromium"

RENDER_JS = """() => {
  const r = document.body.getBoundingClientRect();
  const n = performance.getEntriesByType("navigation")[0];
  return {ms: performance.now() - n.startTime, load: n.loadEventEnd - n.startTime,
          height: r.height, nodes: document.getElementsByTagName("*").length};
}"""


def render_times(page_path: Path, repeat: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(page_path.as_uri(), wait_until="load")
            out.append(page.evaluate(RENDER_JS))
            page.close()
        browser.close()
    return out


def text_page(size: int, path: Path) -> None:
    """A page of ``size`` bytes of plain paragraphs: the browser's cost for the bytes."""
    line = "<p>" + escape("thread 123456 idle_worker /srv/app/worker.py:42 " * 3) + "</p>\n"
    n = max(size // len(line), 1)
    path.write_text("<!DOCTYPE html><html><head><meta charset=utf-8></head><body>" + line * n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--distinct", action="store_true", help="every thread a stack of its own (recursion)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        d = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                str(INCIDENT),
                "many",
                tmp,
                json.dumps({"threads": args.threads, "distinct": args.distinct}),
            ],
            check=True,
        )
        page = d / "many.html"
        writes = []
        for _ in range(args.repeat):
            t0 = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "gencore", "report", str(d / "many.core"), "-o", str(page)],
                check=True,
                capture_output=True,
            )
            writes.append(time.monotonic() - t0)
        size = page.stat().st_size
        plain = d / "plain.html"
        text_page(size, plain)
        ours = render_times(page, args.repeat)
        base = render_times(plain, args.repeat)
    med = statistics.median
    r_ms, b_ms = med(x["ms"] for x in ours), med(x["ms"] for x in base)
    share = size / (3 << 20)
    print(f"threads: {args.threads + 1}, page: {size / 1024:.0f} KiB ({share:.0%} of 3 MiB)")
    print(f"gencore report (core to page, one process): median {med(writes):.2f} s")
    print(
        f"chromium render at 1280x800: median {r_ms:.0f} ms (load event "
        f"{med(x['load'] for x in ours):.0f} ms, "
        f"{ours[0]['nodes']} elements); a text-only page of the same size: {b_ms:.0f} ms; "
        f"ratio {r_ms / b_ms:.2f}"
    )


if __name__ == "__main__":
    main()
