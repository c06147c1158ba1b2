"""The static gallery: generated HTML/SVG, the safe Markdown renderer, and the real page in headless Chromium."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from razorzoo.zoo.gallery import REFERENCES, build_gallery, scatter_svg
from razorzoo.zoo.render import markdown_to_html
from razorzoo.zoo.registry import list_models

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    index = build_gallery(out)
    assert index == out / "index.html"
    return out


def test_one_page_per_card_and_nothing_half_written(site):
    pages = sorted(p.stem for p in (site / "models").glob("*.html"))
    assert pages == sorted(list_models())
    assert not list(site.rglob("*.tmp"))


def test_index_is_self_contained(site):
    text = (site / "index.html").read_text()
    assert "<style>" in text and "<script>" in text
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)  # no CDN, no external assets
    external = set(re.findall(r"href=\"(https?://[^\"]+)\"", text))
    assert external == set()  # the index links only to its own pages
    assert len(re.findall(r"<tr data-name=", text)) == 15
    assert text.count("<svg") == 4


def test_plots_mark_the_upstream_baselines_as_references(site):
    text = (site / "index.html").read_text()
    plots = re.findall(r"<svg.*?</svg>", text, re.S)
    detector_plots = [p for p in plots if "Detectors" in p]
    assert len(detector_plots) == 2
    for plot in detector_plots:
        for name in ("YOLOv5-s (not in zoo)", "YOLOv6-s (not in zoo)", "RTMDet-tiny (not in zoo)"):
            assert plot.count(name) == 2  # label + tooltip
        assert len(re.findall(r"<g class=\"point\"", plot)) == 3
        assert len(re.findall(r"<g class=\"reference\"", plot)) == 3
    assert "reference point, not in the zoo" in text
    assert {r.name: (r.box_ap, r.flops) for r in REFERENCES} == {
        "YOLOv5-s": (37.7, 8.265), "YOLOv6-s": (44.0, 24.253), "RTMDet-tiny": (41.0, 8.089)}


def test_scatter_geometry_and_pareto_front():
    rows = [{"name": "a", "family": "ofa", "flops": 1.0, "top1": 70.0},
            {"name": "b", "family": "ofa", "flops": 2.0, "top1": 80.0},
            {"name": "c", "family": "spos", "flops": 3.0, "top1": 75.0}]
    svg = scatter_svg(rows, "flops", "top1", "t")
    circles = [(float(x), float(y)) for x, y in re.findall(r"<circle cx=\"([\d.]+)\" cy=\"([\d.]+)\"", svg)]
    assert len(circles) == 3
    (ax, ay), (bx, by), (cx, cy) = circles
    assert ax < bx < cx and by < cy < ay  # SVG y grows downwards: higher accuracy is drawn higher
    front = re.search(r"<polyline class=\"front\" points=\"([^\"]+)\"", svg).group(1).split()
    assert front == [f"{ax:.1f},{ay:.1f}", f"{bx:.1f},{by:.1f}"]  # c is dominated by b
    assert scatter_svg([], "flops", "top1", "empty") == ""


def test_markdown_renderer_escapes_html():
    html_out = markdown_to_html(
        "# Title <b>x</b>\n\nText with <script>alert(1)</script>, `a<b>` and **bold** and "
        "[ok](https://example.org/a?b=1&c=2) and [bad](javascript:alert(1)).\n\n"
        "```python\nif a < b:\n    print('<x>')\n```\n\n- one\n- two *em*\n\n| a | b |\n|---|---|\n| <i> | 2 |\n"
    )
    assert "<script>" not in html_out and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_out
    assert "<h2>Title &lt;b&gt;x&lt;/b&gt;</h2>" in html_out
    assert "<code>a&lt;b&gt;</code>" in html_out and "<strong>bold</strong>" in html_out
    assert "<a href=\"https://example.org/a?b=1&amp;c=2\">ok</a>" in html_out
    assert "href=\"javascript" not in html_out
    assert "<pre><code class=\"language-python\">if a &lt; b:\n    print(&#x27;&lt;x&gt;&#x27;)</code></pre>" in html_out
    assert "<ul><li>one</li><li>two <em>em</em></li></ul>" in html_out
    assert "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>&lt;i&gt;</td><td>2</td></tr>" \
           in html_out


def test_card_page(site):
    text = (site / "models" / "attentive_a6.html").read_text()
    assert "<h1>attentive_a6</h1>" in text
    assert "15.897 M (15,896,752)" in text
    assert "<h3>Citation</h3>" in text and "@inproceedings{wang2021attentivenas," in text
    assert "href=\"../index.html\"" in text


# -- a real browser ----------------------------------------------------------------------------------------------
class DevTools:
    """The Chrome DevTools Protocol over a websocket: just enough to drive one page."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self._ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.events:
                if message.get("method") == event:
                    self.events.remove(message)
                    return message
            self.events.append(json.loads(self._ws.recv()))
        raise TimeoutError(event)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def errors(self) -> list[dict]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        found = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown" or (
                method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert")
            ) or (method == "Log.entryAdded" and params["entry"]["level"] == "error"):
                found.append(message)
        return found

    def close(self) -> None:
        self._ws.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/setup installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="razorzoo-chromium-")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"chromium exited with {process.returncode} before opening its DevTools port")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _open(port: int, url: str) -> DevTools:
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
    page = next(t for t in targets if t["type"] == "page")
    tools = DevTools(page["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        tools.call(f"{domain}.enable")
    tools.call("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    return tools


@pytest.mark.browser
def test_gallery_in_chromium(browser, site):
    tools = _open(browser, (site / "index.html").as_uri())
    try:
        assert tools.evaluate("document.title") == "razorzoo model gallery"
        visible = "Array.from(document.querySelectorAll('#models tbody tr')).filter(r => !r.hidden)" \
                  ".map(r => r.dataset.name)"
        assert len(tools.evaluate(visible)) == 15
        # the plots render: non-empty SVGs with drawn points
        sizes = tools.evaluate("Array.from(document.querySelectorAll('svg.plot')).map(s => { const b = s.getBBox();"
                               " return [b.width, b.height, s.querySelectorAll('circle').length]; })")
        assert len(sizes) == 4 and all(w > 100 and h > 100 and n >= 3 for w, h, n in sizes)
        tools.screenshot(ARTIFACTS / "gallery-index.png")

        # typing in the filter box filters the rows and dims the hidden models' plot points
        tools.evaluate("document.getElementById('filter').focus()")
        tools.call("Input.insertText", text="ofa")
        assert tools.evaluate(visible) == ["ofa_lat22", "ofa_lat31", "ofa_supernet", "rtmdet_tiny-ofa_lat31"]
        assert tools.evaluate("document.getElementById('count').textContent") == "4 models"
        dimmed = tools.evaluate("Array.from(document.querySelectorAll('svg.plot .point.dimmed'))"
                                ".map(p => p.dataset.name)")
        assert "attentive_a6" in dimmed and "ofa_lat31" not in dimmed
        tools.screenshot(ARTIFACTS / "gallery-filtered.png")

        # clicking a header sorts (missing values last), clicking again reverses
        tools.evaluate("document.getElementById('filter').value = ''; "
                       "document.getElementById('filter').dispatchEvent(new Event('input'))")
        tools.evaluate("document.querySelector('th[data-key=box_ap]').click()")
        assert tools.evaluate(visible)[:3] == ["yolov5s-spos_0.33M", "rtmdet_tiny-ofa_lat31", "yolov6s-attentive_a6"]
        tools.evaluate("document.querySelector('th[data-key=box_ap]').click()")
        assert tools.evaluate(visible)[:3] == ["yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31", "yolov5s-spos_0.33M"]
        assert tools.errors() == []
    finally:
        tools.close()


@pytest.mark.browser
def test_card_page_in_chromium(browser, site):
    tools = _open(browser, (site / "models" / "rtmdet_tiny-ofa_lat31.html").as_uri())
    try:
        assert tools.evaluate("document.querySelector('h1').textContent") == "rtmdet_tiny-ofa_lat31"
        assert tools.evaluate("document.querySelectorAll('article h3').length") >= 4
        assert tools.evaluate("document.querySelector('article pre code').textContent").startswith("import razorzoo")
        tools.screenshot(ARTIFACTS / "gallery-card.png")
        assert tools.errors() == []
    finally:
        tools.close()
