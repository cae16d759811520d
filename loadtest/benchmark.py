"""Serving benchmark, one run, ratios side by side: the machine's limits, a workers x threads sweep, the peers
a user would write instead, and a regression check against the committed baseline.

    python -m loadtest.benchmark                     # about 12 minutes on 2 cores; make benchmark
    python -m loadtest.benchmark --models digits --configs 1x2,2x1 --seconds 5

For every registered model (its load profile, loadtest/profiles/) and every one of its workloads, driven by wrk (one payload, a
compiled generator whose CPU use is reported; loadtest/wrk.py):
  (a) compute limit: onnxruntime in-process on the model's real inputs, items/s at batch 1, 8, 32, 64, 128
  (b) transport limit: the diagnostics no-op endpoint taking the same payload, where the workload has one
  (c) each workload's endpoint, for every server configuration of the sweep (workers x onnxruntime threads:
      1x2, 2x1, 2x2 by default), with the mean formed batch and the RSS per worker
  (e) the model's peers on its first workload: a minimal FastAPI + onnxruntime app and FastAPI + PyTorch
      (2 uvicorn workers each)
  (f) open loop at half a workload's throughput (the Python generator: wrk has no fixed rate), p99 / p50
Ratios (served / no-op, served / compute at the formed batch, v2 / friendly, project / peer) are compared with
docs/benchmark-baseline.json: a drop over 15% is flagged (exit status 3). Writes table.md and results.json.
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

from loadtest import wrk
from loadtest.profiles import Profile as ModelEntry
from loadtest.profiles import Workload, profiles
from loadtest.profiles import profile as entry
from service.operations.launch import ROOT, free_port, served_locally

ARTIFACTS = ROOT / "artifacts"
BASELINE = ROOT / "docs" / "benchmark-baseline.json"
BATCHES = (1, 8, 32, 64, 128)
CONFIGS = ("1x2", "2x1", "2x2")  # the defaults since change 12 are 2x1 on these 2 cores: measured again as "default"
DEFAULTS = "default"  # the server as `make serve` starts it: the configuration the sweep chose
TOLERATED_DROP = 0.15
PEERS = {"fastapi_onnxruntime": "loadtest.baseline_onnx:app", "fastapi_pytorch": "loadtest.baseline_fastapi:app"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(model.name for model in profiles()))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="workers x threads to sweep, e.g. 1x2,2x1")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per figure (after 3 s warm-up)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--write-baseline", action="store_true", help=f"make this run's ratios the baseline ({BASELINE.name})")
    args = parser.parse_args(argv)
    args.models = [entry(name.strip()) for name in args.models.split(",")]
    args.configs = [config.strip() for config in args.configs.split(",")]
    args.out = args.out or ROOT / "runs" / "benchmark" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


# (a) compute -------------------------------------------------------------------------------------


def compute_limit(model: ModelEntry, seconds: float = 1.5) -> dict[int, float]:
    """items/s of onnxruntime in-process, with the service's session settings, per batch size."""
    from service.models.registry import built_in
    from service.operations.settings import Settings
    from service.runtime.session import OnnxSession

    session = OnnxSession(ARTIFACTS / model.name, model.name, Settings(workers=1, ort_threads=0))
    served = built_in(model.name)(session)
    feeds_for = model.compute_feeds(served)
    rates = {}
    for batch in BATCHES:
        feeds = feeds_for(batch)
        session.run(feeds)
        runs, started = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - started < seconds:
            session.run(feeds)
            runs += 1
        rates[batch] = round(runs * batch / (time.perf_counter() - started), 1)
    session.close()
    return rates


# (b)-(f) served ----------------------------------------------------------------------------------


def first_payload(workload: Workload) -> tuple[bytes, str, dict]:
    body, content_type, *extra = workload.payload()[0]
    return body, content_type, (extra[0] if extra else {})


BATCHED_CONNECTIONS = 8  # client batches keep 8 requests (8 x 32-64 items) in flight: the batcher stays full


def wrk_figure(url: str, path: str, workload: Workload, args: argparse.Namespace) -> dict:
    body, content_type, headers = first_payload(workload)
    connections = args.connections if workload.items == 1 else BATCHED_CONNECTIONS
    figure = wrk.run(url, path, body, content_type, seconds=args.seconds, connections=connections,
                     extra_headers=headers)
    figure["items_per_s"] = round(figure["requests_per_s"] * workload.items, 1)
    return figure


