"""Serving benchmark, one run, ratios side by side: how close the served endpoints come to the machine's limits.

    python -m loadtest.benchmark                     # about 5 minutes on 2 cores; make benchmark
    python -m loadtest.benchmark --models digits --seconds 5

For each model:
  (a) compute limit: onnxruntime in-process on real inputs, items/s at batch 1, 8, 32, 64, 128
  (b) transport limit: a no-op endpoint on the same server taking the same payload
  (c) the real endpoint, one item per request, adaptive batching on (defaults) and off (batch size 1)
  (d) the real endpoint with client-side batches of 64 items (digits, sentiment); (d') digits as one .npy body
  (c') digits only: the raw-body endpoint (the PNG itself as the body), and (b') its no-op
  (e) digits only: a minimal FastAPI + uvicorn app running the same CNN in PyTorch eager
  (f) digits only: open loop at half of (c')'s throughput, for p99 / p50
All served figures come from the same load generator (loadtest.closedloop, aiohttp) at the same
concurrency; its CPU use is reported with each figure. Writes table.md and results.json to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np

from loadtest import payloads
from service.launch import free_port, served_locally

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
BATCHES = (1, 8, 32, 64, 128)
# (path, payload, items per request) per measurement and model.
SINGLE = {"digits": ("/digits/classify", "digit-png", 1), "sentiment": ("/sentiment/classify", "tweet", 1),
          "denoise": ("/denoise", "noisy-png", 1)}
NOOP = {"digits": ("/diagnostics/noop-upload", "digit-png", 1), "sentiment": ("/diagnostics/noop-texts", "tweet", 1),
        "denoise": ("/diagnostics/noop-upload", "noisy-png", 1)}
# The raw-body fast path (the image file as the request body), where a model has one.
FAST_SINGLE = {"digits": ("/digits/classify-image", "digit-png-body", 1)}
FAST_NOOP = {"digits": ("/diagnostics/noop-body", "digit-png-body", 1)}
FAST_CLIENT_BATCH = {"digits": ("/digits/classify-tensor", "digit-npy-64", 64)}
CLIENT_BATCH = {"digits": ("/digits/classify-arrays", "digit-arrays-64", 64),
                "sentiment": ("/sentiment/classify", "tweets-64", 64)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,sentiment,denoise")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per served figure")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",")]
    args.out = args.out or ROOT / "runs" / "benchmark" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


# (a) compute limit -------------------------------------------------------------------------------


def compute_feeds(model: str) -> Callable[[int], dict[str, np.ndarray]]:
    """batch size -> the model's real inputs, prepared exactly as the service prepares them."""
    if model == "digits":
        images = payloads.digit_images().astype(np.float32)[:, None]
        return lambda batch: {"pixels": np.resize(images, (batch, 1, 28, 28))}
    if model == "sentiment":
        from modelcore.card import ModelMetadata
        from modelcore.sentiment import TextEncoder

        directory = ARTIFACTS / "sentiment"
        encoder = TextEncoder(directory / "tokenizer.json", ModelMetadata.read(directory).preprocessing["max_length"])
        texts = payloads.tweets()

        def encode(batch: int) -> dict[str, np.ndarray]:
            encoded = encoder.encode([texts[i % len(texts)] for i in range(batch)])
            return {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}

        return encode
    from modelcore.denoise import to_tiles

    tiles = [to_tiles(crop, None)[0] for crop in payloads.noisy_crops()]
    return lambda batch: {name: np.concatenate([tiles[i % len(tiles)][name] for i in range(batch)])
                          for name in ("noisy", "sigma")}


def compute_limit(model: str, batches: tuple[int, ...], seconds: float = 1.5) -> dict[int, float]:
    """items/s of onnxruntime in-process, with the service's session settings, per batch size."""
    from service.runtime import create_session
    from service.settings import Settings

    session = create_session(ARTIFACTS / model / "model.onnx", Settings())
    feeds_for = compute_feeds(model)
    rates = {}
    for batch in batches:
        feeds = feeds_for(batch)
        session.run(None, feeds)
        runs, started = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - started < seconds:
            session.run(None, feeds)
            runs += 1
        rates[batch] = round(runs * batch / (time.perf_counter() - started), 1)
    return rates


# served figures ----------------------------------------------------------------------------------


