"""Request deadline: a request whose response has not started within the timeout is cancelled and gets 504.

This replaces BentoML's own TimeoutMiddleware (bentoml 1.4.x, `bentoml._internal.server.http.traffic`),
which schedules `loop.call_later(timeout, ...)` per request and never cancels it: every finished request's
timer - and through its context the request's OpenTelemetry span, future and locks - stays alive for the
whole timeout. At 600 requests/s and a 25 s timeout that is ~15,000 requests' worth of live objects, and
each full garbage collection walks them: 100-150 ms pauses every few seconds, the p99 latency spikes
measured in docs/performance.md (entry 9). Here the deadline is cancelled as soon as the response starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bentoml._internal.server.http import traffic

from service.http import error_response

Scope = dict[str, Any]


class RequestTimeout:
    """ASGI middleware with the contract of BentoML's TimeoutMiddleware: the same `timeout` argument, and
    a 504 JSON answer when no response has started in time; streaming a started response has no deadline."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        response_started = loop.create_future()

        async def send_and_note(message: dict) -> None:
            if not response_started.done():
                response_started.set_result(None)
            await send(message)

        handling = asyncio.ensure_future(self.app(scope, receive, send_and_note))
        try:
            # asyncio.wait cancels its own timer when it returns: nothing outlives the request.
            done, _ = await asyncio.wait({response_started, handling}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            handling.cancel()
            raise
        if done:
            await handling
            return
        handling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handling
        await error_response(504, f"The request was not answered within {self.timeout:g} seconds; retry later, "
                                  "or send a smaller input.")(scope, receive, send)


def replace_bentoml_timeout() -> None:
    """Make BentoML build its app with RequestTimeout wherever it would use its TimeoutMiddleware."""
    traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc, assignment]
