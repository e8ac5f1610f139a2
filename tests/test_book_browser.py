"""The rendered book in a real browser: every page of ``_build/html`` opened in headless Chromium.

Each page must load with no console error, no failed request and no request off the local server (the book is read
offline), show every image, and have its math typeset by the local MathJax; the search page must find a chapter.
A full-page screenshot of each page lands in ``_build/screenshots``. The pages are served by a local
``http.server`` on 127.0.0.1 (the search loads its index by script, as on a real site).

Run after ``make html`` (``make test`` and ``make browser`` do). Debian's ``chromium`` is driven by Playwright;
Playwright's own browser download is never used. Skips, with the reason, where no chromium or no built book is found.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the tests skip, saying so
    sync_playwright = None
    PlaywrightTimeout = TimeoutError

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SEARCH_QUERY = "masked autoencoder"
# Known, harmless console errors of the themes, matched as regular expressions. pydata-sphinx-theme logs this one
# (console.error) on a first visit, when no light/dark mode is stored yet and the book sets no default_mode.
BENIGN_CONSOLE = [r"^Got invalid theme mode: \. Resetting to auto\.$"]
LOAD_TIMEOUT_MS = 30_000
MATHJAX_TIMEOUT_MS = 10_000  # after the network is idle MathJax has long been loaded; it only has to start


def _pages() -> list[str]:
    """Every page of the built book (Sphinx's template fragments in _static left out); a placeholder that skips when
    there is none, so the run says why."""
    pages = sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)
    return pages or ["(no _build/html)"]


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server():
    """A local HTTP server on a free port of 127.0.0.1, serving ``_build/html``; yields its base URL."""
    if not HTML.is_dir():
        pytest.skip("no _build/html: build the book first (make html)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # the test reports failures itself
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium, or set CHROMIUM=/path/to/chrome)")
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=exe, headless=True)
    except Exception as err:
        pw.stop()
        pytest.skip(f"chromium at {exe} did not start under Playwright: {err}")
    yield browser
    browser.close()
    pw.stop()


class PageLog:
    """What went wrong while a page loaded: console errors, uncaught exceptions, failed or external requests."""

    def __init__(self, page, base: str):
        self.base = base
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught exception: {err}"))
        page.on("requestfailed", lambda req: self.problems.append(f"request failed: {req.url} ({req.failure})"))
        page.on("response", self._response)
        # anything not served by the local server is refused (and reported), as it would fail offline
        page.route(lambda url: not self.local(url), self._refuse)

    def local(self, url: str) -> bool:
        return url.startswith(self.base) or urlsplit(url).scheme in ("data", "blob", "about")

    def _console(self, msg) -> None:
        if msg.type == "error" and not any(re.search(p, msg.text) for p in BENIGN_CONSOLE):
            self.problems.append(f"console error: {msg.text} at {msg.location.get('url', '')}")

    def _response(self, response) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def _refuse(self, route) -> None:
        self.problems.append(f"external request: {route.request.url}")
        route.abort()


def _open(browser, server: str, rel: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log = PageLog(page, server)
    page.goto(server + rel, wait_until="load", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
    return context, page, log


# Text nodes outside code, scripts and typeset math that still hold TeX delimiters: math MathJax did not typeset.
RAW_TEX_JS = r"""() => {
  const skip = "pre, code, script, style, textarea, mjx-container";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest(skip)) continue;
    if (/\\\(|\\\[|\$\$/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80));
  }
  return raw;
}"""


@pytest.mark.parametrize("rel", _pages())
def test_page(browser, server, rel):
    if not (HTML / rel).exists():
        pytest.skip("no _build/html: build the book first (make html)")
    context, page, log = _open(browser, server, rel)
    try:
        n_math = page.locator(".math").count()
        if n_math:
            try:
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                       timeout=MATHJAX_TIMEOUT_MS)
            except PlaywrightTimeout:
                pytest.fail(f"{n_math} math elements but MathJax did not start within {MATHJAX_TIMEOUT_MS} ms "
                            f"(problems while loading: {log.problems or 'none'})")
            page.evaluate("() => MathJax.startup.promise")
            typeset = page.locator(".math mjx-container, mjx-container.MathJax").count()
            untypeset = page.locator(".math:not(:has(mjx-container))").count()
            assert untypeset == 0, f"{untypeset} of {n_math} math elements not typeset by MathJax"
            assert typeset >= n_math, f"{typeset} mjx-container for {n_math} math elements"
            errors = page.locator("mjx-merror").all_text_contents()
            assert not errors, f"MathJax errors: {errors[:5]}"
        raw = page.evaluate(RAW_TEX_JS)
        assert not raw, f"TeX left unrendered: {raw[:5]}"
        text = page.evaluate("() => document.body.innerText")
        checks = re.findall(r".{0,40}(?:\bassert\w*|NBVAL\w*).{0,40}", text)
        assert not checks, f"check code a reader sees (hide it with a remove-cell tag): {checks[:5]}"
        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.getAttribute('src'))")
        assert not broken, f"{len(broken)} images not loaded: {broken[:5]}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (rel.replace("/", "__").removesuffix(".html") + ".png")), full_page=True)
        assert not log.problems, "\n".join(log.problems)
    finally:
        context.close()


def test_search_finds_a_chapter(browser, server):
    if not (HTML / "search.html").exists():
        pytest.skip("no _build/html/search.html: build the book first (make html)")
    query = SEARCH_QUERY.replace(" ", "+")
    context, page, log = _open(browser, server, f"search.html?q={query}")
    try:
        # Sphinx's search writes "Search finished, found N page(s) ..." (or "did not match any documents") when done
        try:
            page.wait_for_function(
                "() => /finished|did not match/i.test(document.querySelector('#search-results')?.textContent || '')",
                timeout=LOAD_TIMEOUT_MS)
        except PlaywrightTimeout:
            pytest.fail(f"search for {SEARCH_QUERY!r} did not finish in {LOAD_TIMEOUT_MS} ms "
                        f"(problems while loading: {log.problems or 'none'})")
        links = [a.get_attribute("href") or "" for a in page.locator("#search-results ul.search li a").all()]
        chapters = sorted({h.split("?")[0].split("#")[0] for h in links if h.startswith("nbs/")})
        assert chapters, f"search for {SEARCH_QUERY!r} found no chapter, only {links}"
        page.screenshot(path=str(SHOTS / "search__masked-autoencoder.png"), full_page=True)
        assert not log.problems, "\n".join(log.problems)
    finally:
        context.close()
