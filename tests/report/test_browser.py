"""Open a built report in real headless Chromium: no console errors, every figure rendered.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped when
they are absent. A screenshot of the whole page is kept in ``$MISMATCH_ARTIFACTS`` (default: the
test's temporary folder) as an artifact of the run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from mismatch.report import build_report
from mismatch.report.palette import METHOD_ORDER
from tests.synthetic_study import SyntheticGrid, write_synthetic_study

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


# Axis titles, colours per trace name, p-value texts and widths, as the page shows them.
COSMETICS = """
const figs = [...document.querySelectorAll('.plotly-graph-div')];
const axisTitles = (d, axis) => [...d.querySelectorAll('text')]
  .filter(t => new RegExp('^' + axis + '\\\\d*title$').test(t.getAttribute('class') || ''))
  .map(t => t.textContent.trim()).filter(Boolean);
const colours = id => {
  const d = document.getElementById(id); const out = {};
  if (!d || !d.data) return out;
  for (const t of d.data) {
    if (Array.isArray(t.x) && Array.isArray(t.marker && t.marker.color)) {
      t.x.forEach((x, i) => { out[x] = t.marker.color[i]; });
    } else if (t.name && !t.name.endsWith(' fit') && !t.name.startsWith('mean conf') && !t.name.startsWith('perfect')) {
      out[t.name.replace(/ accuracy$/, '')] = (t.line && t.line.color) || (t.marker && t.marker.color);
    }
  }
  return out;
};
const pTexts = [];
for (const table of document.querySelectorAll('table')) {
  const head = [...table.querySelectorAll('thead th')].map(h => h.textContent);
  head.forEach((h, i) => {
    if (/\\bp\\b/.test(h)) {
      table.querySelectorAll('tbody tr').forEach(r => { if (r.children[i]) pTexts.push(r.children[i].textContent); });
    }
  });
}
for (const m of document.body.innerText.matchAll(/\\bp (?:=|<|below) ?[^ ;,)]+/g)) pTexts.push(m[0]);
const visual = document.querySelector('table.visual');
const main = document.querySelector('#main table');
return {
  missingTitles: figs.filter(d => !axisTitles(d, 'x').length || !axisTitles(d, 'y').length).map(d => d.id),
  curves: colours('fig5'), scatter: colours('fig9'), bars: colours('fig8'), ranks: colours('rank-stability'),
  pTexts: pTexts,
  visualWidth: visual ? visual.getBoundingClientRect().right : null,
  mainWidth: main ? main.getBoundingClientRect().width : null,
  pageWidth: document.documentElement.scrollWidth,
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


@pytest.mark.slow  # a real browser: CI runs it; the developer loop leaves it out
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


@pytest.fixture(scope="module")
def thirteen_methods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study of all 13 known methods (issue 14's five included): 2 counts, 3 folds."""
    nan = float("nan")
    variants = tuple((m, "mm" if m == "mismatch" else "unet", 0.002 if m == "mismatch" else nan)
                     for m in METHOD_ORDER)
    grid = SyntheticGrid(variants, counts=(5, 10), replicates=(0, 1, 2), images_per_trial=4, study="thirteen")
    return write_synthetic_study(tmp_path_factory.mktemp("storage13"), grid, prediction_replicates=(0,))


@pytest.mark.slow
@pytest.mark.browser
def test_report_cosmetics_in_headless_chromium(thirteen_methods: Path, tmp_path: Path) -> None:
    """At 1400 x 900: axis titles on every figure, one colour per method across figures, no p-value in
    scientific notation, Fig. 7 inside the window with 13 methods, and no horizontal page scroll."""
    index = build_report(thirteen_methods, tmp_path / "report", max_points=50)
    driver = _driver()
    try:
        driver.set_window_size(1400, 900)
        driver.set_page_load_timeout(60)
        driver.get(index.resolve().as_uri())
        probe = driver.execute_script(COSMETICS)
        artifacts = Path(os.environ.get("MISMATCH_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.getElementById('main').scrollIntoView()")
        assert driver.save_screenshot(str(artifacts / "report-13-methods-main.png"))
        driver.execute_script("document.getElementById('visual').scrollIntoView()")
        assert driver.save_screenshot(str(artifacts / "report-13-methods-fig7.png"))
    finally:
        driver.quit()
    assert probe["missingTitles"] == [], probe["missingTitles"]
    curves = probe["curves"]
    assert set(METHOD_ORDER) <= set(curves) and len(set(curves.values())) == len(curves), curves
    for other in (probe["scatter"], probe["bars"], probe["ranks"] or curves):
        shared = set(curves) & set(other)
        assert len(shared) >= 2 and all(curves[m] == other[m] for m in shared), (curves, other)
    assert probe["pTexts"] and not [t for t in probe["pTexts"] if re.search(r"e[+-]?\d", t)], probe["pTexts"]
    assert probe["visualWidth"] is not None and probe["visualWidth"] <= 1400, probe
    assert probe["pageWidth"] <= 1400, probe
    assert probe["mainWidth"] is not None and probe["mainWidth"] <= 1400 - 32, probe  # 13 methods, no scrolling
