"""A client that retries where it is safe, for deployments with no balancer that retries for it.

Every inference here is a pure function of its request, so sending it again is safe when the server did not answer
(connection refused or reset: a replica restarting) or answered 503 (at capacity, or draining for shutdown: its
Retry-After says when). Nothing else is retried: a 4xx is the request's fault, a 500 the model's. The same rules over
gRPC: UNAVAILABLE and RESOURCE_EXHAUSTED (with the `retry-after` trailer) are retried, everything else is not.

    python docs/examples/retrying_client.py http://127.0.0.1:3000 127.0.0.1:3001
"""

from __future__ import annotations

import sys
import time

import httpx
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

ATTEMPTS = 4
BACKOFF_S = 0.5


def post_with_retries(client: httpx.Client, path: str, **request) -> httpx.Response:
    """POST, sent again on a connection error or a 503 (after Retry-After, else a growing backoff)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = client.post(path, **request)
        except httpx.TransportError:
            if attempt == ATTEMPTS:
                raise
            time.sleep(BACKOFF_S * attempt)
            continue
        if response.status_code != 503 or attempt == ATTEMPTS:
            return response
        time.sleep(float(response.headers.get("retry-after", BACKOFF_S * attempt)))
    raise AssertionError("unreachable")


RETRIED_GRPC = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")


def infer_with_retries(client: triton.InferenceServerClient, model: str, inputs: list) -> triton.InferResult:
    """tritonclient.grpc's infer, sent again while the server is unavailable or at capacity."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return client.infer(model, inputs)
        except InferenceServerException as error:
            if error.status() not in RETRIED_GRPC or attempt == ATTEMPTS:
                raise
            time.sleep(BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def main(url: str, grpc_target: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        answer = post_with_retries(client, "/sentiment/classify", json={"texts": ["what a lovely flight"]})
        print("HTTP:", answer.status_code, answer.json()["results"][0]["label"])
    grpc_client = triton.InferenceServerClient(grpc_target)
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"what a lovely flight"], dtype=object))
    print("gRPC:", infer_with_retries(grpc_client, "sentiment", [text]).as_numpy("label")[0].decode())


if __name__ == "__main__":
    main(*sys.argv[1:3])
