"""The documentation site: `mkdocs build --strict` passes (a broken link, anchor or API reference fails it), and
the built site requests nothing outside itself, checked in its HTML and CSS and in headless chromium."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import ROOT

# what a page loads by itself (links a reader clicks are not requests)
RESOURCE_ATTRIBUTES = re.compile(
    r"<(?:script|img|iframe|source|audio|video|embed)\b[^>]*?\bsrc=[\"']([^\"']+)[\"']"
    r"|<link\b[^>]*?\bhref=[\"']([^\"']+)[\"'][^>]*>",
    re.I,
)
CSS_URLS = re.compile(r"url\(\s*[\"']?([^\"')]+)|@import\s+[\"']([^\"']+)", re.I)
SCREENSHOTS = ("method/index.html", "results/index.html", "reference/aft_core/index.html")


def _external(url: str) -> bool:
    parsed = urlparse(url)
    return bool(parsed.netloc) or parsed.scheme in ("http", "https")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


def test_the_site_builds_strictly_with_every_page_and_the_api_reference(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("index.html")}
    for page in (
        "index.html",
        "getting-started/index.html",
        "method/index.html",
        "workflow/index.html",
        "models/index.html",
        "corpora/index.html",
        "evaluation/index.html",
        "conversations/index.html",
        "calibration/index.html",
        "results/index.html",
        "reproducibility/index.html",
        "reliability/index.html",
        "benchmarks/index.html",
        "reference/aft_core/index.html",
        "reference/flows/index.html",
        "reference/tasks/index.html",
    ):
        assert page in pages, page
    api = (site / "reference" / "aft_core" / "index.html").read_text(encoding="utf-8")
    for documented in ("aft_core.reward.haca_reward", "aft_core.loss.kl_term", "aft_core.dialogue.user.AgendaUser"):
        assert f'id="{documented}"' in api, documented
    method = (site / "method" / "index.html").read_text(encoding="utf-8")
    assert 'href="../reference/aft_core/#aft_core.reward.focus"' in method  # the equation links to its function
    results = (site / "results" / "index.html").read_text(encoding="utf-8")
    assert "../figures/frontier-towninfo-small.png" in results and (site / "figures" / "decoder-only.png").exists()


def test_the_built_site_names_no_outside_resource(site):
    found = []
    for html in site.rglob("*.html"):
        for match in RESOURCE_ATTRIBUTES.finditer(html.read_text(encoding="utf-8")):
            url = match.group(1) or match.group(2)
            if _external(url):
                found.append(f"{html.relative_to(site)}: {url}")
    for css in site.rglob("*.css"):
        for match in CSS_URLS.finditer(css.read_text(encoding="utf-8")):
            url = match.group(1) or match.group(2)
            if _external(url) and not url.startswith("data:"):
                found.append(f"{css.relative_to(site)}: {url}")
    assert found == []


def test_pages_request_only_the_site_in_headless_chromium(site, chromium, tmp_path):
    """Served on 127.0.0.1 and opened in chromium: every request a page makes (from the DevTools network log,
    failed ones included) goes to that server; the screenshots go to test-output/docs-site/."""
    import io

    import matplotlib.image

    from bench.demo import headless_chromium, requested_urls

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    shots = ROOT / "test-output" / "docs-site"
    shots.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium(tmp_path / "profile", chromium["browser"], chromium["driver"], window="1280,1000")
    requested, errors = [], []
    try:
        for page in SCREENSHOTS:
            driver.get(origin + page)
            driver.execute_script("return document.fonts.ready")
            png = driver.get_screenshot_as_png()
            (shots / (page.replace("/index.html", "").replace("/", "-") + ".png")).write_bytes(png)
            pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
            assert pixels.std() > 0.02, f"the screenshot of {page} is blank"
            requested += requested_urls(driver)
            errors += [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
        server.shutdown()
    assert any(u.startswith(origin) for u in requested), "the network log recorded no request to the site"
    # requests over the network must all be this server's (chromium's own chrome:// pages, data: and blob: URLs
    # are not network requests)
    network = [u for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss", "ftp")]
    outside = [u for u in network if not u.startswith(origin)]
    assert outside == []
    assert errors == []
