"""Graceful shutdown of a worker: on SIGTERM, refuse new requests with 503 and finish the ones in flight.

Left alone, uvicorn stops accepting connections on SIGTERM while BentoML's supervisor keeps the listening
socket open until every worker has exited, so a connection made during the drain would hang unanswered.
Here the worker keeps accepting while it drains: new requests get 503 + Retry-After (and `/readyz` turns
503, so load balancers stop routing here), in-flight requests finish, then uvicorn's own shutdown runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Awaitable, Callable

log = logging.getLogger("bentoml.modelserver")


@dataclass
class WorkerState:
    """What admission control and readiness need to know about this worker process."""

    in_flight: int = 0
    draining: bool = False


STATE = WorkerState()
# Coroutines run when the drain starts (e.g. gRPC health to NOT_SERVING) and once it is over (e.g. stop gRPC).
ON_DRAIN: list[Callable[[], Awaitable[None]]] = []
ON_DRAINED: list[Callable[[], Awaitable[None]]] = []


def drain_on_sigterm(grace_s: float) -> None:
    """Replace the running server's SIGTERM handler with: drain (at most `grace_s`), then that handler.

    Call from inside the worker's event loop, after uvicorn installed its handlers (service start-up).
    A second SIGTERM skips the drain.
    """
    stop_server = signal.getsignal(signal.SIGTERM)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None or not callable(stop_server):  # not under a server (e.g. the class used in-process)
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if STATE.draining:
            stop_server(signum, frame)
            return
        STATE.draining = True
        log.info("SIGTERM: refusing new requests, draining %d in flight (at most %.0f s)", STATE.in_flight, grace_s)
        loop.call_soon_threadsafe(lambda: loop.create_task(_stop_when_drained(stop_server, signum, grace_s)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _stop_when_drained(stop_server: Callable, signum: int, grace_s: float) -> None:
    for hook in ON_DRAIN:
        await hook()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while STATE.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if STATE.in_flight:
        log.warning("drain grace of %.0f s over with %d requests in flight; stopping anyway", grace_s, STATE.in_flight)
    else:
        log.info("drained; stopping")
    for hook in ON_DRAINED:
        await hook()
    stop_server(signum, None)
