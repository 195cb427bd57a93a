"""gencore report: the incident page and the fleet's page, from real cores of real processes.

The oracles are the processes themselves (tests/programs/incident.py writes what it saw of
itself just before each dump: its thread ids from /proc, the function that asked for the core,
the heap types it planted, its task names) and, for the tests marked ``browser``, real browsers:
Debian's chromium driven by Playwright, with no console error and no network request allowed.
Those are the same on every interpreter; they need the host's browsers and run on the host
interpreter only (``pytest -m browser``). The fleet tests are interpreter-independent
(``once``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import PROGRAMS, real_python, run, tool

import gencore
from gencore.analysis.report import gather

INCIDENT = str(PROGRAMS / "incident.py")
CHROMIUM = "/usr/bin/chromium"
MAX_PAGE = 3 << 20
ARTIFACTS = Path(
    os.environ.get("GENCORE_ARTIFACTS", Path(tempfile.gettempdir()) / "gencore-artifacts")
)


def gencore_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gencore", *args]


def incident(mode: str, out: Path, args: dict | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    p = run([sys.executable, INCIDENT, mode, str(out), json.dumps(args or {})], timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads((out / "live.json").read_text())


class Page(HTMLParser):
    """The text of an HTML page, and the text of the elements with some classes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.by_class: dict[str, list[str]] = {}
        self.open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in ("meta", "link", "br", "input", "rect", "line"):
            return
        self.open.append((tag, dict(attrs).get("class")))

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        if self.open and self.open[-1][1]:
            self.by_class.setdefault(self.open[-1][1], []).append(data)

    @property
    def all(self) -> str:
        return "".join(self.text)


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> dict:
    """One service process that dumped itself twice, and its report with --since."""
    out = tmp_path_factory.mktemp("service")
    live = incident("service", out)
    page = out / "page.html"
    p = run(
        gencore_cmd(
            "report", str(out / "after.core"), "--since", str(out / "before.core"), "-o", str(page)
        )
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(page)
    live.update(dir=out, page=page, html=page.read_text())
    return live


def test_page_shows_every_thread_and_the_trigger(service):
    page = Page(service["html"])
    # every thread the process had when it asked for the core, by the kernel's thread id
    tids = [int(t) for t in page.by_class.get("tid", []) + page.by_class.get("tid trig", [])]
    assert sorted(tids) == service["after"]["tids"]
    assert page.by_class["tid trig"] == [str(service["pid"])]  # the caller: the main thread
    h1 = re.search(r"<h1>(.*?)</h1>", service["html"]).group(1)
    assert service["after"]["function"] in h1
    # identical stacks are folded: the 12 pool workers are one group
    assert "12 threads" in page.by_class["count"]
    assert f"pid {service['pid']}" in page.all


def test_page_heap_shows_the_planted_types_and_growth(service):
    page = Page(service["html"])
    labels = page.by_class["l"]  # the bar charts' labels: top types first, then growth
    assert labels[:5] == service["planted"]
    assert f"{service['orders']:,}" in page.all  # the table's count of __main__.Order
    # half of the planted heap was there at the first core: Order grew by 35,000
    growth = re.search(
        r"<code>__main__\.Order</code></td><td class=\"n\">([+-][\d,]+)<", service["html"]
    )
    assert growth and growth.group(1) == f"+{service['orders'] // 2:,}"


def test_page_tasks_section_is_honest(service):
    page = Page(service["html"])
    with gencore.open_core(service["dir"] / "after.core") as core:
        has_tasks = callable(getattr(core, "tasks", None))
    if has_tasks:
        for name in service["tasks"]:
            assert name in page.all
    else:
        assert "not available for this core" in "".join(page.by_class["na"])


def test_page_is_self_contained(service):
    html = service["html"]
    assert "Content-Security-Policy" in html
    # no URL the browser would load: no src/href to anything but fragments
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", html)
    assert "http://" not in html.split("<body>")[0] and "https://" not in html


def test_report_api_gathers_without_second_parser(service):
    with gencore.open_core(service["dir"] / "after.core") as core:
        r = gather(core)
        census = core.heap()
    assert r.trigger.frames[0].function == "handle_request"
    assert r.trigger.tid == service["pid"]
    assert [t.type for t in r.heap.value.types[:5]] == [t.type for t in census.types[:5]]
    assert r.diff.value is None and "--since" in r.diff.why


def test_native_frames_are_eu_stacks(service, tmp_path):
    core = service["dir"] / "after.core"
    out = tmp_path / "native.html"
    p = run(gencore_cmd("report", str(core), "--native", "-o", str(out)))
    assert p.returncode == 0, p.stderr
    eu = run([tool("eu-stack"), "--core", str(core), "-e", real_python(), "-n", "48"])
    frames = re.findall(r"^#\d+[ \t]+0x[0-9a-f]+[ \t]*(.*)$", eu.stdout.split("TID ")[1], re.M)
    assert frames, eu.stdout + eu.stderr
    html = out.read_text()
    trig = html[html.index('class="group trig"') :]
    shown = re.findall(
        r'<code class="nat">(.*?)</code>', trig[: trig.index("</details></details>")]
    )
    assert len(shown) == len(frames)  # the first thread eu-stack lists: the caller
    named = [f for f in frames if f]
    assert [s for s in shown if not s.startswith("0x")] == named


@pytest.mark.once
def test_bad_input_gives_a_sentence_and_exit_2(tmp_path):
    junk = tmp_path / "junk.core"
    junk.write_bytes(b"not a core at all" * 100)
    p = run(gencore_cmd("report", str(junk), "-o", str(tmp_path / "x.html")))
    assert p.returncode == 2 and "not" in p.stderr and "Traceback" not in p.stderr
    p = run(gencore_cmd("report", str(tmp_path / "missing.core")))
    assert p.returncode == 2 and "missing.core" in p.stderr
    assert not (tmp_path / "x.html").exists()


def test_since_a_bad_core_says_why(service, tmp_path):
    junk = tmp_path / "old.core"
    junk.write_bytes(b"\x7fELF" + b"\0" * 60)
    out = tmp_path / "p.html"
    p = run(
        gencore_cmd(
            "report", str(service["dir"] / "after.core"), "--since", str(junk), "-o", str(out)
        )
    )
    assert p.returncode == 0, p.stderr
    na = " ".join(Page(out.read_text()).by_class["na"])
    assert "old.core" in na


@pytest.fixture(scope="session")
def many(tmp_path_factory) -> dict:
    """A core of a process with 1,000 threads in a few stacks, and its report."""
    out = tmp_path_factory.mktemp("many")
    live = incident("many", out, {"threads": 1000})
    page = out / "many.html"
    p = run(gencore_cmd("report", str(out / "many.core"), "-o", str(page)))
    assert p.returncode == 0, p.stderr
    live.update(dir=out, page=page, html=page.read_text())
    return live


@pytest.mark.once
def test_a_thousand_threads_page_is_small_and_complete(many):
    assert many["page"].stat().st_size < MAX_PAGE
    page = Page(many["html"])
    tids = [int(t) for t in page.by_class.get("tid", []) + page.by_class.get("tid trig", [])]
    assert sorted(tids) == many["tids"]
    assert len(tids) == 1001


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> dict:
    """Six cores of three causes uploaded to a file:// store."""
    base = tmp_path_factory.mktemp("fleet")
    cores, store = base / "cores", base / "store"
    store.mkdir()
    plan = [["handler_a", 3], ["handler_b", 2]]
    live = incident("fleet", cores, {"plan": plan})
    files = sorted(str(p) for p in cores.glob("core_*.core"))
    assert len(files) == 6  # five from the handlers, one from the unhandled exception
    p = run(gencore_cmd("upload", *files, f"file://{store}"))
    assert p.returncode == 0, p.stderr
    live.update(base=base, store=store, files=files)
    return live


@pytest.mark.once
def test_ls_group_groups_by_cause_without_downloading(fleet):
    p = run(gencore_cmd("ls", f"file://{fleet['store']}", "--group", "--json"))
    assert p.returncode == 0, p.stderr
    groups = json.loads(p.stdout)
    by_fn = {}
    for w in fleet["written"]:
        by_fn.setdefault(w["function"], []).append(Path(w["core"]).name)
    got = {g["frames"][0]["function"]: g for g in groups}
    assert set(got) == {"handler_a", "handler_b", "explode"}
    for fn, names in by_fn.items():
        g = got[fn]
        assert g["cause"] == "api" and g["count"] == len(names)
        assert sorted(Path(o).name for o in g["cores"]) == sorted(names)
        assert Path(g["representative"]).name == max(names)  # the newest
    exc = got["explode"]
    assert exc["cause"] == "exception: builtins.KeyError" and exc["count"] == 1
    assert [g["last"] for g in groups] == sorted((g["last"] for g in groups), reverse=True)
    text = run(gencore_cmd("ls", f"file://{fleet['store']}", "--group"))
    assert (
        text.returncode == 0 and "3 cores  api" in text.stdout and "in handler_a (" in text.stdout
    )


@pytest.mark.once
def test_report_of_a_prefix_links_each_group_to_a_report(fleet):
    out = fleet["base"] / "fleet.html"
    p = run(gencore_cmd("report", f"file://{fleet['store']}/", "-o", str(out)))
    assert p.returncode == 0, p.stderr
    html = out.read_text()
    links = re.findall(r'<a href="(fleet\.reports/[0-9a-f]+\.html)"', html)
    assert len(links) == 3
    for link in links:
        rep = (out.parent / link).read_text()
        assert "gencore incident report" in rep
    assert "6 cores, 3 distinct causes" in html


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install '.[browser]'")
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: apt-get install chromium"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def open_page(browser, path: Path):
    """The page loaded at 1280x800, with its console errors and every request it made."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, requests


def not_blank(png: bytes) -> None:
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(png)).convert("RGB")
    assert img.size == (1280, 800)
    colors = img.getcolors(1 << 20) or []
    assert len(colors) > 50, "the screenshot has almost no colours: blank?"
    background = max(colors)[0]
    assert background < 0.95 * 1280 * 800, "the screenshot is one colour"
    accent = sum(n for n, (r, g, b) in colors if r > 150 and g < 80 and b < 80)
    assert accent > 200, "the heading (in the accent colour) is not drawn"


@pytest.mark.once
@pytest.mark.browser
def test_browser_renders_the_incident_page(browser, service):
    page, errors, requests = open_page(browser, service["page"])
    assert errors == []
    assert requests == [service["page"].as_uri()]
    text = page.evaluate("document.body.textContent")
    for tid in service["after"]["tids"]:
        assert str(tid) in text
    assert service["after"]["function"] in page.inner_text("h1")
    labels = page.eval_on_selector_all(
        "svg.bars:not(.diff) text.l", "els => els.map(e => e.textContent)"
    )
    assert labels[:5] == service["planted"]
    png = page.screenshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report-1280x800.png").write_bytes(png)
    not_blank(png)
    # the icicle zooms on a click and back
    node = page.locator("svg.icicle g[data-d='1']").first
    node.click()
    assert page.locator("svg.icicle g[data-d='0'] rect").get_attribute("width") is not None
    page.locator("svg.icicle g[data-d='0']").click()
    page.fill("#filter", "parse_feed")
    visible = page.eval_on_selector_all("details.group", "els => els.filter(e => !e.hidden).length")
    assert visible == 1
    assert errors == []
    page.close()


@pytest.mark.once
@pytest.mark.browser
def test_browser_prints_everything(browser, service, tmp_path):
    page, errors, _ = open_page(browser, service["page"])
    page.emulate_media(media="print")
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    closed = page.eval_on_selector_all("details", "els => els.filter(e => !e.open).length")
    assert closed == 0
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10000
    assert errors == []
    page.close()


@pytest.mark.once
@pytest.mark.browser
def test_browser_renders_a_thousand_threads(browser, many):
    page, errors, requests = open_page(browser, many["page"])
    assert errors == [] and requests == [many["page"].as_uri()]
    text = page.evaluate("document.body.textContent")
    missing = [t for t in many["tids"] if str(t) not in text]
    assert missing == []
    png = page.screenshot()
    (ARTIFACTS / "report-1000-threads-1280x800.png").write_bytes(png)
    not_blank(png)
    page.close()


@pytest.mark.once
@pytest.mark.browser
def test_browser_follows_the_fleet_page_to_a_report(browser, fleet):
    out = fleet["base"] / "fleet-browser.html"
    p = run(gencore_cmd("report", f"file://{fleet['store']}/", "-o", str(out)))
    assert p.returncode == 0, p.stderr
    page, errors, requests = open_page(browser, out)
    assert errors == [] and requests == [out.as_uri()]
    (ARTIFACTS).mkdir(parents=True, exist_ok=True)
    png = page.screenshot()
    (ARTIFACTS / "fleet-1280x800.png").write_bytes(png)
    not_blank(png)
    page.click("text=report of the newest core")
    page.wait_for_load_state("load")
    assert "gencore incident report" in page.text_content("header")
    assert errors == []
    page.close()


@pytest.mark.once
@pytest.mark.browser
def test_firefox_renders_the_incident_page(service, tmp_path):
    """Debian's Firefox ESR draws the same page (a headless screenshot at 1280x800)."""
    firefox = "/usr/bin/firefox-esr"
    if not os.path.exists(firefox):
        pytest.fail(
            f"the browser tests need Debian's Firefox at {firefox}: apt-get install firefox-esr"
        )
    profile, shot = tmp_path / "profile", tmp_path / "firefox.png"
    profile.mkdir()
    p = run(
        [
            firefox,
            "--headless",
            "--no-remote",
            "-profile",
            str(profile),
            "--window-size=1280,800",
            "--screenshot",
            str(shot),
            service["page"].as_uri(),
        ],
        timeout=120,
        env={"HOME": str(tmp_path), "MOZ_HEADLESS": "1"},
    )
    assert p.returncode == 0 and shot.exists(), p.stderr
    png = shot.read_bytes()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report-firefox-1280x800.png").write_bytes(png)
    not_blank(png)