def load(url: str, path: str, payload: str, items: int, args: argparse.Namespace, rate: float | None = None) -> dict:
    """One run of the load generator in its own process."""
    command = [sys.executable, "-m", "loadtest.closedloop", "--url", url, "--path", path, "--payload", payload,
               "--items", str(items), "--concurrency", str(args.concurrency), "--seconds", str(args.seconds)]
    if rate:
        command += ["--rate", str(rate)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 120)
    if finished.returncode:
        raise SystemExit(f"load generator failed:\n{finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def mean_batch(url: str, model: str, before: tuple[float, float]) -> tuple[float, float]:
    """(mean rows per inference call since `before`, the new (sum, count)) from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals = []
    for suffix in ("sum", "count"):
        match = re.search(rf'^modelserver_batch_size_{suffix}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', text, re.M)
        totals.append(float(match.group(1)) if match else 0.0)
    rows, calls = totals[0] - before[0], totals[1] - before[1]
    return (rows / calls if calls else float("nan")), (totals[0], totals[1])


@contextlib.contextmanager
def fastapi_baseline(log: Path) -> Iterator[str]:
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "loadtest.baseline_fastapi:app", "--host",
                                   "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                  cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + "/docs", timeout=2)
                break
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def served_figures(args: argparse.Namespace, results: dict) -> None:
    with served_locally(args.out / "server-batching-on.log", diagnostics="true") as server:
        url = server.url
        for model in args.models:
            figures = results[model]
            figures["b_noop"] = load(url, *NOOP[model], args)
            _, counters = mean_batch(url, model, (0.0, 0.0))
            figures["c_batching_on"] = load(url, *SINGLE[model], args)
            figures["c_mean_batch"], counters = mean_batch(url, model, counters)
            if model in FAST_SINGLE:
                figures["b_noop_raw_body"] = load(url, *FAST_NOOP[model], args)
                figures["c_raw_body"] = load(url, *FAST_SINGLE[model], args)
                figures["c_raw_body_mean_batch"], _ = mean_batch(url, model, counters)
            if model in CLIENT_BATCH:
                figures["d_client_batches"] = load(url, *CLIENT_BATCH[model], args)
            if model in FAST_CLIENT_BATCH:
                figures["d_client_batches_npy"] = load(url, *FAST_CLIENT_BATCH[model], args)
            if model == "digits":
                half = figures["c_raw_body"]["requests_per_s"] / 2
                figures["f_half_load"] = load(url, *FAST_SINGLE[model], args, rate=half)
    with served_locally(args.out / "server-batching-off.log", max_batch_size="1") as server:
        url = server.url
        for model in args.models:
            results[model]["c_batching_off"] = load(url, *SINGLE[model], args)
    if "digits" in args.models:
        with fastapi_baseline(args.out / "fastapi.log") as url:
            results["digits"]["e_fastapi_pytorch"] = load(url, *SINGLE["digits"], args)


# report ------------------------------------------------------------------------------------------


def verdicts(figures: dict) -> dict:
    """The issue's ratios for one model, on its fastest one-item path (the raw body where there is one)."""
    compute = figures["a_compute"]
    fast = "c_raw_body" in figures
    served = figures["c_raw_body" if fast else "c_batching_on"]["items_per_s"]
    transport = figures["b_noop_raw_body" if fast else "b_noop"]["requests_per_s"]
    formed = figures["c_raw_body_mean_batch" if fast else "c_mean_batch"]
    nearest = min(compute, key=lambda batch: abs(batch - formed))
    bound = min(transport, compute[nearest])
    ratios = {"roofline": round(served / bound, 2), "roofline_bound": bound,
              "roofline_bound_is": "transport" if transport < compute[nearest] else "compute"}
    if "e_fastapi_pytorch" in figures:
        ratios["vs_fastapi_pytorch"] = round(served / figures["e_fastapi_pytorch"]["requests_per_s"], 2)
    for key in ("d_client_batches", "d_client_batches_npy"):
        if key in figures and 64 in compute:
            ratios[f"{key.removeprefix('d_')}_vs_ort_b64"] = round(figures[key]["items_per_s"] / compute[64], 2)
    if "f_half_load" in figures:
        half = figures["f_half_load"]
        ratios["p99_over_p50_at_half_load"] = round(half["p99_ms"] / half["p50_ms"], 2)
    return ratios


def cell(figure: dict | None, key: str = "items_per_s") -> str:
    if not figure:
        return "-"
    errors = sum(figure["errors"].values())
    text = f"{figure[key]:,.0f} (p50 {figure['p50_ms']:.0f} / p99 {figure['p99_ms']:.0f} ms, gen {figure['generator_cpu_percent']}%)"
    return text + (f" **{errors} errors**" if errors else "")


def table(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Concurrency {args.concurrency}, {args.seconds:.0f} s per figure, {os.cpu_count()} cores, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Items/s; gen = load generator CPU (% of one core).", ""]
    for model in args.models:
        figures = results[model]
        compute = ", ".join(f"b{batch}: {rate:,.0f}" for batch, rate in figures["a_compute"].items())
        lines += [f"### {model}", "", "| measurement | items/s |", "|---|---|",
                  f"| (a) onnxruntime in-process | {compute} |",
                  f"| (b) no-op endpoint, same payload | {cell(figures['b_noop'], 'requests_per_s')} |",
                  f"| (c) endpoint, 1 item/request, batching on (mean batch {figures['c_mean_batch']:.1f}) "
                  f"| {cell(figures['c_batching_on'])} |",
                  f"| (c) endpoint, 1 item/request, batching off | {cell(figures['c_batching_off'])} |",
                  f"| (b') no-op raw-body endpoint | {cell(figures.get('b_noop_raw_body'), 'requests_per_s')} |",
                  f"| (c') raw-body endpoint (image file as the body), batching on "
                  f"(mean batch {figures.get('c_raw_body_mean_batch', float('nan')):.1f}) | {cell(figures.get('c_raw_body'))} |",
                  f"| (d) endpoint, client batches of 64 | {cell(figures.get('d_client_batches'))} |",
                  f"| (d') client batches of 64 as one .npy body | {cell(figures.get('d_client_batches_npy'))} |",
                  f"| (e) FastAPI + PyTorch eager | {cell(figures.get('e_fastapi_pytorch'))} |",
                  f"| (f) open loop at half of (c') | {cell(figures.get('f_half_load'), 'requests_per_s')} |",
                  "", "ratios: " + json.dumps(figures["verdicts"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.models:
        print(f"(a) {model}: onnxruntime in-process", flush=True)
        results[model] = {"a_compute": compute_limit(model, BATCHES)}
    print("(b)-(f): served figures", flush=True)
    served_figures(args, results)
    for model in args.models:
        results[model]["verdicts"] = verdicts(results[model])
    report = table(results, args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(report + "\n")
    print(report)
    print(f"wrote {args.out}/table.md and results.json")


if __name__ == "__main__":
    main()
