"""Locust users for every endpoint and a mixed scenario, with real payloads; a wrong answer is a failure.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000 --headless -u 16 -r 16 -t 30s DigitsUser
    python -m loadtest.stepload --user MixedUser          # step-load with CSV, HTML and plots (make loadtest)

Payloads are built once per process: real MNIST test digits as PNGs, real held-out tweets, and crops
of the denoiser's test photographs with Gaussian noise (sigma 25). Bodies are pre-encoded so the load
generator spends its CPU on sending, not on encoding.
"""

from __future__ import annotations

import random
import struct

from locust import FastHttpUser, between, task

from loadtest.payloads import DENOISE_CROP, JSON_TYPE, digit_pngs, noisy_pngs, tweet_bodies
from modelcore.sentiment import LABELS as SENTIMENT_LABELS


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding it."""
    return struct.unpack(">II", data[16:24]) if data[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)


class ModelServerUser(FastHttpUser):
    """Sends as fast as answers come back (a closed loop per user); each task checks its answer."""

    abstract = True
    wait_time = between(0, 0)

    def classify_digit(self) -> None:
        body, content_type = random.choice(digit_pngs())
        with self.client.post("/digits/classify", data=body, headers={"Content-Type": content_type},
                              catch_response=True) as response:
            answer = response.json() if response.status_code == 200 else {}
            if len(answer.get("probabilities", ())) != 10 or not 0 <= answer.get("label", -1) <= 9:
                response.failure(f"unexpected answer {response.status_code}: {response.text[:200]}")

    def classify_text(self) -> None:
        body, _ = random.choice(tweet_bodies())
        with self.client.post("/sentiment/classify", data=body, headers={"Content-Type": JSON_TYPE},
                              catch_response=True) as response:
            results = response.json().get("results", []) if response.status_code == 200 else []
            if len(results) != 1 or results[0].get("label") not in SENTIMENT_LABELS:
                response.failure(f"unexpected answer {response.status_code}: {response.text[:200]}")

    def denoise(self) -> None:
        body, content_type = random.choice(noisy_pngs())
        with self.client.post("/denoise", data=body, headers={"Content-Type": content_type},
                              catch_response=True) as response:
            if response.status_code != 200 or png_size(response.content) != (DENOISE_CROP, DENOISE_CROP):
                response.failure(f"unexpected answer {response.status_code}: {response.text[:200]}")


class DigitsUser(ModelServerUser):
    """One real MNIST test digit (PNG) per request."""

    @task
    def digits(self) -> None:
        self.classify_digit()


class SentimentUser(ModelServerUser):
    """One real held-out tweet per request."""

    @task
    def sentiment(self) -> None:
        self.classify_text()


class DenoiseUser(ModelServerUser):
    """One noisy 128x128 photograph crop per request."""

    @task
    def denoise_crop(self) -> None:
        self.denoise()


class MixedUser(ModelServerUser):
    """A mix weighted towards the cheap calls: 6 digits, 3 sentiment, 1 denoise."""

    @task(6)
    def digits(self) -> None:
        self.classify_digit()

    @task(3)
    def sentiment(self) -> None:
        self.classify_text()

    @task(1)
    def denoise_crop(self) -> None:
        self.denoise()
