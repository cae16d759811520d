"""Send many requests to a running server with N concurrent clients; keep answers, latencies and errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np


@dataclass
class Load:
    """What came back from one run: JSON answers (None for failures) in request order, and timing."""

    answers: list[Any]
    latencies: np.ndarray  # seconds per request
    seconds: float

    @property
    def errors(self) -> int:
        return sum(answer is None for answer in self.answers)

    def summary(self, items_per_request: int = 1) -> dict[str, float]:
        p50, p95, p99 = np.percentile(self.latencies * 1000, [50, 95, 99])
        return {
            "requests": len(self.answers),
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(len(self.answers) / self.seconds, 1),
            "items_per_second": round(len(self.answers) * items_per_request / self.seconds, 1),
            "latency_ms_p50": round(float(p50), 2),
            "latency_ms_p95": round(float(p95), 2),
            "latency_ms_p99": round(float(p99), 2),
        }


def post_all(url: str, path: str, requests: list[dict[str, Any]], concurrency: int) -> Load:
    """POST each request (httpx keyword arguments, e.g. files= or json=) to `path`, `concurrency` at a time."""
    return asyncio.run(_post_all(url, path, requests, concurrency))


async def _post_all(url: str, path: str, requests: list[dict[str, Any]], concurrency: int) -> Load:
    answers: list[Any] = [None] * len(requests)
    latencies = np.zeros(len(requests))
    pending = iter(range(len(requests)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one_client(client: httpx.AsyncClient) -> None:
        for index in pending:  # the clients share one iterator: each request is sent once
            started = time.perf_counter()
            response = await client.post(path, **requests[index])
            latencies[index] = time.perf_counter() - started
            if response.status_code == 200:
                answers[index] = response.json()

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        await asyncio.gather(*(one_client(client) for _ in range(concurrency)))
    return Load(answers, latencies, time.perf_counter() - started)
