"""The demo's start-up time and the latency of one comparison, measured in a real browser, with a screenshot.

Starts `aft demo RUN_DIR` as a user does, opens it in headless chromium, compares SFT with the first ★ on
the first test example and waits for both heatmaps. Prints the figures as JSON and exits non-zero when a
comparison takes longer than --target-s (default 10 s: an interactive page answers within seconds).

    python bench/demo.py --run-dir runs/main --screenshot docs/demo.png

The helpers (start the server, a headless chromium that reaches only loopback, poll until) serve
tests/test_demo.py too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HANG_S = 900  # a guard against hangs; every wait below is a poll that ends when its condition holds
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def wait_for(condition: Callable[[], Any], what: str, hang_s: float = HANG_S) -> Any:
    deadline = time.monotonic() + hang_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} not seen after {hang_s}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(run_dir: str | Path, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """`aft demo RUN_DIR --port PORT` in its own process group; returns it and the seconds until its page answered."""
    started = time.monotonic()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("aft")), "demo", str(run_dir), "--port", str(port)],
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"aft demo exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200
        except OSError:
            return False

    wait_for(up, "the demo's page")
    return server, time.monotonic() - started


def headless_chromium(
    profile: Path, browser: str = "/usr/bin/chromium", driver: str = "/usr/bin/chromedriver", window: str = "1400,2000"
) -> Any:
    """Debian's chromium through selenium, recording every network request (performance log) and console error."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def requested_urls(driver: Any) -> set[str]:
    """Every URL the page asked for (HTTP requests and WebSockets) since the last call."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            urls.add(message["params"].get("request", {}).get("url") or message["params"].get("url"))
    return urls


def compare_columns(driver: Any) -> list[list[Any]]:
    """[system, response, A as JSON, drawn cells] of each column of the comparison, once every heatmap is drawn."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#aft-output .aft-system')).map(e => [e.dataset.system, "
        "e.querySelector('[data-role=response]').textContent, e.querySelector('table.aft-heat').dataset.attention, "
        "e.querySelectorAll('table.aft-heat td').length])"
    )


def conversation_columns(driver: Any) -> list[list[Any]]:
    """[system, system turns shown, heatmaps shown, outcome line] of each column of the Conversation tab."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#aft-talk .aft-system')).map(c => [c.dataset.system, "
        "c.querySelectorAll('[data-role=system-turn]').length, c.querySelectorAll('table.aft-heat').length, "
        "c.querySelector('[data-role=outcome]').textContent])"
    )


def open_conversation_tab(driver: Any) -> None:
    """Switch the demo page to its Conversation tab."""
    from selenium.webdriver.common.by import By

    tab = wait_for(
        lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Conversation" in b.text],
        "the Conversation tab",
    )
    tab[0].click()
    wait_for(lambda: driver.find_element(By.ID, "aft-start").is_displayed(), "the Start button")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/main", help="a finished pipeline run (default: the main job's)")
    parser.add_argument("--screenshot", default="", help="where to save a screenshot of the comparison (PNG)")
    parser.add_argument(
        "--conversation-screenshot", default="", help="where to save a screenshot of the Conversation tab (PNG)"
    )
    parser.add_argument(
        "--target-s", type=float, default=10.0, help="the longest acceptable comparison (and conversation exchange)"
    )
    args = parser.parse_args()
    from selenium.webdriver.common.by import By

    scratch = Path(tempfile.mkdtemp(prefix="aft-demo-bench-"))
    port = free_port()
    server, startup = start_demo(args.run_dir, port, scratch / "demo.log")
    driver = headless_chromium(scratch / "profile")
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(
            lambda: driver.execute_script(
                "const t = document.querySelector('#aft-history textarea');return t && t.value"
            ),
            "the example's history",
        )
        driver.find_element(By.ID, "aft-compare").click()
        clicked = time.monotonic()
        columns = wait_for(lambda: compare_columns(driver), "the comparison")
        latency = time.monotonic() - clicked
        if args.screenshot:
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.screenshot)
        # the Conversation tab: the systems' first replies to the simulated user, then one more exchange
        open_conversation_tab(driver)
        exchanges = []
        for button, replies in (("aft-start", 1), ("aft-next", 2)):
            driver.find_element(By.ID, button).click()
            clicked = time.monotonic()
            wait_for(
                lambda n=replies: (
                    (cols := conversation_columns(driver)) and all(c[1] >= n or "ended" in c[3] for c in cols)
                ),
                f"exchange {replies}",
            )
            exchanges.append(time.monotonic() - clicked)
        if args.conversation_screenshot:
            Path(args.conversation_screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.conversation_screenshot)
        outside = sorted(
            u
            for u in requested_urls(driver)
            if u.split(":", 1)[0] in ("http", "https", "ws", "wss")
            and not u.split("/")[2].startswith(f"127.0.0.1:{port}")
        )
    finally:
        driver.quit()
        server.terminate()
        server.wait()
    result = {
        "run_dir": args.run_dir,
        "startup_s": round(startup, 1),
        "comparison_s": round(latency, 2),
        "systems": [c[0] for c in columns],
        "conversation_exchange_s": [round(x, 2) for x in exchanges],
        "target_s": args.target_s,
        "requests_outside_loopback": outside,
    }
    print(json.dumps(result, indent=2))
    ok = latency <= args.target_s and max(exchanges) <= args.target_s and not outside
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
