"""No-op endpoints that measure the transport alone (HTTP, parsing, validation, JSON answer), no model,
a view of the worker's event loop and heap, and a request that holds its place for a given time.

Only served when MODEL_SERVER_DIAGNOSTICS=true: the benchmark (loadtest/benchmark.py) compares each
model endpoint with them to see how much of a request's cost is the model and how much the server. The tests
use /diagnostics/hold to provoke timeouts, capacity limits and shutdown drains the same way on any machine.
"""

import asyncio
import gc
from pathlib import Path
from typing import Annotated

import bentoml
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.http import error_response
from service.settings import get_settings

settings = get_settings()


class DiagnosticsAPI:
    """Mixed into the ModelServer when diagnostics are on: /diagnostics/noop-*."""

    @bentoml.api(route="/diagnostics/noop-upload")
    async def noop_upload(self, image: Path) -> dict:
        """Accept one multipart upload like /digits/classify and answer its size."""
        return {"bytes": image.stat().st_size}

    @bentoml.api(route="/diagnostics/noop-texts")
    async def noop_texts(
        self, texts: Annotated[list[str], Field(min_length=1, max_length=settings.max_items_per_request)]
    ) -> dict:
        """Accept texts like /sentiment/classify and answer how many."""
        return {"items": len(texts)}


async def noop_body(request: Request) -> JSONResponse:
    """POST /diagnostics/noop-body: read a raw body like /digits/classify-image and answer its size."""
    return JSONResponse({"bytes": len(await request.body())})


async def runtime_state(_: Request) -> JSONResponse:
    """GET /diagnostics/runtime: timers pending on this worker's event loop and objects the GC tracks.

    Timers should not outlive requests (service/timeouts.py); the test under load checks it here.
    """
    scheduled = getattr(asyncio.get_running_loop(), "_scheduled", None)  # asyncio's timer heap; not in uvloop
    return JSONResponse({
        "scheduled_timers": None if scheduled is None else sum(not timer.cancelled() for timer in scheduled),
        "gc_tracked_objects": len(gc.get_objects()),
        "gc_frozen_objects": gc.get_freeze_count(),
    })


MAX_HOLD_S = 600.0


async def hold(request: Request) -> JSONResponse:
    """POST /diagnostics/hold?seconds=S: stay in flight for S seconds (no CPU used), then answer.

    A request that takes exactly as long as asked, whatever the machine: what the tests use to exceed the
    request timeout, fill the admission limit, or be in flight when a shutdown starts.
    """
    try:
        seconds = float(request.query_params.get("seconds", "1"))
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_HOLD_S:
        return error_response(400, f"seconds must be a number from 0 to {MAX_HOLD_S:g}, e.g. /diagnostics/hold?seconds=2")
    await asyncio.sleep(seconds)
    return JSONResponse({"held_s": seconds})
