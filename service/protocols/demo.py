"""The demo page, GET /demo: draw a digit, type a sentence, clean a photo, and see why each model answered.

Plain HTML, CSS and JavaScript in service/protocols/demo_page/ (no build step, no framework), served by this
server with a Content-Security-Policy that allows nothing from another host. The page calls the public API like
any client (/digits/explain, /sentiment/explain, /denoise, /denoise/explain), with the API key the user types
when the server needs one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from service.operations.frontdoor import Call, Route
from service.operations.http import Response, json_response, page_policy, static_file
from service.operations.settings import Settings
from service.protocols.openapi import Operation

ASSETS = Path(__file__).resolve().parent / "demo_page"
SECURITY_HEADERS = page_policy("data: blob:")  # data: and blob: images (saliency maps, previews)
FILES = {"/demo": ("index.html", "text/html; charset=utf-8"),
         "/demo/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
         "/demo/demo.css": ("demo.css", "text/css; charset=utf-8")}


def routes(settings: Settings, models_settings: dict) -> list[Route]:
    """The page, its files, and what the page needs to know about this server (its limits, the models' own)."""

    async def config(_: Call) -> Response:
        return json_response({"api_key_required": settings.api_key is not None,
                              "max_request_bytes": settings.max_request_bytes, **models_settings})

    files = [Route(path, static(name, media_type), ("GET",)) for path, (name, media_type) in FILES.items()]
    return [*files, Route("/demo/config.json", config, ("GET",))]


def static(name: str, media_type: str) -> Callable:
    return static_file(ASSETS / name, media_type, SECURITY_HEADERS)


def operations() -> list[Operation]:
    html = {"type": "string"}
    settings = {"type": "object", "properties": {"api_key_required": {"type": "boolean"}}}
    return [Operation("get", "/demo", "The demo page: try every model in a browser", html, answer_types=("text/html",),
                      errors=(), tag="Demo"),
            Operation("get", "/demo/config.json", "What the demo page needs to know about this server", settings,
                      errors=(), tag="Demo")]
