"""A closed-loop load of one gRPC call, for the benchmark's gRPC rows (wrk speaks HTTP/1.1 only).

    python -m loadtest.grpc_load 127.0.0.1:3001 request.bin --connections 16 --per-connection 2 --seconds 5

The request is a serialized inference.ModelInferRequest sent as it is (no protobuf work in the loop), over
`connections` separate HTTP/2 connections (the server's workers share the port, so the kernel spreads connections,
not calls) with `per-connection` calls in flight on each. Prints one JSON line in wrk's figure shape: requests/s,
p50/p99 in ms, errors by status code, and the CPU this generator used (as a share of one core).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import statistics
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(target: str, request: bytes, connections: int, per_connection: int, seconds: float,
              warmup: float) -> dict:
    # A channel of its own subchannel pool is a connection of its own (grpc otherwise shares one between channels).
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    measuring = False

    async def caller(call) -> None:
        while not stopping.is_set():
            started = time.perf_counter()
            try:
                await call(request)
            except grpc.aio.AioRpcError as error:
                if measuring:
                    errors[error.code().name] += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    stopping = asyncio.Event()
    calls = [channel.unary_unary(METHOD) for channel in channels]
    tasks = [asyncio.ensure_future(caller(call)) for call in calls for _ in range(per_connection)]
    await asyncio.sleep(warmup)
    measuring, cpu_before, began = True, cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed, cpu = time.perf_counter() - began, cpu_seconds() - cpu_before
    stopping.set()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    ordered = sorted(latencies)
    return {"requests_per_s": round(len(ordered) / elapsed, 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2) if ordered else None,
            "errors": dict(errors), "generator_cpu_percent": round(100 * cpu / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("request", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--per-connection", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    figure = asyncio.run(run(args.target, args.request.read_bytes(), args.connections, args.per_connection,
                             args.seconds, args.warmup))
    print(json.dumps(figure))


if __name__ == "__main__":
    main()
