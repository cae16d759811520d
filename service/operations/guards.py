"""What protects the server before any work starts: API-key authentication and admission control.

Both answer before the request body is read or any model work starts, with the one error shape, so a refused
request costs microseconds and no memory. The front door (frontdoor.py) asks them about every request.
"""

from __future__ import annotations

import hmac
from typing import Any

from service.operations.http import Response, error_response
from service.operations.lifecycle import STATE
from service.operations.metrics import count_rejection
from service.operations.settings import OPERATIONS_PATHS, PAGE_PATHS

UNAUTHORISED = "Missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."


class ApiKey:
    """Require `Authorization: Bearer <key>` or `X-API-Key: <key>` on every path not in `exempt_paths`.

    One 401 message for a missing and a wrong key (nothing tells a caller which part failed), and the
    comparison takes the same time however much of the key matched.
    """

    def __init__(self, api_key: str, exempt_paths: frozenset[str]) -> None:
        self.expected = api_key.encode("utf-8")
        self.exempt_paths = exempt_paths

    def refusal(self, scope: dict) -> Response | None:
        """The 401 answer for a request without the right key, else None."""
        # CORS preflights (OPTIONS) never carry credentials; the CORS layer answers them.
        if scope["method"] == "OPTIONS" or scope["path"] in self.exempt_paths or self.authorised(scope["headers"]):
            return None
        count_rejection("unauthorised")
        return error_response(401, UNAUTHORISED, headers={"www-authenticate": 'Bearer realm="modelserver"'})

    def authorised(self, headers: Any) -> bool:
        presented = presented_key(headers)
        # compare_digest on bytes is constant-time in the key's content.
        return presented is not None and hmac.compare_digest(presented, self.expected)


def presented_key(headers: Any) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


class Admission:
    """At most `max_in_flight` requests inside this worker; the rest get 503 with Retry-After at once.

    Bounding what is admitted bounds the queue in front of the models, hence latency and memory: under a spike,
    callers are told to come back instead of waiting without limit. While the worker drains for shutdown every
    new request gets 503. Probe, metrics and demo-page paths are never counted or refused.
    """

    def __init__(self, max_in_flight: int, retry_after_s: int) -> None:
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s)

    @staticmethod
    def counts(path: str) -> bool:
        return path not in OPERATIONS_PATHS and path not in PAGE_PATHS

    def refusal(self) -> Response | None:
        """The 503 answer when draining or at capacity, else None (the caller then counts itself in)."""
        if STATE.draining:
            return self.refused("shutting_down", "Server is shutting down")
        if STATE.in_flight >= self.max_in_flight:
            return self.refused("overloaded", f"Server at capacity ({self.max_in_flight} requests in progress in this "
                                              "worker, MODEL_SERVER_MAX_CONCURRENT_REQUESTS)")
        return None

    def refused(self, reason: str, why: str) -> Response:
        count_rejection(reason)
        response = error_response(
            503, f"{why}; retry after {self.retry_after} s, or send fewer concurrent requests with more items each.",
            headers={"retry-after": self.retry_after},
        )
        if reason == "shutting_down":
            response.set_header("connection", "close")  # the retry should open a connection elsewhere
        return response
