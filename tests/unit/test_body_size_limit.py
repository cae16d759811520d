"""service.http.BodySizeLimit on a real Starlette app: declared and chunked bodies over the limit get 413."""

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.http import BodySizeLimit

LIMIT = 1024


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


@pytest.fixture()
def client():
    app = Starlette(routes=[Route("/echo", echo_length, methods=["POST"])])
    with TestClient(BodySizeLimit(app, max_bytes=LIMIT)) as session:
        yield session


def chunks(total: int, size: int = 100):
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_bodies_within_the_limit_pass_through_whole(client):
    assert client.post("/echo", content=b"x" * LIMIT).json() == {"received": LIMIT}
    assert client.post("/echo", content=chunks(LIMIT)).json() == {"received": LIMIT}


def test_declared_length_over_the_limit_gets_413_with_the_limit_named(client):
    response = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert "1,024 bytes" in response.json()["error"] and "MODEL_SERVER_MAX_REQUEST_BYTES" in response.json()["error"]


def test_chunked_body_over_the_limit_gets_413(client):
    response = client.post("/echo", content=chunks(LIMIT * 3))
    assert response.status_code == 413 and response.json()["error"]
