"""Denoise's load profile: a noisy smooth scene as the smoke request, noisy photograph crops as the load."""

from __future__ import annotations

import io

import numpy as np
from urllib3 import encode_multipart_formdata

from loadtest import payloads
from loadtest.profiles import HttpAnswer, HttpRequest, Profile, Smoke, Workload
from modelcore.denoise import add_noise, psnr
from modelcore.images import png_bytes

SMOKE_SIZE = 96


def smooth_image(size: int = SMOKE_SIZE) -> np.ndarray:
    """A smooth synthetic greyscale scene in [0, 1]: noise on it is easy to measure."""
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.25 + 0.5 * (0.5 * np.sin(3 * x) + 0.5 * np.cos(2 * y)) ** 2


def noisy_plane(size: int = SMOKE_SIZE, sigma: float = 25.0) -> np.ndarray:
    return add_noise(smooth_image(size), sigma, np.random.default_rng(0))


def noisy_png(size: int = SMOKE_SIZE) -> bytes:
    return png_bytes((noisy_plane(size) * 255).round().astype(np.uint8))


def smoke_request() -> HttpRequest:
    body, content_type = encode_multipart_formdata({"image": ("noisy.png", noisy_png(), "image/png")})
    return HttpRequest("/denoise", body, content_type)


def cleaned(answer: HttpAnswer, size: int = SMOKE_SIZE) -> bool:
    """A PNG of the right size, much closer to the clean image than the noisy upload was."""
    from PIL import Image

    if answer.status != 200 or answer.headers.get("content-type") != "image/png":
        return False
    output = np.asarray(Image.open(io.BytesIO(answer.body)), dtype=np.float64) / 255
    clean = smooth_image(size)
    return output.shape == (size, size) and psnr(clean, output) > psnr(clean, noisy_plane(size)) + 6


def same_size_png(answer: HttpAnswer) -> str | None:
    """None when the answer is a PNG of the load test's crop size, else what is wrong."""
    width_height = answer.body[16:24] if answer.body[:8] == b"\x89PNG\r\n\x1a\n" else b""
    if answer.status != 200 or width_height != payloads.DENOISE_CROP.to_bytes(4, "big") * 2:
        return answer.unexpected()
    return None


PROFILE = Profile(
    name="denoise",
    smoke=Smoke(smoke_request, cleaned),
    workloads=(Workload("noisy-png", "/denoise", payloads.noisy_pngs, same_size_png,
                        noop_path="/diagnostics/noop-upload"),),
    mixed_weight=1,
    compute_feeds=payloads.denoise_feeds,
)
