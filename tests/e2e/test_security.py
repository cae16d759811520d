"""API-key authentication, CORS and log hygiene, on real servers."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.calls import answered_correctly, every_endpoint_answers_correctly, smoke_call

pytestmark = pytest.mark.e2e

KEY = "k3y-for-tests-0123456789abcdef"
ORIGIN = "https://dashboard.example"
SECRET_TEXT = "my private diary entry 5f1c9e"


@pytest.fixture(scope="module")
def guarded(start_server):
    server = start_server(api_key=KEY, cors_origins=f'["{ORIGIN}"]')
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": KEY[:-1]},
                                     {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}, {"X-API-Key": ""}])
def test_inference_without_the_right_key_gets_the_same_401(guarded, headers):
    _, client = guarded
    for response in (smoke_call(client, "digits", headers=headers), smoke_call(client, "sentiment", headers=headers)):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        # One message whatever was wrong: nothing tells a caller how close it came.
        assert response.json() == {"error": "Missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."}


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}])
def test_the_key_opens_every_endpoint(guarded, headers):
    _, client = guarded
    assert every_endpoint_answers_correctly(client, headers=headers)


def test_probes_and_metrics_stay_open_by_default(guarded):
    _, client = guarded
    for path in ("/livez", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/models").status_code == 401
    assert client.get("/docs.json").status_code == 401


def test_unauthorised_requests_are_counted(guarded):
    _, client = guarded
    smoke_call(client, "digits")
    assert 'modelserver_rejected_requests_total{reason="unauthorised"}' in client.get("/metrics").text


def test_cors_allows_only_the_configured_origin(guarded):
    _, client = guarded
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = client.options("/digits/classify", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/digits/classify", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    answer = smoke_call(client, "digits", headers={"Origin": ORIGIN, "X-API-Key": KEY})
    assert answered_correctly("digits", answer) and answer.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(client):
    answer = smoke_call(client, "digits", headers={"Origin": ORIGIN})
    assert answered_correctly("digits", answer)
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options("/digits/classify", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_logs_never_contain_request_payloads_or_keys(guarded):
    server, client = guarded
    client.post("/sentiment/classify", json={"texts": [SECRET_TEXT]}, headers={"X-API-Key": KEY})
    client.post("/sentiment/classify", json={"texts": [SECRET_TEXT, ""]}, headers={"X-API-Key": KEY})  # a 400
    client.post("/sentiment/classify", json={"texts": [SECRET_TEXT]}, headers={"X-API-Key": "not-the-key-0123456789"})
    log = server.log.read_text(errors="replace")
    assert SECRET_TEXT not in log
    assert KEY not in log and "not-the-key-0123456789" not in log
