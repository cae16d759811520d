"""Served /denoise seconds per megapixel, several servers side by side, requests interleaved one by one.

    python -m loadtest.denoise_latency --server today=http://127.0.0.1:3113 --server new=http://127.0.0.1:3111

Each round sends every image to every server in turn (one request in flight at a time), so a busy machine
slows all of them alike; the first round warms up. Prints the median seconds and seconds per megapixel of each
server and image, and the ratio to the first server named. The images are noisy (sigma 25) test photographs:
a 128x128 crop (the load tests' size), one 512x512 and a 1024x1024 mosaic of four.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import numpy as np

from loadtest.denoise_eval import png
from modelcore.denoise_data import noisy_test_set


def test_images() -> dict[str, bytes]:
    noisy = {name: pair[1] for name, pair in noisy_test_set(25.0).items()}
    mosaic = np.block([[noisy["camera"], noisy["moon"]], [noisy["astronaut"], noisy["camera"][::-1]]])
    return {"128x128": png(noisy["camera"][192:320, 192:320]), "512x512": png(noisy["camera"]), "1024x1024": png(mosaic)}


def timed_rounds(servers: dict[str, str], images: dict[str, bytes], rounds: int) -> dict[tuple[str, str], list[float]]:
    seconds: dict[tuple[str, str], list[float]] = {(server, image): [] for server in servers for image in images}
    with httpx.Client(timeout=600) as client:
        for round_index in range(rounds + 1):
            for image, data in images.items():
                for server, url in servers.items():
                    started = time.perf_counter()
                    client.post(f"{url}/denoise", files={"image": (f"{image}.png", data, "image/png")}).raise_for_status()
                    if round_index:  # round 0 warms up
                        seconds[(server, image)].append(time.perf_counter() - started)
    return seconds


def report(seconds: dict[tuple[str, str], list[float]], first: str) -> list[str]:
    lines = []
    for (server, image), values in seconds.items():
        megapixels = int(image.split("x")[0]) * int(image.split("x")[1]) / 1e6
        per_mp = statistics.median(values) / megapixels
        baseline = statistics.median(seconds[(first, image)]) / megapixels
        lines.append(f"{image:>9}  {server:24s} median {statistics.median(values):.3f} s of {len(values)}  "
                     f"{per_mp:.2f} s/Mpx  {per_mp / baseline:.2f}x {first}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", required=True, metavar="NAME=URL",
                        help="a running server to time; the first is the baseline of the ratios")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    servers = dict(entry.split("=", 1) for entry in args.server)
    for line in report(timed_rounds(servers, test_images(), args.rounds), first=next(iter(servers))):
        print(line)


if __name__ == "__main__":
    main()