def batch_totals(url: str, model: str) -> tuple[float, float]:
    """(rows, inference calls) so far for a model, from /metrics (summed over workers)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals = []
    for suffix in ("sum", "count"):
        values = re.findall(rf'^modelserver_batch_size_{suffix}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', text, re.M)
        totals.append(sum(float(value) for value in values))
    return totals[0], totals[1]


def measure_workload(url: str, model: ModelEntry, workload: Workload, args: argparse.Namespace) -> dict:
    figures = {}
    if workload.noop_path:
        figures["noop"] = wrk_figure(url, workload.noop_path, workload, args)
    before = batch_totals(url, model.name)
    figures["served"] = wrk_figure(url, workload.path, workload, args)
    after = batch_totals(url, model.name)
    calls = after[1] - before[1]
    figures["mean_batch"] = round((after[0] - before[0]) / calls, 1) if calls else None
    if workload.half_load:
        figures["half_load"] = half_load(url, workload, figures["served"]["requests_per_s"] / 2, args)
    return figures


def half_load(url: str, workload: Workload, rate: float, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "loadtest.closedloop", "--url", url, "--path", workload.path, "--payload",
               workload.name, "--items", str(workload.items), "--seconds", str(args.seconds), "--rate", str(rate)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 120)
    if finished.returncode:
        raise SystemExit(f"load generator failed:\n{finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def settings_of(config: str) -> dict[str, str]:
    if config == DEFAULTS:
        return {}
    workers, threads = config.split("x")
    return {"workers": workers, "ort_threads": threads}


def measure_config(config: str, args: argparse.Namespace) -> dict:
    """Every workload of every model on one server configuration, and its memory per worker."""
    print(f"[benchmark] server {config}", flush=True)
    with served_locally(args.out / f"server-{config}.log", diagnostics="true", **settings_of(config)) as server:
        workers = max(1, len(server.workers()))
        rows = {model.name: {workload.name: measure_workload(server.url, model, workload, args)
                             for workload in model.workloads} for model in args.models}
        rss = server.rss_bytes()
    return {"workers": workers, "rss_mb_per_worker": round(rss / workers / 2**20), "models": rows}


@contextlib.contextmanager
def peer_server(app: str, log: Path, workers: int = 2) -> Iterator[str]:
    """A peer ASGI app ("module:app") under uvicorn with `workers` processes on a free loopback port."""
    port = free_port()
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", str(workers), "--log-level", "warning"],
                                  cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/docs", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def measure_peers(args: argparse.Namespace) -> dict:
    digits = next((model for model in args.models if model.name == "digits"), None)
    if digits is None:
        return {}
    first = digits.workloads[0]
    peers = {}
    for name, app in PEERS.items():
        print(f"[benchmark] peer {name}", flush=True)
        with peer_server(app, args.out / f"peer-{name}.log") as url:
            peers[name] = wrk_figure(url, first.path, first, args)
    return peers


# ratios, baseline, table -------------------------------------------------------------------------


def ratios(results: dict, args: argparse.Namespace) -> dict[str, float]:
    """The run's ratios: figures measured side by side, so the machine's speed largely cancels out."""
    found = {}
    for config, measured in results["configs"].items():
        for model in args.models:
            compute = results["compute"][model.name]
            for workload in model.workloads:
                figures = measured["models"][model.name][workload.name]
                served = figures["served"]["items_per_s"]
                key = f"{config}/{model.name}/{workload.name}"
                if "noop" in figures:
                    found[f"{key}/vs_noop"] = round(served / figures["noop"]["items_per_s"], 3)
                if figures["mean_batch"]:
                    nearest = min(compute, key=lambda batch: abs(batch - figures["mean_batch"]))
                    found[f"{key}/vs_compute_at_formed_batch"] = round(served / compute[nearest], 3)
                if workload.compare_with:
                    other = measured["models"][model.name][workload.compare_with]["served"]["items_per_s"]
                    found[f"{key}/vs_{workload.compare_with}"] = round(served / other, 3)
                if "half_load" in figures:
                    half = figures["half_load"]
                    found[f"{key}/p99_over_p50_at_half_load"] = round(half["p99_ms"] / half["p50_ms"], 2)
    defaults = results["configs"].get(DEFAULTS, {}).get("models", {}).get("digits")
    for peer, figure in results["peers"].items():
        if defaults:
            for workload in ("digit-png", "digit-png-body"):
                found[f"{DEFAULTS}/digits/{workload}/vs_{peer}"] = round(
                    defaults[workload]["served"]["requests_per_s"] / figure["requests_per_s"], 3)
            found[f"{DEFAULTS}/digits/digit-png/p99_vs_{peer}_p99"] = round(
                defaults["digit-png"]["served"]["p99_ms"] / figure["p99_ms"], 3)
    return found


LOWER_IS_BETTER = ("p99_over_p50", "p99_vs_")


def regressions(current: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Ratios more than TOLERATED_DROP worse than the baseline's."""
    flagged = []
    for key, was in baseline.items():
        now = current.get(key)
        if now is None or not was:
            continue
        worse = now / was - 1 if any(mark in key for mark in LOWER_IS_BETTER) else 1 - now / was
        if worse > TOLERATED_DROP:
            flagged.append(f"{key}: {now} vs baseline {was} ({worse:.0%} worse)")
    return flagged


