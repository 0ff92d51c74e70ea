"""The demo report in a real browser: Debian's headless Chromium driven by selenium through Debian's chromedriver.

Nothing downloads a browser or a driver: both paths are given explicitly (so Selenium Manager never runs) and
`SE_OFFLINE` forbids it anyway. Skipped, with the reason, where Debian's `chromium` / `chromium-driver` are
absent (CI installs them: see docs/sponsor.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from immunostrat.report import SECTIONS

from .test_publish import Demo, build_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM} / {CHROMEDRIVER} absent): "
    "apt-get install -y chromium chromium-driver",
)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory)


def test_demo_report_opens_offline_in_chromium_without_console_errors(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")
    assert demo.result.report is not None
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(demo.result.report.resolve().as_uri())
        assert driver.title.startswith("immunostrat run ")
        for section_id, title in SECTIONS:
            section = driver.find_element(By.ID, section_id)
            assert section.is_displayed() and section.size["height"] > 40, section_id
            assert section.find_element(By.TAG_NAME, "h2").text == title
        images = driver.execute_script(
            "return [...document.images].map(i => [i.complete && i.naturalWidth > 0, i.currentSrc.slice(0, 22)])"
        )
        assert len(images) >= 3 and all(ok for ok, _ in images), images
        assert {src for _, src in images} == {"data:image/png;base64,"}
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(str(name).startswith("data:") for name in fetched), fetched  # nothing from the network
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1280, min(height + 120, 12000))
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 50_000
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
    print(f"screenshot: {screenshot}")
