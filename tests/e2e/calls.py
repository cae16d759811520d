"""One real request per inference endpoint, with a check that its answer is right, for the attack tests."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image, ImageDraw

from modelcore.denoise import add_noise, psnr
from modelcore.images import png_bytes


def seven() -> np.ndarray:
    """A clear handwritten 7, drawn as MNIST would have it (white ink on black, 28x28)."""
    image = Image.new("L", (28, 28))
    pen = ImageDraw.Draw(image)
    pen.line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    return np.asarray(image)


def classify_digit(client: httpx.Client, **kwargs) -> httpx.Response:
    return client.post("/digits/classify", files={"image": ("seven.png", png_bytes(seven()), "image/png")}, **kwargs)


def digit_is_right(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json()["label"] == 7


def classify_text(client: httpx.Client, **kwargs) -> httpx.Response:
    return client.post("/sentiment/classify", json={"texts": ["I absolutely love this, best day ever!"]}, **kwargs)


def sentiment_is_right(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json()["results"][0]["label"] == "positive"


def smooth_image(size: int = 96) -> np.ndarray:
    """A smooth synthetic greyscale scene: noise on it is easy to measure."""
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.25 + 0.5 * (0.5 * np.sin(3 * x) + 0.5 * np.cos(2 * y)) ** 2


def noisy_plane(size: int = 96, sigma: float = 25.0) -> np.ndarray:
    return add_noise(smooth_image(size), sigma, np.random.default_rng(0))


def noisy_png(size: int = 96) -> bytes:
    noisy = noisy_plane(size)
    buffer = io.BytesIO()
    Image.fromarray((noisy * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def denoise(client: httpx.Client, size: int = 96, **kwargs) -> httpx.Response:
    return client.post("/denoise", files={"image": ("noisy.png", noisy_png(size), "image/png")}, **kwargs)


def denoised_is_right(response: httpx.Response, size: int = 96) -> bool:
    """A PNG of the right size, much closer to the clean image than the noisy upload was."""
    if response.status_code != 200 or response.headers["content-type"] != "image/png":
        return False
    output = np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.float64) / 255
    clean = smooth_image(size)
    return output.shape == (size, size) and psnr(clean, output) > psnr(clean, noisy_plane(size)) + 6


def every_endpoint_answers_correctly(client: httpx.Client, **kwargs) -> bool:
    return (
        digit_is_right(classify_digit(client, **kwargs))
        and sentiment_is_right(classify_text(client, **kwargs))
        and denoised_is_right(denoise(client, **kwargs))
    )
