"""The API page (Swagger UI at / and /docs) in a real headless Chromium against a real server on loopback: it
renders every operation from /docs.json with no request leaving the machine (any non-loopback request is blocked
and fails the test), under a Content-Security-Policy, with no console error; the spec says what the server is."""

from __future__ import annotations

from importlib.metadata import version
from urllib.parse import urlparse

import httpx
import pytest

from service.operations.launch import ROOT

pytestmark = pytest.mark.e2e
SCREENSHOTS = ROOT / "runs" / "demo-screenshots"
LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_the_api_page_renders_offline_with_no_outside_request(browser, server_url, path):
    context = browser.new_context(viewport={"width": 1200, "height": 1600})
    outside, loaded, console_errors = [], [], []

    def only_loopback(route) -> None:
        if urlparse(route.request.url).hostname in LOOPBACK:
            loaded.append(route.request.url)
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    response = page.goto(server_url + path)
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    rendered = page.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
    title = page.locator(".swagger-ui .info .title").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"api-page{path.replace('/', '-') or '-root'}.png"))
    context.close()

    assert not outside, f"the page asked for outside resources: {outside}"
    assert any(url.endswith("/docs.json") for url in loaded)
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert {"/digits/classify", "/sentiment/classify", "/denoise", "/v2/models/{model}/infer"} <= {
        text.replace("\u200b", "") for text in rendered}
    assert title.startswith("modelserver") and version("modelserver") in title
    assert not console_errors, console_errors


def test_the_spec_says_what_the_server_is(client):
    info = client.get("/docs.json").json()["info"]
    assert info["title"] == "modelserver" and info["version"] == version("modelserver")
    assert "Open Inference Protocol" in info["description"] and "BentoML" not in info["description"]


def test_the_page_and_its_files_are_served_by_the_server_itself(server_url):
    with httpx.Client(base_url=server_url, timeout=30) as client:
        page = client.get("/docs").text
        for asset in ("/static_content/swagger-ui-bundle.js", "/static_content/swagger-ui.css", "/docs/docs.js"):
            assert asset in page and client.get(asset).status_code == 200, asset
        assert "googletagmanager" not in page and "https://" not in page
