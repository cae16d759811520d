"""Serving benchmark: this server against the servers users pick instead, in interleaved rounds, medians with min/max.

    make benchmark                                   # bench-tools first (wrk, every peer's virtualenv); ~15 min
    python -m loadtest.benchmark --rounds 5 --seconds 5 [--peers minimal,pytriton] [--workloads digits,sentiment]

Every server is started once and stays up for the whole run (this one as `make serve` starts it, and the peers of
loadtest/peers/, each as its own documentation recommends). Each round measures every row once, in the same order:
wrk at 32 connections against one server while the other servers are paused (SIGSTOP: LitServe's idle workers poll
at about half a core and would otherwise tax whoever is measured; Triton, which cannot be paused, idles at under 1%),
after a one-second warm-up. A row's figure is
the median of its rounds, with the smallest and largest. Rows: the same work per request for every server - one PNG
digit, one tweet, 32 tweets, a 256x256 noisy photo - in the form each server takes it; and this server's batch paths
(.npy and v2, 64 digits per request) against onnxruntime in-process at batch 64.

Writes runs/benchmark/<time>/table.md and results.json; compares this server's ratios to the peers with
docs/benchmark-baseline.json and exits with status 3 when one is more than 15% worse (--write-baseline makes this
run the baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import psutil

from loadtest import wrk
from loadtest.peers.servers import BATCHES, GRPC_INFER, OURS, PEERS, PeerServer, Row, payload
from service.operations.launch import ROOT, Server, free_port, served_locally

BASELINE = ROOT / "docs" / "benchmark-baseline.json"
OURS_NAME = "this server"
MINIMAL = PEERS[0].name
TOLERATED_DROP = 0.15
READY_SECONDS = 240
CONNECTIONS = 32
# Fewer connections where one request is a lot of work (64 digits, 32 texts, a photo): enough to keep every worker
# busy, not so many that the latency of a queue dozens deep swamps the measurement window.
HEAVY_CONNECTIONS = {"digit-npy-64": 8, "digit-v2-pixels-64": 8, "tweets-32-json": 8, "noisy-256-multipart": 8,
                     "digit-grpc-pixels-64": 8}
GRPC_CALLS_PER_CONNECTION = 2  # gRPC multiplexes: CONNECTIONS calls in flight over half as many connections


@dataclass
class Running:
    """A started server: where it listens, its session (every process it started), what it is measured on."""

    name: str
    url: str
    session: int
    rows: tuple[Row, ...]
    description: str
    pausable: bool = True
    figures: dict[str, list[dict]] = field(default_factory=dict)
    grpc_target: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row and round")
    parser.add_argument("--peers", help="comma-separated peer venv names to run (minimal, pytriton, mlserver, litserve, "
                                        "ray, bentoml; default: every one installed)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--write-baseline", action="store_true", help=f"make this run's ratios the baseline ({BASELINE.name})")
    args = parser.parse_args(argv)
    args.out = args.out or ROOT / "runs" / "benchmark" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


def chosen_peers(args: argparse.Namespace) -> list[PeerServer]:
    wanted = set(args.peers.split(",")) if args.peers else None
    chosen = []
    for peer in PEERS:
        key = peer.venv or "minimal"
        if wanted is not None and key not in wanted:
            continue
        if peer.venv and not (peer.python()).exists():
            print(f"[benchmark] {peer.name}: .bench/{peer.venv} missing (make bench-tools); left out", flush=True)
            continue
        chosen.append(peer)
    return chosen


# starting, pausing and stopping servers ----------------------------------------------------------------------


def start_peer(peer: PeerServer, scratch: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    python = peer.python()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1", "BENTOML_DO_NOT_TRACK": "True",
           "BENTOML_HOME": str(scratch / f"bentoml-{peer.venv}"),
           # PyTriton's Python stub loads libpython: the venv's interpreter's own, not another 3.11's
           "LD_LIBRARY_PATH": subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var("
                                              "'LIBDIR'))"], capture_output=True, text=True).stdout.strip()}
    log = open(scratch / f"peer-{peer.venv or 'minimal'}.log", "wb")
    process = subprocess.Popen(peer.command(python, port, scratch), cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, path: str, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode} before it was ready (see its log)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise SystemExit(f"{name} was not ready after {READY_SECONDS} s")


def session_processes(session: int) -> list[int]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getsid(process.pid) == session:
                found.append(process.pid)
    return found


def signal_session(session: int, signum: int) -> None:
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextlib.contextmanager
def only_running(servers: list[Running], measured: Running) -> Iterator[None]:
    """Every other server paused while one is measured."""
    paused = [server for server in servers if server is not measured and server.pausable]
    for server in paused:
        signal_session(server.session, signal.SIGSTOP)
    try:
        yield
    finally:
        for server in paused:
            signal_session(server.session, signal.SIGCONT)


def stop_session(session: int) -> None:
    signal_session(session, signal.SIGCONT)
    signal_session(session, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    signal_session(session, signal.SIGKILL)


# measuring -----------------------------------------------------------------------------------------------------


def measure(server: Running, row: Row, seconds: float) -> dict:
    body = payload(row.form)
    connections = HEAVY_CONNECTIONS.get(row.form, CONNECTIONS)
    if row.path == GRPC_INFER:
        figure = grpc_figure(server.grpc_target, body.body, connections, seconds)
    else:
        figure = wrk.run(server.url, row.path, body.body, body.content_type, seconds=seconds, connections=connections,
                         extra_headers=dict(body.headers), warmup=1.0)
    errors = f", errors {figure['errors']}" if sum(figure["errors"].values()) else ""
    print(f"[benchmark]   {server.name} {row.path} ({row.form}): {figure['requests_per_s']:,.0f} req/s, "
          f"p99 {figure['p99_ms']} ms{errors}", flush=True)
    return figure


def grpc_figure(target: str, request: bytes, in_flight: int, seconds: float) -> dict:
    """loadtest/grpc_load.py in its own process (its CPU measured apart from ours), in wrk's figure shape."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as file:
        file.write(request)
        file.flush()
        command = [sys.executable, "-m", "loadtest.grpc_load", target, file.name, "--seconds", str(seconds),
                   "--connections", str(max(1, in_flight // GRPC_CALLS_PER_CONNECTION)),
                   "--per-connection", str(GRPC_CALLS_PER_CONNECTION)]
        finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 120)
    if finished.returncode:
        raise RuntimeError(f"grpc_load failed: {finished.stderr[-1000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def key(row: Row) -> str:
    return f"{row.workload} | {row.path} | {row.form}"


def run_rounds(servers: list[Running], args: argparse.Namespace) -> None:
    for number in range(1, args.rounds + 1):
        print(f"[benchmark] round {number} of {args.rounds}", flush=True)
        for server in servers:
            with only_running(servers, server):
                for row in server.rows:
                    server.figures.setdefault(key(row), []).append(measure(server, row, args.seconds))


def compute_limits() -> dict[str, float]:
    """onnxruntime in-process, this server's own session settings: digits/s at batch 64 (what the batch rows use)."""
    import numpy as np

    from service.operations.settings import Settings
    from service.runtime.session import OnnxSession

    session = OnnxSession(ROOT / "artifacts" / "digits", "digits:benchmark", Settings(ort_threads=1))
    feeds = session.feeds(np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32) * 255)
    session.run(feeds)
    runs, started = 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - started < 3:
        session.run(feeds)
        runs += 1
    session.close()
    # one process per core, as the server runs: the machine's limit is cores x one process's rate
    return {"digits_per_s_batch_64": round(runs * 64 / (time.perf_counter() - started) * len(os.sched_getaffinity(0)), 1)}


# results -------------------------------------------------------------------------------------------------------


def summary(figures: list[dict], items: int) -> dict:
    rates = [figure["requests_per_s"] for figure in figures]
    return {"median": round(statistics.median(rates), 1), "min": min(rates), "max": max(rates),
            "items_per_s": round(statistics.median(rates) * items, 1),
            "p50_ms": statistics.median(figure["p50_ms"] for figure in figures),
            "p99_ms": statistics.median(figure["p99_ms"] for figure in figures),
            "errors": sum(sum(figure["errors"].values()) for figure in figures),
            "generator_cpu_percent": statistics.median(figure["generator_cpu_percent"] for figure in figures)}


def items_per_request(row: Row) -> int:
    """From the workload ("digits, 64 per request", "sentiment, 32 texts"): a form's name may hold other numbers
    (digit-v2-json-base64 is one PNG)."""
    return 64 if "64 per request" in row.workload else 32 if "32 texts" in row.workload else 1


def results_of(servers: list[Running], limits: dict) -> dict:
    rows = []
    for server in servers:
        for row in server.rows:
            items = items_per_request(row)
            rows.append({"server": server.name, "workload": row.workload, "path": row.path, "form": row.form,
                         "items": items, **summary(server.figures[key(row)], items)})
    return {"rows": rows, "limits": limits, "servers": {server.name: server.description for server in servers}}


def best(rows: list[dict], server: str, workload: str, form: str | None = None) -> dict | None:
    """A server's row for this work: the one taking the same payload form, else its fastest for the workload."""
    candidates = [row for row in rows if row["server"] == server and row["workload"] == workload]
    same_form = [row for row in candidates if row["form"] == form]
    return (same_form or sorted(candidates, key=lambda row: -row["median"]) or [None])[0]


def ratios(results: dict) -> dict[str, float]:
    """This server's rows over the minimal app's (the same work), over each framework's best, and over the compute
    limit: figures of the same run, so the machine's speed cancels out."""
    rows, found = results["rows"], {}
    ours = [row for row in rows if row["server"] == OURS_NAME]
    for row in ours:
        minimal = best(rows, MINIMAL, row["workload"], row["form"])
        if minimal and not row["form"].endswith("64"):
            found[f"{row['path']} {row['form']} / minimal"] = round(row["median"] / minimal["median"], 3)
        for server in {other["server"] for other in rows} - {OURS_NAME, MINIMAL}:
            peer = best(rows, server, row["workload"])
            if peer and row["form"] in ("digit-body", "tweet-json"):
                found[f"{row['path']} {row['form']} / {server}"] = round(row["median"] / peer["median"], 3)
        if row["form"].endswith("64"):
            found[f"{row['path']} {row['form']} / onnxruntime in-process"] = round(
                row["items_per_s"] / results["limits"]["digits_per_s_batch_64"], 3)
        http = best(rows, OURS_NAME, row["workload"], GRPC_OVER_HTTP.get(row["form"]))
        if row["form"] in GRPC_OVER_HTTP and http:
            found[f"gRPC {row['form']} / HTTP v2 {http['form']}"] = round(row["median"] / http["median"], 3)
    return found


GRPC_OVER_HTTP = {"digit-grpc-raw": "digit-v2-binary", "tweet-grpc-raw": "tweet-v2-binary",
                  "digit-grpc-pixels-64": "digit-v2-pixels-64"}  # the same tensors over the two transports


def regressions(current: dict[str, float], baseline: dict[str, float]) -> list[str]:
    return [f"{name}: {current[name]} vs baseline {was} ({1 - current[name] / was:.0%} worse)"
            for name, was in baseline.items() if name in current and was and 1 - current[name] / was > TOLERATED_DROP]


def table(results: dict, args: argparse.Namespace) -> str:
    lines = [f"{args.rounds} interleaved rounds x {args.seconds:g} s per row (after a 1 s warm-up), wrk at {CONNECTIONS} "
             f"connections ({', '.join(f'{n} for {form}' for form, n in HEAVY_CONNECTIONS.items())}), every server up for the whole run and the others "
             f"paused while one is measured; {len(os.sched_getaffinity(0))} cores, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Requests/s: median [min-max] of the rounds; p50 / p99 "
             "latency medians; x minimal = over the minimal app's row for the same work (the same payload form, else its fastest).",
             ""]
    by_workload: dict[str, list[dict]] = {}
    for row in results["rows"]:
        by_workload.setdefault(row["workload"], []).append(row)
    for workload, rows in by_workload.items():
        lines += [f"### {workload}", "", "| server | path (payload) | req/s median [min-max] | items/s | p50 / p99 ms | "
                  "x minimal | load generator CPU |", "|---|---|---|---|---|---|---|"]
        for row in sorted(rows, key=lambda row: -row["median"]):
            minimal = best(results["rows"], MINIMAL, workload, row["form"])
            versus = f"{row['median'] / minimal['median']:.2f}" if minimal else "-"
            errors = f" **{row['errors']} errors**" if row["errors"] else ""
            lines.append(f"| {row['server']} | `{row['path']}` ({row['form']}) | {row['median']:,.0f} "
                         f"[{row['min']:,.0f}-{row['max']:,.0f}]{errors} | {row['items_per_s']:,.0f} | "
                         f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f} | {versus} | {row['generator_cpu_percent']:.0f}% |")
        lines.append("")
    lines += [f"onnxruntime in-process, batch 64, one process per core: {results['limits']['digits_per_s_batch_64']:,.0f} "
              "digits/s", "", "Servers:", ""] + [f"- **{name}**: {text}" for name, text in results["servers"].items()]
    lines += ["", "Ratios (this server over the same run's figures):", "", "```", json.dumps(results["ratios"], indent=1), "```"]
    if results["regressions"]:
        lines += ["", "**Worse than the baseline by more than 15%:**", ""] + [f"- {line}" for line in results["regressions"]]
    return "\n".join(lines)


# the run -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk.available():
        raise SystemExit("wrk is not installed: `make bench-tools` installs it (Debian package wrk)")
    args.out.mkdir(parents=True, exist_ok=True)
    peers = chosen_peers(args)
    print("[benchmark] onnxruntime in-process", flush=True)
    limits = compute_limits()
    servers: list[Running] = []
    with contextlib.ExitStack() as stack:
        ours: Server = stack.enter_context(served_locally(args.out / "server.log"))
        servers.append(Running(OURS_NAME, ours.url, ours.process.pid, OURS + BATCHES,
                               "`make serve` as shipped: one worker per core, the front door, continuous batching; "
                               "its gRPC rows driven by loadtest/grpc_load.py", grpc_target=ours.grpc_target))
        for peer in peers:
            print(f"[benchmark] starting {peer.name}", flush=True)
            process, url = start_peer(peer, args.out)
            stack.callback(stop_session, process.pid)
            wait_ready(url, peer.ready_path, process, peer.name)
            servers.append(Running(peer.name, url, process.pid, peer.rows, peer.description, peer.pausable))
        run_rounds(servers, args)
    results = results_of(servers, limits)
    results["ratios"] = ratios(results)
    baseline = json.loads(BASELINE.read_text())["ratios"] if BASELINE.exists() else {}
    results["regressions"] = regressions(results["ratios"], baseline)
    report = table(results, args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "table.md").write_text(report + "\n")
    print(report)
    if args.write_baseline:
        BASELINE.write_text(json.dumps({"from": str(args.out.relative_to(ROOT) / "results.json"),
                                        "ratios": results["ratios"]}, indent=1) + "\n")
        print(f"wrote {BASELINE}")
    print(f"wrote {args.out}/table.md and results.json")
    return 3 if results["regressions"] and not args.write_baseline else 0


if __name__ == "__main__":
    sys.exit(main())
