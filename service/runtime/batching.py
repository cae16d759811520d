"""Adaptive batching inside one worker: concurrent requests for a model share one inference call.

No batch waits for company it does not have: a lone request runs at once, and while a batch runs, the requests
that arrive meanwhile queue and form the next one, which starts as soon as the previous one is done (continuous
batching; a batch can also be held up to `max_wait_ms` to fill, when that is configured). A batch expected to take
less than `inline_budget_s` (rows times the time per row measured so far) runs on the event loop itself: for a
one-image request the hand-off to a thread and back cost more than the model (docs/performance.md). Longer ones run
on the model's inference thread, so the loop keeps answering probes and refusing excess load meanwhile. The time is
estimated per input value (rows of different sizes - tiles, token sequences - cost what their values cost). A batch
also stops growing once its expected time reaches `max_batch_s`: where batching buys no speed (a denoising tile
costs the same alone or in company), a bigger batch only makes every request in it wait for all of them.

BentoML's own batching needs the public endpoint to call a batched endpoint of the service (`self.to_async`), and
that internal call drops requests under concurrency in BentoML 1.4.30-1.4.39 (upstream threads bentoml/BentoML#5540
and #4971; fix proposed in PR #5698). This batcher sits behind each endpoint instead, so every request is validated
on its own (its own 4xx) and only clean arrays ever reach a batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("bentoml.modelserver")

SMOOTHING = 0.2  # weight of the newest batch in the running time-per-row estimate


@dataclass
class _Request:
    payload: Any  # one request's inputs
    rows: int  # how many items it holds
    values: int  # how many input values: what its inference costs in proportion to
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Queue requests, run them in batches of up to `max_batch_size` rows, one batch at a time.

    `run` takes the payloads of one batch and returns one output per payload, in order. With `batchable` false
    (a graph with a fixed batch axis) every request runs alone.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch_size: int,
        max_wait_ms: float,
        name: str,
        on_batch: Callable[[int, float], None] | None = None,
        inline_budget_s: float = 0.0,
        batchable: bool = True,
        max_batch_s: float = float("inf"),
    ) -> None:
        self._run = run
        self._max_rows = max_batch_size
        self._max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch or (lambda rows, seconds: None)
        self._inline_budget = inline_budget_s
        self._batchable = batchable
        self._max_batch_s = max_batch_s
        self._seconds_per_value: float | None = None  # measured; until then, batches run on the inference thread
        self._pending: collections.deque[_Request] = collections.deque()
        self._pending_rows = 0
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        # One inference thread per model: batches run one after another, each using the session's threads.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-inference")

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @property
    def max_wait_s(self) -> float:
        return self._max_wait

    def note_run(self, values: int, seconds: float) -> None:
        """Fold a measured inference time into the per-value estimate (the session's warm-up calls this too)."""
        per_value = seconds / max(values, 1)
        known = self._seconds_per_value
        self._seconds_per_value = per_value if known is None else (1 - SMOOTHING) * known + SMOOTHING * per_value

    def runs_inline(self, values: int) -> bool:
        return self._seconds_per_value is not None and values * self._seconds_per_value <= self._inline_budget

    async def predict(self, payload: Any, rows: int, values: int = 1) -> Any:
        """The output for one request's payload of `rows` items (`values` input values), computed in a batch with
        whatever else is queued."""
        self._ensure_started()
        request = _Request(payload, rows, values, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._pending_rows += rows
        self._arrived.set()
        return await request.future

    def _ensure_started(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._arrived = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._serve_forever())

    async def _serve_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run_batch(batch)

    async def _next_batch(self) -> list[_Request]:
        """Wait for a request; with a batch wait configured, give others up to that long to join; take the queue."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        if self._max_wait > 0 and self._batchable:
            deadline = asyncio.get_running_loop().time() + self._max_wait
            while self._pending_rows < self._max_rows:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
        return self._take_batch()

    def _take_batch(self) -> list[_Request]:
        batch, rows, values = [], 0, 0
        while self._pending and (not batch or self._fits(rows, values, self._pending[0])):
            request = self._pending.popleft()
            self._pending_rows -= request.rows
            if not request.future.done():  # the client may have gone away meanwhile
                batch.append(request)
                rows += request.rows
                values += request.values
        return batch

    def _fits(self, rows: int, values: int, following: _Request) -> bool:
        """Whether the next request still joins a batch of `rows` rows and `values` input values."""
        if not self._batchable or rows + following.rows > self._max_rows:
            return False
        per_value = self._seconds_per_value
        return per_value is None or (values + following.values) * per_value <= self._max_batch_s

    async def _run_batch(self, batch: list[_Request]) -> None:
        rows = sum(request.rows for request in batch)
        values = sum(request.values for request in batch)
        payloads = [request.payload for request in batch]
        started = time.perf_counter()
        try:
            if self.runs_inline(values):
                outputs = self._run(payloads)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._run, payloads)
        except Exception as exc:  # a fault of the model itself: every request in the batch shares it
            log.exception("inference failed for a batch of %d rows", rows)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        self.note_run(values, elapsed)
        self._on_batch(rows, elapsed)
        for request, output in zip(batch, outputs):
            if not request.future.done():
                request.future.set_result(output)

    def close(self) -> None:
        """Stop the batching loop and the inference thread."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
