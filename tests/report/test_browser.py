"""Open a built report in real headless Chromium: no console errors, every figure rendered.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped when
they are absent. A screenshot of the whole page is kept in ``$MISMATCH_ARTIFACTS`` (default: the
test's temporary folder) as an artifact of the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mismatch.report import build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
         "--window-size=1440,900")

# Counts figure divs, rendered figures (an SVG inside), loaded images, and the injection canary.
PROBE = """
const divs = [...document.querySelectorAll('.plotly-graph-div')];
return {
  figures: divs.length,
  rendered: divs.filter(d => d.querySelector('svg.main-svg') && d.querySelector('.plot-container')).length,
  empty: divs.filter(d => !d.querySelector('svg.main-svg')).map(d => d.id),
  images: document.querySelectorAll('img.map').length,
  broken: [...document.querySelectorAll('img.map')].filter(i => !(i.complete && i.naturalWidth > 0)).length,
  xss: window.__xss === undefined ? null : window.__xss,
};
"""


def _driver():  # noqa: ANN202 - selenium is optional
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(carve_study: Path, tmp_path: Path) -> None:
    index = build_report(carve_study, tmp_path / "report", max_points=50)
    driver = _driver()
    try:
        driver.set_page_load_timeout(60)
        driver.get(index.resolve().as_uri())
        probe = driver.execute_script(PROBE)
        logs = driver.get_log("browser")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, min(int(height), 12000))
        artifacts = Path(os.environ.get("MISMATCH_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(artifacts / "report-screenshot.png"))
    finally:
        driver.quit()
    severe = [entry for entry in logs if entry.get("level") == "SEVERE"]
    assert severe == [], severe
    assert probe["figures"] >= 6 and probe["rendered"] == probe["figures"], probe
    assert probe["images"] > 0 and probe["broken"] == 0, probe
    assert probe["xss"] is None, "a study string was executed as markup"
