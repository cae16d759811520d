"""No-op endpoints that measure the transport alone (HTTP, parsing, validation, JSON answer), no model,
a view of the worker's event loop and heap, and a request that holds its place for a given time.

Only served when MODEL_SERVER_DIAGNOSTICS=true: the benchmark (loadtest/benchmark.py) compares each
model endpoint with them to see how much of a request's cost is the model and how much the server. The tests
use /diagnostics/hold to provoke timeouts, capacity limits and shutdown drains the same way on any machine.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Annotated

from pydantic import BaseModel, Field

from service.models.contract import JsonBody, Multipart
from service.operations.frontdoor import Call, Route
from service.operations.http import Response, error_response, json_response
from service.operations.settings import get_settings
from service.protocols.rest import parse_json, parse_multipart

MAX_HOLD_S = 600.0
UPLOAD = Multipart(files=("image",))


class NoopTexts(BaseModel):
    texts: Annotated[list[str], Field(min_length=1, max_length=get_settings().max_items_per_request)]


async def noop_upload(call: Call) -> Response:
    """POST /diagnostics/noop-upload: parse one multipart upload like /digits/classify and answer its size."""
    return json_response({"bytes": len(parse_multipart(UPLOAD, call)["image"].data)})


async def noop_texts(call: Call) -> Response:
    """POST /diagnostics/noop-texts: validate texts like /sentiment/classify and answer how many."""
    return json_response({"items": len(parse_json(JsonBody(NoopTexts), call)["texts"])})


async def noop_body(call: Call) -> Response:
    """POST /diagnostics/noop-body: take a raw body like /digits/classify-image and answer its size."""
    return json_response({"bytes": len(call.body)})


async def runtime_state(_: Call) -> Response:
    """GET /diagnostics/runtime: timers pending on this worker's event loop and objects the GC tracks.

    Timers should not outlive requests (the front door's deadlines are cancelled with them); the test under load
    checks it here.
    """
    scheduled = getattr(asyncio.get_running_loop(), "_scheduled", None)  # asyncio's timer heap; not in uvloop
    return json_response({
        "scheduled_timers": None if scheduled is None else sum(not timer.cancelled() for timer in scheduled),
        "gc_tracked_objects": len(gc.get_objects()),
        "gc_frozen_objects": gc.get_freeze_count(),
    })


async def hold(call: Call) -> Response:
    """POST /diagnostics/hold?seconds=S: stay in flight for S seconds (no CPU used), then answer.

    A request that takes exactly as long as asked, whatever the machine: what the tests use to exceed the
    request timeout, fill the admission limit, or be in flight when a shutdown starts.
    """
    try:
        seconds = float(call.query().get("seconds", "1"))
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_HOLD_S:
        return error_response(400, f"seconds must be a number from 0 to {MAX_HOLD_S:g}, e.g. /diagnostics/hold?seconds=2")
    await asyncio.sleep(seconds)
    return json_response({"held_s": seconds})


def routes() -> list[Route]:
    return [Route("/diagnostics/noop-upload", noop_upload, model="diagnostics"),
            Route("/diagnostics/noop-texts", noop_texts, model="diagnostics"),
            Route("/diagnostics/noop-body", noop_body, model="diagnostics"),
            Route("/diagnostics/runtime", runtime_state, ("GET",), model="diagnostics"),
            Route("/diagnostics/hold", hold, model="diagnostics")]
