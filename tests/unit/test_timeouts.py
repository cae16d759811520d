"""service.timeouts.RequestTimeout: BentoML's request-timeout contract, without timers outliving requests."""

import asyncio
import json

import pytest

from service.timeouts import RequestTimeout


def http_scope() -> dict:
    return {"type": "http", "method": "POST", "path": "/x", "headers": []}


async def call(app, timeout: float = 0.2) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await RequestTimeout(app, timeout)(http_scope(), receive, send)
    return sent


async def answer_then_stream(body_after: float, scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(body_after)  # streaming the body may take longer than the deadline
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_slow_request_is_cancelled_and_answered_504_in_json():
    cancelled = []

    async def slow(scope, receive, send):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    sent = asyncio.run(call(slow))
    assert sent[0]["status"] == 504 and cancelled
    assert "0.2 seconds" in json.loads(sent[1]["body"])["error"]


def test_a_started_response_may_finish_after_the_deadline():
    sent = asyncio.run(call(lambda *args: answer_then_stream(0.5, *args), timeout=0.2))
    assert [message.get("status") for message in sent] == [200, None] and sent[1]["body"] == b"ok"


def test_an_error_before_any_response_surfaces_at_once_not_after_the_timeout():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RuntimeError):
            await call(broken, timeout=60)
        return loop.time() - started

    assert asyncio.run(timed()) < 30


def test_no_timer_is_left_on_the_loop_after_requests():
    async def many() -> int:
        for _ in range(200):
            await call(lambda *args: answer_then_stream(0, *args), timeout=30)
        loop = asyncio.get_running_loop()
        return sum(not timer.cancelled() for timer in loop._scheduled)

    assert asyncio.run(many()) == 0
