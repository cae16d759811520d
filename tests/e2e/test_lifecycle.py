"""Process faults and shutdown on a real server: a killed worker is replaced, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest

from tests.e2e.calls import denoise, denoised_is_right, every_endpoint_answers_correctly, noisy_png

pytestmark = pytest.mark.e2e

RECOVERY_SECONDS = 90
GRACE_SECONDS = 30  # what deploy/ gives a pod to stop; the server must exit well within it
SLOW_SIZE = 384  # a denoise upload that takes a noticeable fraction of a second here


@pytest.fixture(scope="module")
def server(start_server):
    return start_server()


def test_a_killed_worker_is_replaced_and_requests_succeed_again(server):
    (worker,) = server.workers()
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)

    deadline = time.monotonic() + RECOVERY_SECONDS
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                if server.ready() and every_endpoint_answers_correctly(client):
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"no correct answers {RECOVERY_SECONDS} s after the worker was killed:\n{server.log_tail()}")
    assert [p.pid for p in server.workers()] != [worker.pid]


async def _drain_scenario(url: str, server_pid: int, in_flight: int) -> tuple[list, object, float]:
    """Start `in_flight` slow requests, SIGTERM the server while they run, then try a new request."""
    upload = noisy_png(SLOW_SIZE)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        def post() -> asyncio.Task:
            return asyncio.ensure_future(client.post("/denoise", files={"image": ("noisy.png", upload, "image/png")}))

        accepted = [post() for _ in range(in_flight)]
        await asyncio.sleep(0.5)  # all of them are in the server now
        os.kill(server_pid, signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.5)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:  # a new connection
                late = await fresh.get("/livez")
        except httpx.TransportError as exc:
            late = exc
        answers = await asyncio.gather(*accepted, return_exceptions=True)
        return answers, late, signalled


def test_sigterm_drains_in_flight_requests_refuses_new_ones_and_exits(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert denoised_is_right(denoise(client, size=SLOW_SIZE), size=SLOW_SIZE)

    answers, late, signalled = asyncio.run(_drain_scenario(server.url, server.process.pid, in_flight=4))
    server.process.wait(timeout=GRACE_SECONDS)
    exited_after = time.monotonic() - signalled

    failures = [a for a in answers if not isinstance(a, httpx.Response) or not denoised_is_right(a, size=SLOW_SIZE)]
    assert not failures, f"accepted requests lost during shutdown: {failures}\n{server.log_tail()}"
    print(f"SIGTERM: {len(answers)} in-flight answered correctly; new request -> {late!r}; exited after {exited_after:.1f} s")
    # Refused outright (connection refused or 503), not left hanging until a client timeout.
    assert isinstance(late, httpx.ConnectError) or (isinstance(late, httpx.Response) and late.status_code == 503), late
    assert exited_after < GRACE_SECONDS
    assert not psutil.pid_exists(server.process.pid) or server.process.poll() is not None