def cell(figure: dict | None, key: str = "items_per_s") -> str:
    if not figure:
        return "-"
    errors = sum(figure["errors"].values()) if isinstance(figure["errors"], dict) else figure["errors"]
    text = f"{figure[key]:,.0f} (p50 {figure['p50_ms']:.0f} / p99 {figure['p99_ms']:.0f} ms, gen {figure['generator_cpu_percent']}%)"
    return text + (f" **{errors} errors**" if errors else "")


def table(results: dict, args: argparse.Namespace) -> str:
    configs = list(results["configs"])
    lines = [f"wrk, {args.connections} connections, {args.seconds:.0f} s per figure after a 3 s warm-up, {os.cpu_count()} "
             f"cores, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Items/s (p50 / p99 latency, load generator CPU "
             "in % of one core). Configurations: workers x onnxruntime threads; "
             f"{DEFAULTS} = `make serve` as shipped.", "",
             "| RSS per worker | " + " | ".join(f"{c}: {results['configs'][c]['rss_mb_per_worker']} MB" for c in configs) + " |", ""]
    for model in args.models:
        compute = ", ".join(f"b{batch}: {rate:,.0f}" for batch, rate in results["compute"][model.name].items())
        lines += [f"### {model.name}", "", f"(a) onnxruntime in-process: {compute}", "",
                  "| workload | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
        for workload in model.workloads:
            row = [results["configs"][c]["models"][model.name][workload.name] for c in configs]
            lines.append(f"| `{workload.path}` {workload.name} | " + " | ".join(
                cell(figures["served"]) + (f", batch {figures['mean_batch']}" if figures["mean_batch"] else "") for figures in row) + " |")
            if workload.noop_path:
                lines.append(f"| no-op `{workload.noop_path}` | " + " | ".join(cell(figures["noop"]) for figures in row) + " |")
        lines.append("")
    for peer, figure in results["peers"].items():
        lines.append(f"- peer **{peer}** ({PEERS[peer]}, 2 uvicorn workers), `/digits/classify` one PNG: {cell(figure, 'requests_per_s')}")
    lines += ["", "Ratios:", "", "```", json.dumps(results["ratios"], indent=1), "```"]
    if results["regressions"]:
        lines += ["", "**Regressions against the baseline (over 15% worse):**", ""] + [f"- {line}" for line in results["regressions"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk.available():
        raise SystemExit("wrk is not installed: `make benchmark` installs it (Debian package wrk)")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"compute": {}, "configs": {}, "peers": {}}
    for model in args.models:
        print(f"[benchmark] (a) {model.name}: onnxruntime in-process", flush=True)
        results["compute"][model.name] = compute_limit(model)
    for config in [DEFAULTS, *args.configs]:
        results["configs"][config] = measure_config(config, args)
    results["peers"] = measure_peers(args)
    results["ratios"] = ratios(results, args)
    baseline = json.loads(BASELINE.read_text())["ratios"] if BASELINE.exists() else {}
    results["regressions"] = regressions(results["ratios"], baseline)
    report = table(results, args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(report + "\n")
    print(report)
    if args.write_baseline:
        BASELINE.write_text(json.dumps({"from": str(args.out / "results.json"), "ratios": results["ratios"]}, indent=1) + "\n")
        print(f"wrote {BASELINE}")
    print(f"wrote {args.out}/table.md and results.json")
    return 3 if results["regressions"] and not args.write_baseline else 0


if __name__ == "__main__":
    sys.exit(main())
