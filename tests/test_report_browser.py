"""The demo report in a real browser: Debian's headless Chromium driven by selenium through Debian's chromedriver.

Nothing downloads a browser or a driver: both paths are given explicitly (so Selenium Manager never runs) and
`SE_OFFLINE` forbids it anyway. Skipped, with the reason, where Debian's `chromium` / `chromium-driver` are
absent (CI installs them: see docs/sponsor.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from immunostrat.reporting.report import SECTIONS

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


def _chromium(tmp_path: Path) -> Any:
    """Debian's headless Chromium through Debian's chromedriver, logging the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory)


def test_demo_report_opens_offline_in_chromium_without_console_errors(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")
    assert demo.result.report is not None
    driver = _chromium(tmp_path)
    try:
        driver.set_page_load_timeout(30)
        driver.get(demo.result.report.resolve().as_uri())
        assert driver.title.startswith("immunostrat run ")
        for section_id, title in SECTIONS:
            section = driver.find_element(By.ID, section_id)
            assert section.is_displayed() and section.size["height"] > 40, section_id
            assert section.find_element(By.TAG_NAME, "h2").text == title
        figures = driver.execute_script(
            "return [...document.querySelectorAll('figure > svg')].map(s => {"
            " const box = s.getBoundingClientRect(); return [box.width, box.height, s.querySelectorAll('*').length]; })"
        )
        assert len(figures) >= 3 and all(w > 300 and h > 100 and n > 10 for w, h, n in figures), figures
        assert driver.execute_script("return document.images.length") == 0  # every figure is inline SVG
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


def test_follow_up_team_report_shows_the_swimmer_plot_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor run's team report opens offline with every section, the swimmer plot drawn (inline SVG), and
    no console error; the sponsor's copy has no swimmer plot."""
    from selenium.webdriver.common.by import By

    from immunostrat.cli.main import main
    from immunostrat.followup.report import FOLLOW_UP_SECTIONS, TEAM_ONLY
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    monkeypatch.setenv("SE_OFFLINE", "true")
    files = write_cohort(generate_cohort(SynthConfig(n_subjects=60, seed=4)), tmp_path / "in", fmt="parquet")
    args = ["monitor", "--engine", "local", "--labs", str(files["labs"]), str(files["labs_followup"])]
    args += ["--subjects", str(files["subjects"]), "--visits", str(files["visits"]), "--as-of", "2026-10-31"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 0
    (run,) = [p for p in (tmp_path / "m").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert 'data-section="swimmer"' not in (run / "sponsor" / "report.html").read_text(encoding="utf-8")
    driver = _chromium(tmp_path)
    try:
        driver.set_page_load_timeout(30)
        driver.get((run / "report.html").resolve().as_uri())
        for section_id, title in FOLLOW_UP_SECTIONS:
            section = driver.find_element(By.ID, section_id)
            assert section.is_displayed() and section.find_element(By.TAG_NAME, "h2").text == title
        swimmer = driver.find_element(By.ID, "swimmer").find_element(By.TAG_NAME, "svg")
        assert swimmer.size["height"] > 200 and swimmer.get_attribute("aria-label").startswith("Swimmer plot")
        assert "swimmer" in TEAM_ONLY
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
