"""The API page at / and /docs: Swagger UI rendering /docs.json, from files this server ships, with no request
leaving the machine (BentoML's own page loads Google Tag Manager). /docs.json is the completed OpenAPI document
(service/protocols/openapi.py), built once per worker.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from service.operations.frontdoor import Call, Route
from service.operations.http import Response, json_response, page_policy, static_file
from service.protocols.openapi import Operation

ASSETS = Path(__file__).resolve().parent / "docs_page"
SECURITY_HEADERS = page_policy("data:")  # data: images (Swagger UI's icons)
FILES = {"/docs/docs.js": ("docs.js", "text/javascript; charset=utf-8"), "/docs/docs.css": ("docs.css", "text/css")}


def routes(spec: Callable[[], dict[str, Any]]) -> list[Route]:
    """The page at / and /docs, its two files, and /docs.json answered from `spec()` (computed once)."""
    document = functools.cache(spec)

    async def openapi(_: Call) -> Response:
        return json_response(document())

    page = static("index.html", "text/html; charset=utf-8")
    found = [Route("/", page, ("GET",)), Route("/docs", page, ("GET",)), Route("/docs.json", openapi, ("GET",))]
    return found + [Route(path, static(name, media), ("GET",)) for path, (name, media) in FILES.items()]


def static(name: str, media_type: str) -> Callable:
    return static_file(ASSETS / name, media_type, SECURITY_HEADERS)


def operations() -> list[Operation]:
    html = {"type": "string"}
    return [Operation("get", path, "The API page: Swagger UI over /docs.json, served offline", html,
                      answer_types=("text/html",), errors=("401", "503", "504"), tag="Documentation")
            for path in ("/", "/docs")] + [
        Operation("get", "/docs.json", "This OpenAPI document", {"type": "object"}, errors=("401", "503", "504"),
                  tag="Documentation")]
