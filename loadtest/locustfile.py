"""Locust users for the model server, with real payloads; a wrong body counts as a failure.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000 --headless -u 16 -r 16 -t 30s
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task
from urllib3 import encode_multipart_formdata

from loadtest.digits_eval import png_bytes
from modelcore import mnist

SAMPLES = 512


def _digit_samples() -> list[tuple[bytes, str]]:
    """Ready-encoded multipart bodies (body, content type) of real test digits as PNGs."""
    images, _ = mnist.load("test")
    picks = random.Random(0).sample(range(len(images)), SAMPLES)
    return [encode_multipart_formdata({"image": ("digit.png", png_bytes(images[i]), "image/png")}) for i in picks]


class DigitsUser(FastHttpUser):
    """Posts one real MNIST test digit as a PNG per request and checks the answer's shape."""

    wait_time = between(0, 0)
    samples: list[tuple[bytes, str]] = []

    def on_start(self) -> None:
        if not DigitsUser.samples:
            DigitsUser.samples = _digit_samples()

    @task
    def classify(self) -> None:
        body, content_type = random.choice(self.samples)
        with self.client.post(
            "/digits/classify", data=body, headers={"Content-Type": content_type}, catch_response=True
        ) as response:
            answer = response.json() if response.status_code == 200 else {}
            if len(answer.get("probabilities", ())) != 10 or not 0 <= answer.get("label", -1) <= 9:
                response.failure(f"unexpected answer {response.status_code}: {response.text[:200]}")
