"""The GPU path, checked: every model really runs on CUDA, answers what the CPU path answers, and how fast.

    make gpu-check                                     # on a machine with an NVIDIA GPU: builds .gpu-venv, runs this
    python -m loadtest.gpu_check --out runs/gpu-check  # the same, in an environment with onnxruntime-gpu
    python -m loadtest.gpu_check --dry-run             # every step on the CPU provider, small: what `make test` runs

For each model (digits, sentiment, denoise), with the shipped artifacts and the service's own sessions:
  1. the CUDA execution provider is used, not a silent CPU fallback: the session's providers, and onnxruntime's
     profile naming the provider of every node that ran (a CUDA run with nodes on CPU is reported, by operator);
  2. parity with the CPU path on the same inputs: max |difference| of the outputs, and the labels of the test sets
     (MNIST test digits, the sentiment test tweets) identical;
  3. in-process throughput at batch 1 to 256, CPU and GPU side by side;
  4. through a running server (`make serve` as shipped, MODEL_SERVER_PROVIDER=cpu then cuda): the benchmark's rows of
     this server (loadtest/benchmark.py), a few rounds each.
Writes <out>/gpu-check.json and <out>/gpu-check.md. On a machine without a GPU it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service.operations.launch import ROOT

BATCHES = (1, 8, 32, 64, 128, 256)
DRY_BATCHES = (1, 8)
MODELS = ("digits", "sentiment", "denoise")
TIMED_SECONDS = 2.0


@dataclass
class Loaded:
    """One model on one provider: its served class (as the server builds it) and its inputs at a batch size."""

    name: str
    model: Any
    feeds: Callable[[int], dict[str, np.ndarray]]

    @property
    def session(self):
        return self.model.session.session


def gpu_present() -> str | None:
    """The first NVIDIA GPU's name (nvidia-smi), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    found = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
    return found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else None


def load(name: str, provider: str) -> Loaded:
    """The shipped model as the server loads it (its served class and session settings), on this provider."""
    from loadtest import payloads
    from service.models.registry import built_in
    from service.operations.settings import Settings
    from service.runtime.session import OnnxSession

    model = built_in(name)(OnnxSession(ROOT / "artifacts" / name, f"{name}:gpu-check", Settings(provider=provider)))
    feeds = {"digits": payloads.digits_feeds, "sentiment": payloads.sentiment_feeds,
             "denoise": payloads.denoise_feeds}[name](model)
    return Loaded(name, model, feeds)


def node_providers(loaded: Loaded, provider: str, folder: Path) -> dict[str, int]:
    """Nodes run per execution provider: onnxruntime's profile of a session like the model's, on one batch."""
    import onnxruntime as ort

    from service.runtime.session import choose_providers

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"{loaded.name}-{provider}")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(ROOT / "artifacts" / loaded.name / "model.onnx"), options,
                                   providers=choose_providers(provider))
    session.run(None, loaded.feeds(8))
    counts: dict[str, int] = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        ran_on = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and ran_on and event["name"].endswith("_kernel_time"):
            counts[ran_on] = counts.get(ran_on, 0) + 1
    return counts


