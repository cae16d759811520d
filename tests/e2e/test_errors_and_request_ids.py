"""Every validation error in the documented shape, and request ids from the client to the answer and the log.

Errors: {"error": "<what to send>", "detail": [...]} naming each offending field, on every route whose body the
spec describes. Request ids: a client's X-Request-ID (or a new one) comes back on every route, probes and /v2
included, and is on the server's access-log line and on the log line of a client error.
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.e2e


def documented_bodies(client, media_type: str) -> dict[str, dict]:
    """{path: request-body schema} of every documented POST whose body has this media type."""
    spec = client.get("/docs.json").json()
    return {path: methods["post"]["requestBody"]["content"][media_type]["schema"]
            for path, methods in spec["paths"].items()
            if "post" in methods and media_type in methods["post"].get("requestBody", {}).get("content", {})}


def assert_names_field(response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert field in body["error"] and any(error["loc"][:1] == [field] for error in body["detail"]), body


def test_a_misnamed_json_field_is_answered_in_the_documented_shape(client):
    response = client.post("/sentiment/classify", json={"text": ["I love it"]})
    assert_names_field(response, "texts")
    assert "Content-Type: application/json" in response.json()["error"]


def test_every_json_route_names_its_required_fields_for_an_empty_object_and_an_empty_body(client):
    routes = documented_bodies(client, "application/json")
    assert {"/sentiment/classify", "/sentiment/explain", "/digits/classify-arrays"} <= set(routes)
    for path, schema in routes.items():
        if path.startswith("/v2/"):
            continue  # the protocol's own request; its errors name the tensor (tests/e2e/test_v2_protocol.py)
        (required, *_) = schema["required"]
        assert_names_field(client.post(path, json={}), required)
        empty = client.post(path, content=b"", headers={"content-type": "application/json"})
        assert empty.status_code == 400 and "not valid JSON" in empty.json()["error"] and empty.json()["detail"]


def test_every_multipart_route_names_unexpected_and_missing_fields(client):
    routes = documented_bodies(client, "multipart/form-data")
    assert {"/digits/classify", "/denoise", "/digits/explain", "/denoise/explain"} <= set(routes)
    for path in routes:
        response = client.post(path, files={"picture": ("x.png", b"\x89PNG", "image/png")})
        assert response.status_code == 400, (path, response.text)
        locations = {error["loc"][0]: error["type"] for error in response.json()["detail"]}
        assert locations == {"picture": "extra_forbidden", "image": "missing"}, (path, locations)
        assert "picture" in response.json()["error"] and "multipart/form-data" in response.json()["error"]


def test_a_form_field_out_of_range_is_named(client):
    from loadtest.profiles.denoise import noisy_png

    response = client.post("/denoise", files={"image": ("n.png", noisy_png(), "image/png")}, data={"sigma": "400"})
    assert_names_field(response, "sigma")


@pytest.mark.parametrize("method,path", [("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/models"),
                                         ("GET", "/v2/models/digits"), ("POST", "/v2/models/digits/infer"),
                                         ("POST", "/sentiment/classify"), ("GET", "/no-such-route")])
def test_a_clients_request_id_comes_back_on_every_route(client, method, path):
    response = client.request(method, path, headers={"X-Request-ID": "client-chosen-17"})
    assert response.headers["x-request-id"] == "client-chosen-17", (path, response.status_code)


def test_a_request_without_an_id_gets_a_new_one_each_time(client):
    first, second = (client.get("/models").headers["x-request-id"] for _ in range(2))
    assert re.fullmatch(r"[0-9a-f]{16}", first) and first != second


def test_the_request_id_is_on_the_access_log_line_and_the_error_log_line(server, client):
    client.post("/digits/classify-image", content=b"not an image", headers={"X-Request-ID": "find-me-in-the-log-42"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in server.log.read_text(errors="replace").splitlines() if "find-me-in-the-log-42" in line]
        if len(lines) >= 2:
            break
        time.sleep(0.2)
    access = [line for line in lines if '"POST /digits/classify-image" 415' in line]
    error = [line for line in lines if "digits: 415 The upload is not a PNG or JPEG image" in line]
    assert access and error, lines
