"""Accuracy and throughput of a running server on the official MNIST test set, over HTTP.

    python -m loadtest.digits_eval --url http://127.0.0.1:3000 --concurrency 16

Each test digit is sent as its own PNG to POST /digits/classify by `--concurrency` concurrent
clients; prints accuracy, requests/second and latency percentiles, and exits non-zero on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from dataclasses import asdict, dataclass

import httpx
import numpy as np
from PIL import Image

from modelcore import mnist


@dataclass
class Report:
    requests: int
    errors: int
    accuracy: float
    seconds: float
    requests_per_second: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


async def classify_all(url: str, uploads: list[bytes], concurrency: int) -> tuple[list[int | None], list[float]]:
    """POST every upload; (label or None on error, latency seconds) per upload, in input order."""
    labels: list[int | None] = [None] * len(uploads)
    latencies = [0.0] * len(uploads)
    next_index = iter(range(len(uploads)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for index in next_index:
            started = time.perf_counter()
            response = await client.post("/digits/classify", files={"image": ("digit.png", uploads[index], "image/png")})
            latencies[index] = time.perf_counter() - started
            if response.status_code == 200:
                labels[index] = response.json()["label"]

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return labels, latencies


def evaluate(url: str, images: np.ndarray, truth: np.ndarray, concurrency: int) -> Report:
    """Send each image as a PNG and compare the served labels with the truth."""
    uploads = [png_bytes(image) for image in images]
    started = time.perf_counter()
    labels, latencies = asyncio.run(classify_all(url, uploads, concurrency))
    seconds = time.perf_counter() - started
    answered = np.array([-1 if label is None else label for label in labels])
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return Report(
        requests=len(uploads),
        errors=int((answered < 0).sum()),
        accuracy=float((answered == truth).mean()),
        seconds=round(seconds, 2),
        requests_per_second=round(len(uploads) / seconds, 1),
        latency_ms_p50=round(float(p50), 2),
        latency_ms_p95=round(float(p95), 2),
        latency_ms_p99=round(float(p99), 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--data-dir", help=f"MNIST IDX directory (default: ${mnist.ENV_VAR})")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--limit", type=int, help="only the first N test images")
    args = parser.parse_args()
    images, truth = mnist.load("test", args.data_dir)
    images, truth = images[: args.limit], truth[: args.limit]
    report = evaluate(args.url, images, truth, args.concurrency)
    print(json.dumps(asdict(report), indent=2))
    sys.exit(1 if report.errors else 0)


if __name__ == "__main__":
    main()
