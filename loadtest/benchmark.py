"""Serving benchmark, one run, ratios side by side: how close the served endpoints come to the machine's limits.

    python -m loadtest.benchmark                     # about 8 minutes on 2 cores; make benchmark
    python -m loadtest.benchmark --models digits --seconds 5

Every registered model (service/registry.py) and every one of its workloads:
  (a) compute limit: onnxruntime in-process on the model's real inputs, items/s at batch 1, 8, 32, 64, 128
  (b) transport limit: the diagnostics no-op endpoint taking the workload's payload, where it has one
  (c) the workload's endpoint with adaptive batching on (the defaults), and the first workload with it off
  (e) the model's peer servers (e.g. FastAPI + PyTorch for digits), on the first workload
  (f) open loop at half of a workload's throughput, for p99 / p50, where the workload asks for it
All served figures come from the same load generator (loadtest.closedloop, aiohttp) at the same concurrency;
its CPU use is reported with each figure. Writes table.md and results.json to --out.
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
from typing import Iterator

import httpx

from loadtest.payloads import resolve
from service.launch import ROOT, free_port, served_locally
from service.registry import ModelEntry, Workload, entry

ARTIFACTS = ROOT / "artifacts"
BATCHES = (1, 8, 32, 64, 128)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from service.registry import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(model.name for model in models()))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per served figure")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.models = [entry(name.strip()) for name in args.models.split(",")]
    args.out = args.out or ROOT / "runs" / "benchmark" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


def compute_limit(model: ModelEntry, batches: tuple[int, ...], seconds: float = 1.5) -> dict[int, float]:
    """items/s of onnxruntime in-process, with the service's session settings, per batch size."""
    from service.runtime import OnnxModel
    from service.settings import Settings

    served = OnnxModel(ARTIFACTS / model.name, model.name, Settings())
    feeds_for = resolve(model.load.compute_feeds)(served)
    rates = {}
    for batch in batches:
        feeds = feeds_for(batch)
        served.run(feeds)
        runs, started = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - started < seconds:
            served.run(feeds)
            runs += 1
        rates[batch] = round(runs * batch / (time.perf_counter() - started), 1)
    served.close()
    return rates


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


def batch_totals(url: str, model: str) -> tuple[float, float]:
    """(rows, inference calls) so far for a model, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals = []
    for suffix in ("sum", "count"):
        match = re.search(rf'^modelserver_batch_size_{suffix}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', text, re.M)
        totals.append(float(match.group(1)) if match else 0.0)
    return totals[0], totals[1]


def measure_workload(url: str, model: ModelEntry, workload: Workload, args: argparse.Namespace) -> dict:
    """The workload's figure (with the mean formed batch) and its no-op's, on one server."""
    figures = {}
    if workload.noop_path:
        figures["noop"] = load(url, workload.noop_path, workload.name, workload.items, args)
    before = batch_totals(url, model.name)
    figures["served"] = load(url, workload.path, workload.name, workload.items, args)
    after = batch_totals(url, model.name)
    calls = after[1] - before[1]
    figures["mean_batch"] = round((after[0] - before[0]) / calls, 1) if calls else None
    if workload.half_load:
        half = figures["served"]["requests_per_s"] / 2
        figures["half_load"] = load(url, workload.path, workload.name, workload.items, args, rate=half)
    return figures


@contextlib.contextmanager
def peer_server(app: str, log: Path) -> Iterator[str]:
    """A peer ASGI app ("module:app") under uvicorn on a free loopback port."""
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                                   "--log-level", "warning"], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
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
        for model in args.models:
            results[model.name]["workloads"] = {workload.name: measure_workload(server.url, model, workload, args)
                                                for workload in model.load.workloads}
    with served_locally(args.out / "server-batching-off.log", max_batch_size="1") as server:
        for model in args.models:
            first = model.load.workloads[0]
            results[model.name]["batching_off"] = load(server.url, first.path, first.name, first.items, args)
    for model in args.models:
        first = model.load.workloads[0]
        for peer in model.load.peers:
            with peer_server(peer, args.out / f"peer-{peer.replace(':', '-')}.log") as url:
                results[model.name].setdefault("peers", {})[peer] = load(url, first.path, first.name, first.items, args)


# report ------------------------------------------------------------------------------------------


def verdicts(model: ModelEntry, figures: dict) -> dict:
    """Ratios measured in this run: served / min(transport, compute at the formed batch), client batches /
    onnxruntime at that batch, workload / the workload it is compared with, project / peer, p99 / p50."""
    compute, ratios = figures["compute"], {}
    for workload in model.load.workloads:
        measured = figures["workloads"][workload.name]
        served = measured["served"]["items_per_s"]
        if workload.items == 1 and measured.get("noop") and measured["mean_batch"]:
            nearest = min(compute, key=lambda batch: abs(batch - measured["mean_batch"]))
            bound = min(measured["noop"]["requests_per_s"], compute[nearest])
            ratios[f"{workload.name}_roofline"] = round(served / bound, 2)
        if workload.items > 1 and workload.items in compute:
            ratios[f"{workload.name}_vs_ort_b{workload.items}"] = round(served / compute[workload.items], 2)
        if workload.compare_with:
            other = figures["workloads"][workload.compare_with]["served"]["items_per_s"]
            ratios[f"{workload.name}_vs_{workload.compare_with}"] = round(served / other, 2)
        if "half_load" in measured:
            half = measured["half_load"]
            ratios[f"{workload.name}_p99_over_p50_at_half_load"] = round(half["p99_ms"] / half["p50_ms"], 2)
    first = figures["workloads"][model.load.workloads[0].name]["served"]["requests_per_s"]
    for peer, figure in figures.get("peers", {}).items():
        ratios[f"vs_{peer.split(':')[0].split('.')[-1]}"] = round(first / figure["requests_per_s"], 2)
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
        figures = results[model.name]
        compute = ", ".join(f"b{batch}: {rate:,.0f}" for batch, rate in figures["compute"].items())
        lines += [f"### {model.name}", "", "| measurement | items/s |", "|---|---|",
                  f"| (a) onnxruntime in-process | {compute} |"]
        for workload in model.load.workloads:
            measured = figures["workloads"][workload.name]
            where = f"`{workload.path}` ({workload.name}, {workload.items}/request)"
            if "noop" in measured:
                lines.append(f"| (b) no-op `{workload.noop_path}`, same payload | {cell(measured['noop'], 'requests_per_s')} |")
            lines.append(f"| (c) {where}, mean batch {measured['mean_batch']} | {cell(measured['served'])} |")
            if "half_load" in measured:
                lines.append(f"| (f) {where}, open loop at half its rate | {cell(measured['half_load'], 'requests_per_s')} |")
        lines.append(f"| (c) `{model.load.workloads[0].path}`, batching off | {cell(figures['batching_off'])} |")
        for peer, figure in figures.get("peers", {}).items():
            lines.append(f"| (e) peer `{peer}` | {cell(figure)} |")
        lines += ["", "ratios: " + json.dumps(figures["verdicts"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.models:
        print(f"(a) {model.name}: onnxruntime in-process", flush=True)
        results[model.name] = {"compute": compute_limit(model, BATCHES)}
    print("(b)-(f): served figures", flush=True)
    served_figures(args, results)
    for model in args.models:
        results[model.name]["verdicts"] = verdicts(model, results[model.name])
    report = table(results, args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(report + "\n")
    print(report)
    print(f"wrote {args.out}/table.md and results.json")


if __name__ == "__main__":
    main()
