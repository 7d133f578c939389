"""``report.html`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Selenium drives the system's browser and driver by path (Selenium Manager is never asked to
download one). The page must load from ``file://`` with no console message of level SEVERE and no
request other than ``file:``/``data:``; the results table has one row per variant; every image
has loaded; the forest plot and the heatmaps have a size on screen; the sort and zoom scripts
work; and a screenshot is not blank. Skipped where the browser is missing, except in CI
(``CI=true``), which installs it (``.ci/run``) and so must not skip silently.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import pytest
from PIL import Image, ImageStat
from test_report_html import study_cfg

from yoloattn.experiments.compare import run_compare

pytestmark = pytest.mark.browser

VARIANTS = ["baseline", "se@neck", "cbam@neck"]


def _need(what: str, hint: str) -> None:
    msg = f"{what} missing: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI installs it in .ci/run; it must not skip there)")
    pytest.skip(msg)


def chromium_paths() -> tuple[str, str]:
    """``(browser, driver)`` of the system's Chromium, or skip with the reason."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        _need("chromium / chromedriver", "apt-get install -y chromium chromium-driver")
    assert browser and driver
    return browser, driver


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium", "pip install -e '.[test]'")
    binary, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _requests(drv) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _wait_loaded(drv, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if drv.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(function (i) { return i.complete; })"
        ):
            return
        time.sleep(0.1)
    raise AssertionError("report.html did not finish loading")


def test_report_opens_in_headless_chromium(browser, fake_weights, tiny_data, tmp_path):
    root = run_compare(study_cfg(tmp_path, tiny_data, seeds=1))
    url = (root / "report.html").resolve().as_uri()
    browser.get(url)
    _wait_loaded(browser)

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    urls = _requests(browser)
    assert url in urls
    assert all(u.startswith(("file:", "data:")) for u in urls), [u for u in urls if not u.startswith("data:")]

    first_col = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results-table tbody tr'))"
        ".map(function (r) { return r.cells[0].textContent; })"
    )
    assert first_col == VARIANTS  # one row per variant, in the study's order
    grid_head = browser.execute_script(
        "return Array.from(document.querySelectorAll('#image-grid th.variant'))"
        ".map(function (th) { return th.firstChild.textContent; })"
    )
    assert grid_head == VARIANTS

    images = browser.execute_script(
        "return Array.from(document.images).map(function (i) { var r = i.getBoundingClientRect();"
        " return [i.alt, i.naturalWidth, i.naturalHeight, r.width, r.height]; })"
    )
    assert len(images) >= 1 + 3 + 1 + len(VARIANTS) * 2  # forest, plots, curves, 2 images each
    for alt, nw, nh, _w, _h in images:
        assert nw > 0 and nh > 0, alt  # every <img> decoded
    shown = {alt: (w, h) for alt, _nw, _nh, w, h in images}
    forest = [v for k, v in shown.items() if "Δ mAP50-95" in k]
    assert len(forest) == 1 and min(forest[0]) > 50
    for v in VARIANTS:
        heat = [wh for k, wh in shown.items() if k.startswith(f"{v} im0.jpg LayerCAM")]
        assert len(heat) == 1 and min(heat[0]) > 50, v

    # the inline scripts run: sort the results by variant (twice: descending) and zoom a picture
    header = browser.find_element("css selector", "#results-table th")
    header.click()
    header.click()
    col = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results-table tbody tr'))"
        ".map(function (r) { return r.cells[0].textContent; })"
    )
    assert col == sorted(VARIANTS, reverse=True)
    img = browser.find_element("css selector", "#image-grid img")
    img.click()
    assert "zoom" in img.get_attribute("class")
    img.click()

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert shot.width > 100 and shot.height > 100
    assert max(ImageStat.Stat(shot).stddev) > 10  # not blank
    assert len(shot.getcolors(shot.width * shot.height) or []) > 50
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all(u.startswith(("file:", "data:")) for u in _requests(browser))