def run(loaded: Loaded, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return loaded.model.session.run(feeds)


def items_per_second(loaded: Loaded, batch: int, seconds: float) -> float:
    feeds = loaded.feeds(batch)
    run(loaded, feeds)  # warm-up (CUDA kernels, memory arenas)
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < seconds:
        run(loaded, feeds)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def parity(cpu: Loaded, gpu: Loaded, batches: int, batch: int) -> dict:
    """max |gpu - cpu| over every output, and how many argmax labels differ, on `batches` batches of test inputs."""
    worst, labels, differing = 0.0, 0, 0
    for index in range(batches):
        feeds = cpu.feeds(batch * (index + 1))
        feeds = {name: array[batch * index:] for name, array in feeds.items()}
        ours, theirs = run(cpu, feeds), run(gpu, feeds)
        for name, value in ours.items():
            worst = max(worst, float(np.abs(np.asarray(value, np.float64) - np.asarray(theirs[name], np.float64)).max()))
        first = next(iter(ours.values()))
        if cpu.name != "denoise":  # classifiers: the label is the argmax of the first output
            labels += len(first)
            differing += int((np.argmax(first, axis=-1) != np.argmax(next(iter(theirs.values())), axis=-1)).sum())
    return {"max_abs_diff": worst, "labels_compared": labels, "labels_differing": differing}


def check_model(name: str, gpu_provider: str, batches: tuple[int, ...], seconds: float, profile: Path,
                parity_batches: int) -> dict:
    cpu, gpu = load(name, "cpu"), load(name, gpu_provider)
    session_providers = gpu.session.get_providers()
    result = {"model": name, "session_providers": session_providers,
              "parity": parity(cpu, gpu, parity_batches, 64 if name != "denoise" else 8)}
    result["throughput"] = [{"batch": batch, "cpu_items_per_s": round(items_per_second(cpu, batch, seconds), 1),
                             "gpu_items_per_s": round(items_per_second(gpu, batch, seconds), 1)} for batch in batches]
    result["nodes_by_provider"] = node_providers(gpu, gpu_provider, profile)
    result["cuda_used"] = session_providers[0] == "CUDAExecutionProvider" and \
        result["nodes_by_provider"].get("CUDAExecutionProvider", 0) > 0
    return result


def through_servers(providers: tuple[str, ...], rounds: int, seconds: float, out: Path) -> dict:
    """This server's benchmark rows, started once per provider (the same workloads as `make benchmark`)."""
    from loadtest import benchmark
    from loadtest.peers.servers import BATCHES as BATCH_ROWS
    from loadtest.peers.servers import OURS
    from service.operations.launch import served_locally

    found: dict[str, dict] = {}
    for provider in providers:
        with served_locally(out / f"server-{provider}.log", provider=provider) as server:
            running = benchmark.Running(provider, server.url, server.process.pid, OURS + BATCH_ROWS, provider,
                                        grpc_target=server.grpc_target)
            for _ in range(rounds):
                for row in running.rows:
                    running.figures.setdefault(benchmark.key(row), []).append(benchmark.measure(running, row, seconds))
        found[provider] = {key: statistics.median(f["requests_per_s"] for f in figures)
                           for key, figures in running.figures.items()}
    return found


def markdown(report: dict) -> str:
    lines = [f"GPU check on {report['gpu'] or 'no GPU (dry run: the CPU provider stands in)'}; onnxruntime "
             f"{report['onnxruntime']} ({', '.join(report['available_providers'])}); {report['when']}.", "",
             "| model | CUDA used (session; nodes by provider) | max abs diff vs CPU | labels differing |",
             "|---|---|---|---|"]
    for model in report["models"]:
        p = model["parity"]
        lines.append(f"| {model['model']} | {'yes' if model['cuda_used'] else '**no**'} ({model['session_providers'][0]}; "
                     f"{model['nodes_by_provider']}) | {p['max_abs_diff']:.2e} | {p['labels_differing']} of "
                     f"{p['labels_compared']} |")
    lines += ["", "In-process items/s (CPU / GPU) by batch:", "", "| model | " + " | ".join(
        f"batch {row['batch']}" for row in report["models"][0]["throughput"]) + " |",
        "|---|" + "---|" * len(report["models"][0]["throughput"])]
    for model in report["models"]:
        lines.append(f"| {model['model']} | " + " | ".join(
            f"{row['cpu_items_per_s']:,.0f} / {row['gpu_items_per_s']:,.0f}" for row in model["throughput"]) + " |")
    if report.get("servers"):
        providers = list(report["servers"])
        lines += ["", f"Through a running server, requests/s ({' / '.join(providers)}):", "",
                  "| row | " + " | ".join(providers) + " |", "|---|" + "---|" * len(providers)]
        for key in report["servers"][providers[0]]:
            lines.append(f"| {key} | " + " | ".join(f"{report['servers'][p].get(key, 0):,.0f}" for p in providers) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU provider, small and fast")
    parser.add_argument("--no-servers", action="store_true", help="skip the running-server rows")
    args = parser.parse_args(argv)
    gpu = gpu_present()
    if gpu is None and not args.dry_run:
        print("gpu-check: no NVIDIA GPU on this machine (nvidia-smi lists none); nothing to check")
        return 0
    import onnxruntime as ort

    args.out.mkdir(parents=True, exist_ok=True)
    provider = "cpu" if args.dry_run else "cuda"
    batches, seconds = (DRY_BATCHES, 0.2) if args.dry_run else (BATCHES, TIMED_SECONDS)
    report = {"gpu": gpu if not args.dry_run else None, "onnxruntime": ort.__version__,
              "available_providers": ort.get_available_providers(), "python": platform.python_version(),
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": []}
    with tempfile.TemporaryDirectory() as profiles:
        for name in MODELS:
            print(f"[gpu-check] {name}", flush=True)
            report["models"].append(check_model(name, provider, batches, seconds, Path(profiles), 2 if args.dry_run else 40))
    if not args.no_servers:
        report["servers"] = through_servers(("cpu",) if args.dry_run else ("cpu", "cuda"), 1 if args.dry_run else 3,
                                            1.0 if args.dry_run else 5.0, args.out)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [m["model"] for m in report["models"] if not args.dry_run and not m["cuda_used"]]
    if failed:
        print(f"gpu-check: CUDA was not used by {', '.join(failed)} (see nodes by provider)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
