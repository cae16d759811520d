"""The HTTP answers every route shares: one small ASGI response, the one error shape, and what a 4xx logs.

Errors are {"error": "<what is wrong and what to send instead>"}, with "detail" (a list naming each offending
field) for request-schema errors. Every answer carries the request's id (X-Request-ID, set by the front door);
logs name it too, never a payload.
"""

from __future__ import annotations

import contextvars
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from service.operations.metrics import count_client_error

log = logging.getLogger("bentoml.modelserver")

# The id of the request being answered (the client's X-Request-ID, or one made up by the front door).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Response:
    """A complete answer, sent in two ASGI messages; also an ASGI app itself (response(scope, receive, send))."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, body: bytes, status: int = 200, media_type: str = "application/json",
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        if headers:
            self.headers += [(name.lower().encode(), str(value).encode()) for name, value in headers.items()]

    def set_header(self, name: str, value: str) -> None:
        self.headers.append((name.lower().encode(), value.encode()))

    async def send(self, send: Callable) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self.send(send)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(payload), status, headers=headers)


def page_policy(images: str) -> dict[str, str]:
    """Headers for a page this server ships: everything from this server (inline style attributes for bar widths and
    Swagger UI), images also from `images`, nothing from another host."""
    policy = (f"default-src 'self'; img-src 'self' {images}; style-src 'self' 'unsafe-inline'; script-src 'self'; "
              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def static_file(path: Path, media_type: str, headers: Mapping[str, str]) -> Callable:
    """A handler answering one shipped file, read once."""
    content = path.read_bytes()

    async def serve(_: Any) -> Response:
        return Response(content, media_type=media_type, headers=dict(headers))

    return serve


def error_response(status: int, message: str, detail: list | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    """The one error body shape: {"error": "<what went wrong and what to send instead>"[, "detail": [...]]}."""
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return json_response(body, status, headers)


def client_error(model: str, status: int, message: str, detail: list | None = None) -> Response:
    """A client mistake's answer, logged and counted. Payloads never reach the log: only the status and our message."""
    log.info("%s: %d %s (request %s)", model, status, message, REQUEST_ID.get())
    count_client_error(model, status)
    return error_response(status, message, detail)
