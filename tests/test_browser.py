"""A real browser (headless Chromium via Playwright) uses the app like a person would.

Skipped where Debian's Chromium or the playwright package is missing; ``.ci/run``
installs both. The screenshot lands in ``test-artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest
from live import LiveApp

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
STEPS = 40


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-data")
    live = LiveApp(data, "--data-dir", str(data))
    yield live
    live.stop()


@pytest.fixture()
def page(tmp_path):
    with playwright.sync_playwright() as p:
        # A fresh user-data dir each run (Playwright passes it to Chromium for us).
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1800},
        )
        page = context.new_page()
        page.set_default_timeout(90_000)
        yield page
        context.close()


def test_learn_and_generate_in_the_browser(app, page, astronaut_path):
    page.goto(app.url)
    assert "Offline demo mode" in page.locator("#offline-banner").inner_text()

    # Upload: the aligned face and the face count appear.
    page.locator("input[type=file]").first.set_input_files(str(astronaut_path))
    page.get_by_text("1 face(s) found").wait_for()

    # Learn: the progress bar moves through the steps, then the identity appears.
    steps = page.get_by_label("number input for Steps").first
    steps.fill(str(STEPS))
    steps.press("Enter")
    page.locator("#learn-button").click()
    seen: set[int] = set()
    deadline = time.time() + 120
    while "Learned" not in page.locator("#learn-result").inner_text() and time.time() < deadline:
        seen |= {int(s) for s in re.findall(rf"step (\d+)/{STEPS}", page.locator("body").inner_text())}
        time.sleep(0.2)
    assert "Learned person" in page.locator("#learn-result").inner_text()
    assert len(seen) >= 3 and max(seen) > min(seen), f"progress did not move: {sorted(seen)}"
    assert len(page.locator("#identity-id input, #identity-id textarea").first.input_value()) == 32

    # Generate: the new identity is already picked; an image appears with its prompt and seed.
    page.get_by_role("tab", name="Generate").click()
    playwright.expect(page.locator("#identity-picker input")).to_have_value(re.compile(r"^person \("))
    page.locator("#generate-button").click()
    page.locator("#gallery img").first.wait_for()
    info = page.locator("#generate-info").inner_text()
    assert "<id> wearing a spacesuit" in info and re.search(r"Seeds: \d+", info)

    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "browser-generate.png"), full_page=True)
    print(f"screenshot: {out / 'browser-generate.png'}")
