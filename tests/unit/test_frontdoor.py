"""service.operations.frontdoor: what every request goes through, on a real ASGI stack (httpx's ASGI transport).

The app behind the front door is a real Starlette app standing in for BentoML's (probes, a plain-text 404); the
routes are the front door's own, with handlers that answer, hold, fail or raise client errors on purpose.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from modelcore.errors import InputError
from service.operations.frontdoor import Call, FrontDoor, Route, Router
from service.operations.http import REQUEST_ID, json_response
from service.operations.lifecycle import STATE
from service.operations.settings import Settings

KEY = "0123456789abcdef-secret"
GATE: dict[str, asyncio.Event] = {}


async def echo(call: Call) -> object:
    return json_response({"bytes": len(call.body), "params": call.params, "request_id": REQUEST_ID.get()})


async def held(_: Call) -> object:
    await GATE["open"].wait()
    return json_response({"held": True})


async def too_slow(_: Call) -> object:
    await asyncio.sleep(30)
    return json_response({})


async def half_a_second(_: Call) -> object:
    await asyncio.sleep(0.5)
    return json_response({"waited": True})


async def refuses(_: Call) -> object:
    raise InputError("Send a digit, not a cat.", 422)


async def breaks(_: Call) -> object:
    raise RuntimeError("the model's own fault")


def backend() -> Starlette:
    """Stands in for BentoML's app: a probe, and Starlette's plain-text 404 for anything else."""
    return Starlette(routes=[StarletteRoute("/livez", lambda _: PlainTextResponse("."))])


def front_door(**settings) -> FrontDoor:
    router = Router([Route("/echo", echo, ("GET", "POST"), "digits"), Route("/v2/models/{model}/infer", echo),
                     Route("/held", held), Route("/slow", too_slow), Route("/patient", half_a_second, timeout_s=30),
                     Route("/impatient", too_slow, timeout_s=0.3), Route("/refuses", refuses, model="digits"),
                     Route("/breaks", breaks, model="digits")])
    return FrontDoor(backend(), router, Settings(**settings))


def client(door: FrontDoor) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://test")


def run(door: FrontDoor, method: str, path: str, **kwargs) -> httpx.Response:
    async def call() -> httpx.Response:
        async with client(door) as session:
            return await session.request(method, path, **kwargs)

    return asyncio.run(call())


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"},
                                     {"X-API-Key": KEY}])
def test_the_right_key_in_either_header_passes(headers):
    assert run(front_door(api_key=KEY), "POST", "/echo", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}, {"Authorization": KEY},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Token {KEY}"}])
def test_missing_or_wrong_keys_get_one_indistinguishable_401(headers):
    response = run(front_door(api_key=KEY), "POST", "/echo", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="modelserver"'
    assert response.json()["error"].startswith("Missing or invalid API key")


def test_exempt_paths_and_cors_preflights_need_no_key():
    door = front_door(api_key=KEY)
    assert run(door, "GET", "/livez").status_code == 200
    assert run(door, "OPTIONS", "/echo").status_code != 401


def test_admission_refuses_beyond_capacity_with_retry_after_and_gives_capacity_back():
    door = front_door(max_concurrent_requests=2, retry_after_s=7)

    async def scenario():
        GATE["open"] = asyncio.Event()
        async with client(door) as session:
            calls = [asyncio.ensure_future(session.post("/held")) for _ in range(5)]
            for _ in range(3000):  # three refused at once, two held at the gate (bounded: 30 s)
                if sum(call.done() for call in calls) >= 3:
                    break
                await asyncio.sleep(0.01)
            probe = await session.get("/livez")
            GATE["open"].set()
            answers = await asyncio.gather(*calls)
            after = await session.post("/held")
        return answers, probe, after

    answers, probe, after = asyncio.run(scenario())
    assert sorted(a.status_code for a in answers) == [200, 200, 503, 503, 503]
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "7" and "at capacity" in a.json()["error"] for a in refused)
    assert probe.status_code == 200 and after.status_code == 200  # probes are never counted; capacity comes back
    assert STATE.in_flight == 0


def test_a_draining_worker_refuses_new_requests_with_503():
    STATE.draining = True
    try:
        response = run(front_door(), "POST", "/echo")
    finally:
        STATE.draining = False
    assert response.status_code == 503 and response.headers["connection"] == "close"


LIMIT = 1024


async def chunks(total: int, size: int = 100):
    """A body sent in pieces with no Content-Length (chunked transfer encoding)."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_bodies_within_the_limit_reach_the_handler_whole():
    door = front_door(max_request_bytes=LIMIT)
    assert run(door, "POST", "/echo", content=b"x" * LIMIT).json()["bytes"] == LIMIT
    assert run(door, "POST", "/echo", content=chunks(LIMIT)).json()["bytes"] == LIMIT


