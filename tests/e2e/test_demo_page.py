"""The demo page in a real headless Chromium (Debian's, driven by Playwright) against a real server on loopback.

Draws a 7 and a letter with pointer events, types a sentence, cleans a noisy image, triggers a 413, and with an
API key configured enters the key; checks every request stayed on 127.0.0.1 and the console shows no errors.
A screenshot of each state is saved under runs/demo-screenshots/ (a test artefact to look at).
"""

from __future__ import annotations


import numpy as np
import pytest

from modelcore.images import png_bytes
from service.operations.launch import ROOT

pytestmark = pytest.mark.e2e

SCREENSHOTS = ROOT / "runs" / "demo-screenshots"
MAX_REQUEST_BYTES = 300_000  # a 512x512 noisy photo is over it: the 413 case
KEY = "demo-key-0123456789abcdef"
SEVEN = [(60, 60), (220, 60), (120, 240)]
LETTER_W = [(30, 50), (80, 240), (140, 110), (200, 240), (250, 50)]


@pytest.fixture(scope="module")
def demo_server(start_server):
    return start_server(max_request_bytes=str(MAX_REQUEST_BYTES))


class Page:
    """One browser page on the demo, recording every request it makes and every console error."""

    def __init__(self, browser, url: str, width: int = 1100) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 1400})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        self.page.goto(f"{url}/demo")
        self.page.wait_for_selector("body[data-ready=true]")

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def draw(self, points: list[tuple[int, int]]) -> None:
        box = self.page.locator("#pad").bounding_box()
        scale = box["width"] / 280
        mouse = self.page.mouse
        mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
        mouse.down()
        for x, y in points[1:]:
            mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=12)
        mouse.up()

    def close(self) -> None:
        self.context.close()


def noisy_photo(side: int) -> bytes:
    """A smooth colour scene with Gaussian noise (sigma 25), as a PNG file."""
    y, x = np.mgrid[0:side, 0:side] / side
    scene = np.stack([0.5 + 0.3 * np.sin(4 * x), 0.5 + 0.3 * np.cos(3 * y), 0.5 + 0.2 * np.sin(5 * x * y)], axis=-1)
    noisy = scene * 255 + np.random.default_rng(0).normal(0, 25, scene.shape)
    return png_bytes(np.clip(noisy, 0, 255).astype(np.uint8))


def test_the_page_works_end_to_end_in_a_real_browser(browser, demo_server, tmp_path):
    demo = Page(browser, demo_server.url)
    page = demo.page
    demo.shot("1-start")

    demo.draw(SEVEN)
    page.wait_for_selector("#digits-result[data-label]")
    assert page.get_attribute("#digits-result", "data-label") == "7"
    assert page.get_attribute("#heat", "data-painted") == "true"
    assert page.is_hidden("#digits-ood")
    demo.shot("2-digit-seven-with-heat-map")

    page.click("#digits-clear")
    demo.draw(LETTER_W)
    page.wait_for_selector("#digits-result[data-in-distribution=false]")
    assert page.is_visible("#digits-ood") and "does not look like a digit" in page.inner_text("#digits-ood")
    demo.shot("3-letter-flagged")

    page.fill("#sentiment-text", "The crew was wonderful on this flight!")  # one word carries it (see the card's limits)
    page.click("#sentiment-classify")
    page.wait_for_selector("#sentiment-result[data-label=positive]")
    strongest = page.locator("#sentiment-words mark.strongest").all_inner_texts()
    assert "wonderful" in strongest, strongest
    demo.shot("4-sentiment-words")

    small = tmp_path / "noisy.png"
    small.write_bytes(noisy_photo(128))
    page.set_input_files("#denoise-file", str(small))
    page.fill("#sigma", "0")
    page.click("#denoise-run")
    page.wait_for_selector("#denoise-result[data-done=true]")
    assert page.is_visible("#clean-img") and page.is_visible("#uncertainty-map") and page.is_visible("#download")
    demo.shot("5-denoised")
    assert not demo.console_errors, demo.console_errors

    large = tmp_path / "large.png"
    large.write_bytes(noisy_photo(640))
    page.set_input_files("#denoise-file", str(large))
    page.click("#denoise-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "too large" in page.inner_text("#error")
    demo.shot("6-too-large")

    assert all(url.startswith(demo_server.url) or url.startswith(("data:", "blob:")) for url in demo.requests), demo.requests
    expected = [error for error in demo.console_errors if "413" in error]
    assert demo.console_errors == expected, demo.console_errors
    demo.close()


def test_the_page_is_readable_on_a_375_px_screen(browser, demo_server):
    demo = Page(browser, demo_server.url, width=375)
    overflow = demo.page.evaluate("document.documentElement.scrollWidth")
    demo.shot("7-phone-width")
    assert overflow <= 375
    assert demo.page.locator("#pad").bounding_box()["width"] <= 375
    demo.close()


def test_every_control_is_labelled_and_reachable_from_the_keyboard(browser, demo_server):
    demo = Page(browser, demo_server.url)
    unlabelled = demo.page.evaluate("""() => [...document.querySelectorAll('input, textarea, button, canvas[aria-label]')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.id)""")
    assert unlabelled == []
    demo.page.focus("#sentiment-text")
    demo.page.keyboard.press("Tab")
    assert demo.page.evaluate("document.activeElement.id") == "sentiment-classify"
    demo.page.keyboard.press("Enter")
    demo.page.wait_for_selector("#sentiment-result[data-label]")
    demo.close()


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser, start_server):
    guarded = start_server(api_key=KEY)
    demo = Page(browser, guarded.url)
    page = demo.page
    assert page.is_visible("#key-form")
    demo.shot("8-api-key-asked")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.fill("#sentiment-text", "Worst delay ever, never again.")
    page.click("#sentiment-classify")
    page.wait_for_selector("#sentiment-result[data-label=negative]")
    assert page.is_hidden("#error")
    demo.close()
