"""Open an HTML file in headless Chromium (Selenium + chromedriver) and report what a reader would see
go wrong: console errors and images that did not decode.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (or ``$CHROMIUM`` /
``$CHROMEDRIVER``) and the ``selenium`` package; :func:`available` says whether they are here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2000")


def _binaries() -> tuple[str | None, str | None]:
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def available() -> str | None:
    """None when a headless check can run, else why not."""
    browser, driver = _binaries()
    if not browser or not driver:
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@dataclass(frozen=True)
class PageCheck:
    title: str
    console: list[dict[str, Any]]  # browser log entries (level, message)
    images: list[dict[str, Any]]  # per <img>: alt, complete, naturalWidth, naturalHeight

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.console if e.get("level") in ("SEVERE", "ERROR")]

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] <= 0]


def check_page(path: str | Path, screenshot: str | Path | None = None) -> PageCheck:
    """Load ``path`` (a local file) in headless Chromium with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _binaries()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser or ""
    profile = tempfile.mkdtemp(prefix="curator-chromium-")
    for f in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path or ""), options=opts)
    try:
        driver.set_page_load_timeout(120)
        driver.get(Path(path).resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
            " naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}));")
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        logs = driver.get_log("browser")
        return PageCheck(driver.title, list(logs), list(images))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