@pytest.mark.parametrize("content", [b"x" * (LIMIT + 1), chunks(LIMIT * 3)], ids=["declared", "chunked"])
def test_a_body_over_the_limit_gets_413_naming_the_limit(content):
    response = run(front_door(max_request_bytes=LIMIT), "POST", "/echo", content=content)
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert "1,024 bytes" in response.json()["error"] and "MODEL_SERVER_MAX_REQUEST_BYTES" in response.json()["error"]


def test_a_request_past_its_deadline_gets_504_in_json_and_leaves_no_timer():
    door = front_door(request_timeout_s=0.2, access_log=False)  # the access log keeps one flush timer of its own

    async def scenario():
        async with client(door) as session:
            slow = await session.post("/slow")
            for _ in range(50):
                await session.post("/echo")
        loop = asyncio.get_running_loop()
        return slow, sum(not timer.cancelled() for timer in loop._scheduled)

    slow, pending_timers = asyncio.run(scenario())
    assert slow.status_code == 504 and "0.2 seconds" in slow.json()["error"]
    assert pending_timers == 0


def test_a_route_with_its_own_deadline_is_held_to_it_not_the_request_timeout():
    door = front_door(request_timeout_s=0.2, access_log=False)
    assert run(door, "POST", "/patient").json() == {"waited": True}  # 0.5 s, past the 0.2 s request timeout
    impatient = run(door, "POST", "/impatient")
    assert impatient.status_code == 504 and "0.3 seconds" in impatient.json()["error"]


def test_client_errors_and_model_faults_are_json_and_name_what_happened():
    door = front_door()
    refused = run(door, "POST", "/refuses")
    assert refused.status_code == 422 and refused.json() == {"error": "Send a digit, not a cat."}
    broken = run(door, "POST", "/breaks", headers={"X-Request-ID": "trace-me-1"})
    assert broken.status_code == 500 and "digits model failed" in broken.json()["error"]
    assert "trace-me-1" in broken.json()["error"]


def test_a_clients_request_id_is_echoed_and_seen_by_the_handler():
    response = run(front_door(), "POST", "/echo", headers={"X-Request-ID": "abc-123.4:5"})
    assert response.headers["x-request-id"] == "abc-123.4:5" and response.json()["request_id"] == "abc-123.4:5"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 200, "line\nbreak"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    try:
        response = run(front_door(), "POST", "/echo", headers=headers)
    except httpx.LocalProtocolError:  # the client itself refuses to send a header with a line break
        return
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


def test_every_answer_carries_a_request_id_even_from_the_app_behind():
    door = front_door(api_key=KEY)
    for method, path in (("GET", "/livez"), ("GET", "/nowhere"), ("POST", "/echo")):
        assert run(door, method, path).headers["x-request-id"], path


def test_templated_routes_get_their_parameters_and_wrong_methods_get_405():
    door = front_door()
    assert run(door, "POST", "/v2/models/digits/infer").json()["params"] == {"model": "digits"}
    wrong = run(door, "DELETE", "/echo")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    assert "DELETE is not allowed on /echo" in wrong.json()["error"]


def test_the_apps_plain_text_404_becomes_our_json_error():
    response = run(front_door(), "GET", "/nowhere")
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == {"error": "No route /nowhere; the API is described at /docs.json."}


def test_two_routes_for_the_same_method_and_path_are_refused():
    with pytest.raises(ValueError, match="two routes for POST /echo"):
        Router([Route("/echo", echo), Route("/echo", echo)])


def test_access_lines_carry_the_request_and_are_written_in_batches():
    import io

    from service.operations.access_log import AccessLog

    stream = io.StringIO()
    door = front_door()
    door.access_log = AccessLog(stream=stream)

    async def scenario():
        async with client(door) as session:
            await session.post("/refuses", headers={"X-Request-ID": "batch-me-7"})
            written_at_once = stream.getvalue()
            await asyncio.sleep(0.8)  # past the batch's half second
        return written_at_once

    assert asyncio.run(scenario()) == ""
    (line,) = stream.getvalue().splitlines()
    assert '"POST /refuses" 422 ' in line and line.endswith("request=batch-me-7")

