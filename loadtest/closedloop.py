"""A lean HTTP load generator (aiohttp): closed loop (N callers, each sends when its answer is back) or
open loop (a fixed request rate), over pre-encoded payloads; prints one JSON line of figures.

    python -m loadtest.closedloop --url http://127.0.0.1:3000 --path /digits/classify --payload digit-png \\
        --concurrency 32 --seconds 10
    python -m loadtest.closedloop ... --rate 150        # open loop at 150 requests/s

Figures: requests/s, items/s, errors by status, p50/p95/p99 latency (ms), and this process's CPU use
(% of one core): near 100%, the generator is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import aiohttp
import numpy as np
import psutil

from loadtest.profiles import profiles

# Every registered workload's payload by name (digit-png, tweet, noisy-png, ...).
PAYLOADS = {workload.name: workload.payload for model in profiles() for workload in model.workloads}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--payload", choices=sorted(PAYLOADS), required=True)
    parser.add_argument("--items", type=int, default=1, help="items per request (to report items/s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--rate", type=float, help="open loop: requests per second (default: closed loop)")
    return parser.parse_args(argv)


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.measuring = False

    def record(self, status: int | str, seconds: float) -> None:
        if not self.measuring:
            return
        if status == 200:
            self.latencies.append(seconds)
        else:
            self.errors[str(status)] = self.errors.get(str(status), 0) + 1


async def send(session: aiohttp.ClientSession, url: str, bodies: list, recorder: Recorder) -> None:
    body, content_type, *extra = random.choice(bodies)
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": content_type, **(extra[0] if extra else {})}) as response:
            await response.read()
            status: int | str = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        status = type(exc).__name__
    recorder.record(status, time.perf_counter() - started)


async def closed_loop(session, url, bodies, recorder, concurrency: int, until: float) -> None:
    async def caller() -> None:
        while time.monotonic() < until:
            await send(session, url, bodies, recorder)

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def open_loop(session, url, bodies, recorder, rate: float, until: float) -> None:
    tasks, started, n = [], time.monotonic(), 0
    while (due := started + n / rate) < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.ensure_future(send(session, url, bodies, recorder)))
        n += 1
    await asyncio.gather(*tasks)


async def measure(args: argparse.Namespace) -> dict:
    bodies = PAYLOADS[args.payload]()
    recorder = Recorder()
    connector = aiohttp.TCPConnector(limit=0 if args.rate else args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    url = args.url.rstrip("/") + args.path
    me = psutil.Process()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def flip() -> tuple[float, float]:
            await asyncio.sleep(args.warmup)
            recorder.measuring = True
            return time.monotonic(), sum(me.cpu_times()[:2])

        until = time.monotonic() + args.warmup + args.seconds
        load = (open_loop(session, url, bodies, recorder, args.rate, until) if args.rate
                else closed_loop(session, url, bodies, recorder, args.concurrency, until))
        (started, cpu_started), _ = await asyncio.gather(flip(), load)
    wall, cpu = time.monotonic() - started, sum(me.cpu_times()[:2]) - cpu_started
    latencies = np.array(recorder.latencies) * 1000 if recorder.latencies else np.array([np.nan])
    done = len(recorder.latencies)
    return {
        "path": args.path, "payload": args.payload, "concurrency": args.concurrency, "rate": args.rate,
        "requests_per_s": round(done / wall, 1), "items_per_s": round(done * args.items / wall, 1),
        "errors": recorder.errors, "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "generator_cpu_percent": round(100 * cpu / wall),
    }


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(asyncio.run(measure(parse_args(argv)))))


if __name__ == "__main__":
    main()
