"""Headless Chromium for the browser tests: Debian's chromium + chromium-driver.

The ``driver`` fixture (tests/serving/conftest.py) skips, with the reason shown, where they
are absent. ``CNNLAB_SCREENSHOTS=DIR`` keeps screenshots of the pages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--window-size=1280,1000",
)  # fmt: skip


def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with its own profile folder, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


def screenshot(driver: Any, name: str) -> None:
    """The whole page as ``$CNNLAB_SCREENSHOTS/name.png`` (nothing without the variable)."""
    folder = os.environ.get("CNNLAB_SCREENSHOTS")
    if folder:
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, max(1000, height + 140))
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(1280, 1000)
