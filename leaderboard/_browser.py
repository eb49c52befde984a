"""Headless Chromium for the site's browser tests and the scale benchmark (selenium, no network)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "start_chromium"]

#: no GPU, no background traffic, no first-run UI: the browser talks to nothing but the pages
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--window-size=1400,900",
)


def find_chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths, or None when either is not installed."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(user_data_dir: str | Path) -> Any:
    """A selenium WebDriver on a fresh profile; raises RuntimeError when Chromium is not installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    browser, driver = found
    options = Options()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.unhandled_prompt_behavior = "ignore"
    return webdriver.Chrome(service=Service(driver), options=options)
