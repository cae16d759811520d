"""Accuracy and throughput of a running server on the official MNIST test set, over HTTP.

    python -m loadtest.digits_eval --url http://127.0.0.1:3000 --concurrency 16

Each test digit is sent as its own PNG to POST /digits/classify by `--concurrency` concurrent
clients; prints accuracy, requests/second and latency percentiles, and exits non-zero on any error.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from loadtest.http_eval import post_all
from modelcore import mnist
from modelcore.images import png_bytes


def evaluate(url: str, images: np.ndarray, truth: np.ndarray, concurrency: int) -> dict:
    """Send each image as a PNG and compare the served labels with the truth."""
    requests = [{"files": {"image": ("digit.png", png_bytes(image), "image/png")}} for image in images]
    load = post_all(url, "/digits/classify", requests, concurrency)
    labels = np.array([-1 if answer is None else answer["label"] for answer in load.answers])
    return {"accuracy": float((labels == truth).mean()), "concurrency": concurrency, **load.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--data-dir", help=f"MNIST IDX directory (default: ${mnist.ENV_VAR})")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--limit", type=int, help="only the first N test images")
    args = parser.parse_args()
    images, truth = mnist.load("test", args.data_dir)
    report = evaluate(args.url, images[: args.limit], truth[: args.limit], args.concurrency)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
