"""service.guards on a real Starlette app: API-key authentication and admission control."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.guards import AdmissionLimit, ApiKeyAuth

KEY = "0123456789abcdef-secret"


async def hello(_: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


GATE: dict[str, asyncio.Event] = {}


async def slow(_: Request) -> JSONResponse:
    """Stays in flight until the test opens the gate."""
    await GATE["open"].wait()
    return JSONResponse({"slow": True})


def app() -> Starlette:
    return Starlette(routes=[Route("/predict", hello, methods=["GET", "POST"]), Route("/livez", hello),
                             Route("/slow", slow)])


@pytest.fixture()
def authed():
    with TestClient(ApiKeyAuth(app(), api_key=KEY, exempt_paths=frozenset({"/livez"}))) as client:
        yield client


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"},
                                     {"X-API-Key": KEY}])
def test_the_right_key_in_either_header_passes(authed, headers):
    assert authed.post("/predict", headers=headers).json() == {"hello": "world"}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}, {"Authorization": KEY},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Token {KEY}"}])
def test_missing_or_wrong_keys_get_one_indistinguishable_401(authed, headers):
    response = authed.post("/predict", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="modelserver"'
    assert response.json()["error"].startswith("Missing or invalid API key")


def test_exempt_paths_and_cors_preflights_need_no_key(authed):
    assert authed.get("/livez").status_code == 200
    assert authed.options("/predict").status_code != 401


def test_admission_limit_refuses_beyond_capacity_with_retry_after():
    async def scenario():
        limited = AdmissionLimit(app(), max_in_flight=2, retry_after_s=7)
        transport = httpx.ASGITransport(app=limited)
        GATE["open"] = asyncio.Event()
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            calls = [asyncio.ensure_future(client.get("/slow")) for _ in range(5)]
            for _ in range(3000):  # three refused at once, two held at the gate (bounded: 30 s)
                if sum(call.done() for call in calls) >= 3:
                    break
                await asyncio.sleep(0.01)
            probe = await client.get("/livez")
            GATE["open"].set()
            answers = await asyncio.gather(*calls)
            after = await client.get("/slow")
        return answers, probe, after, limited.in_flight

    answers, probe, after, in_flight = asyncio.run(scenario())
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 503, 503, 503]
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "7" and "at capacity" in a.json()["error"] for a in refused)
    assert probe.status_code == 200 and after.status_code == 200  # capacity is given back
    assert in_flight == 0
