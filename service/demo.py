"""The demo page, GET /demo: draw a digit, type a sentence, clean a photo, and see why each model answered.

Plain HTML, CSS and JavaScript in service/demo/ (no build step, no framework), served by this server with a
Content-Security-Policy that allows nothing from another host. The page calls the public API like any client
(/digits/explain, /sentiment/explain, /denoise, /denoise/explain), with the API key the user types when the
server needs one.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service.openapi import Operation
from service.settings import get_settings

ASSETS = Path(__file__).resolve().parent / "demo"
# Everything from this server; inline style attributes (bar widths), data: and blob: images (maps, previews).
POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class Assets(StaticFiles):
    """The page's files, each answered with the page's security headers."""

    async def get_response(self, path: str, scope: dict):
        response = await super().get_response(path, scope)
        response.headers.update(security_headers())
        return response


def security_headers() -> dict[str, str]:
    return {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


async def page(_: Request) -> FileResponse:
    return FileResponse(ASSETS / "index.html", headers=security_headers())


async def config(_: Request) -> JSONResponse:
    """What the page needs to know about this server: whether it needs an API key, and its size limits."""
    settings = get_settings()
    return JSONResponse({"api_key_required": settings.api_key is not None,
                         "max_request_bytes": settings.max_request_bytes,
                         "max_denoise_pixels": settings.max_denoise_pixels})


def routes() -> list:
    return [Route("/demo", page, methods=["GET"]), Route("/demo/config.json", config, methods=["GET"]),
            Mount("/demo", Assets(directory=ASSETS))]


def operations() -> list[Operation]:
    html = {"type": "string"}
    settings = {"type": "object", "properties": {"api_key_required": {"type": "boolean"}}}
    return [Operation("get", "/demo", "The demo page: try every model in a browser", html, answer_types=("text/html",),
                      errors=(), tag="Demo"),
            Operation("get", "/demo/config.json", "What the demo page needs to know about this server", settings,
                      errors=(), tag="Demo")]
