"""ASGI middleware that protects the inference endpoints: API-key authentication and admission control.

Both answer before the request body is read or any model work starts, with the service's one error
shape ({"error": ...}), so a rejected request costs microseconds and no memory.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from service.http import error_response
from service.lifecycle import STATE
from service.metrics import count_rejection
from service.settings import OPERATIONS_PATHS, PAGE_PATHS

Scope = dict[str, Any]


class ApiKeyAuth:
    """Require `Authorization: Bearer <key>` or `X-API-Key: <key>` on every path not in `exempt_paths`.

    One 401 message for a missing and a wrong key (nothing tells a caller which part failed), and the
    comparison takes the same time however much of the key matched.
    """

    def __init__(self, app: Any, api_key: str, exempt_paths: frozenset[str]) -> None:
        self.app = app
        self.expected = api_key.encode("utf-8")
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        # CORS preflights (OPTIONS) never carry credentials; the CORS layer answers them.
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in self.exempt_paths:
            return await self.app(scope, receive, send)
        if self._authorised(scope):
            return await self.app(scope, receive, send)
        count_rejection("unauthorised")
        response = error_response(
            401, "Missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
        )
        response.headers["www-authenticate"] = 'Bearer realm="modelserver"'
        await response(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        presented = _presented_key(scope.get("headers", ()))
        # compare_digest on bytes is constant-time in the key's content.
        return presented is not None and hmac.compare_digest(presented, self.expected)


def _presented_key(headers: Any) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


class AdmissionLimit:
    """At most `max_in_flight` requests inside this worker; the rest get 503 with Retry-After at once.

    Bounding what is admitted bounds the queue in front of the models, hence latency and memory: under
    a spike, callers are told to come back instead of waiting without limit. While the worker drains
    for shutdown every new request gets 503. Probe and metrics paths are never counted or refused.
    """

    def __init__(self, app: Any, max_in_flight: int, retry_after_s: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s)

    @property
    def in_flight(self) -> int:
        return STATE.in_flight

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in OPERATIONS_PATHS or scope["path"] in PAGE_PATHS:
            return await self.app(scope, receive, send)
        if STATE.draining:
            return await self._reject(scope, receive, send, "shutting_down", "Server is shutting down")
        if STATE.in_flight >= self.max_in_flight:
            return await self._reject(
                scope, receive, send, "overloaded",
                f"Server at capacity ({self.max_in_flight} requests in progress in this worker, "
                "MODEL_SERVER_MAX_CONCURRENT_REQUESTS)",
            )
        STATE.in_flight += 1  # one event loop per worker: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            STATE.in_flight -= 1

    async def _reject(self, scope: Scope, receive: Callable, send: Callable, reason: str, why: str) -> None:
        count_rejection(reason)
        response = error_response(
            503, f"{why}; retry after {self.retry_after} s, or send fewer concurrent requests with more items each."
        )
        response.headers["retry-after"] = self.retry_after
        if reason == "shutting_down":
            response.headers["connection"] = "close"  # the retry should open a connection elsewhere
        await response(scope, receive, send)
