"""The dashboard as a person uses it: a real (headless) Chromium opens the page, sees the
workers, watches tasks appear live, sees a killed worker go, and takes a screenshot (the one in
docs/dashboard.md).

Needs the system ``chromium`` (``.ci/run`` installs it when missing) and Playwright's Python
package (the ``test`` extra), which drives that browser; Playwright downloads no browser here.
"""

from __future__ import annotations

import operator
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from minipool import Pool

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the test extra)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system chromium (apt-get install chromium)")

#: Where to save the screenshot as well (docs/dashboard.png is made with
#: ``MINIPOOL_DASHBOARD_SCREENSHOT=docs/dashboard.png``); a run leaves the tree as it was.
SCREENSHOT = os.environ.get("MINIPOOL_DASHBOARD_SCREENSHOT")


def nap(x: float) -> float:
    time.sleep(x)
    return x


def count_becomes(page: Any, selector: str, test: Any, timeout: float = 20.0) -> None:
    """Wait until the number of ``selector`` matches passes ``test`` (no script evaluation:
    the page's Content-Security-Policy forbids eval, and the test runs under it)."""
    deadline = time.monotonic() + timeout
    while not test(page.locator(selector).count()):
        assert time.monotonic() < deadline, f"{selector}: {page.locator(selector).count()}"
        page.wait_for_timeout(100)


def test_the_page_shows_workers_and_tasks_live_and_a_worker_going(tmp_path: Path) -> None:
    with Pool(2, authkey=b"browser-test-key-0123456789", dashboard="127.0.0.1:0") as pool:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(pool.dashboard.server.private_url)
                page.wait_for_selector("#conn:text('live')", timeout=10_000)
                count_becomes(page, "[data-worker]", lambda n: n == 2)
                assert page.text_content("#topics") == "no topics"
                futures = [pool.submit(operator.add, i, 100) for i in range(5)]
                futures.append(pool.submit(nap, 0.2))
                [f.result(20) for f in futures]
                page.wait_for_selector("[data-task][data-state='done']", timeout=5_000)
                count_becomes(page, "[data-state='done']", lambda n: n >= 6, 5.0)
                assert "_operator.add" in page.text_content("#tasks")
                victim: Any = pool.status()["workers"][0]
                os.kill(victim["pid"], signal.SIGKILL)
                page.wait_for_selector("[data-event='worker-lost']", timeout=10_000)
                assert victim["id"] not in page.text_content("#workers")
                count_becomes(page, "[data-worker]", lambda n: n == 2)
                page.click("[data-task]")
                page.wait_for_selector("#detail:has-text('args')", timeout=5_000)
                picture = page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                assert picture.startswith(b"\x89PNG") and len(picture) > 10_000
                if SCREENSHOT:
                    Path(SCREENSHOT).write_bytes(picture)
            finally:
                browser.close()
