"""Where a request's CPU goes: a sampling profile (py-spy) of a worker under wrk load, split into serving stages.

    python -m loadtest.profile_stages                                   # every hot path, ~2 minutes
    python -m loadtest.profile_stages --form digit-body --seconds 15    # one of them

Starts the shipped models on a free loopback port, loads one path with wrk (32 connections, the benchmark's payload),
samples one worker with py-spy meanwhile, and charges every sample to the stage of its innermost recognised frame:
transport (uvicorn, the socket), middleware (the front door, API key, admission, metrics), logging, body parsing,
decode (the image file), preprocessing (MNIST layout, tokenising, tiling), batching and hand-offs (the batcher, the
thread, collating and splitting a batch), inference (onnxruntime), encoding (the answer's JSON or tensors) and the
event loop itself. Each stage's share of the worker's busy samples times the server's CPU per request (measured from
the processes' CPU time over the run) gives microseconds per request. Writes runs/profile/<time>/<form>.txt (the
collapsed stacks) and prints one table per path; docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psutil

from loadtest import wrk
from loadtest.peers.servers import payload
from service.operations.launch import ROOT, served_locally

PATHS = {"digit-body": "/digits/classify-image", "digit-multipart": "/digits/classify",
         "digit-v2-binary": "/v2/models/digits/infer", "tweet-json": "/sentiment/classify",
         "noisy-256-multipart": "/denoise"}
# (stage, pattern on "function (file)"), tried from the innermost frame outwards: the first match decides.
STAGES = (
    ("inference", r"Session\.run \(onnxruntime"),
    ("batching and hand-offs", r"\((batching|session)\.py\)|\(thread\.py\)|\(threading\.py\)|\(futures/_base\.py\)"),
    ("encoding", r"rows \(|tensors \(|encode_response|json_response|json_bytes|\(encoder\.py\)|_pack_bytes|stitched_png|encode_png"),
    ("preprocessing", r"\(digits\.py\).*(laid_out|to_mnist|_ink|_fit|_centre|_median|_border)|TextEncoder|\(sentiment\.py\)\)?.*encode|to_tiles|split_planes|\(denoise\.py\)"),
    ("decode", r"\(images\.py\)|\(Image\.py\)|\(ImageFile\.py\)|PngImagePlugin|JpegImagePlugin"),
    ("body parsing", r"\(rest\.py\)|python_multipart|\(multipart\.py\)|split_body|decode_inputs|_from_binary|_from_json|model_validate"),
    ("logging", r"\(access_log\.py\)|\(logging/"),
    ("middleware", r"\(frontdoor\.py\)|\(guards\.py\)|\(metrics\.py\)|prometheus_client|\(http\.py\)"),
    ("transport", r"httptools_impl|uvicorn|\(selector_events\.py\)|\(streams\.py\)"),
)
LOOP = "event loop and the rest"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--form", choices=sorted(PATHS), action="append", help="payload form(s) to profile (default: all)")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.form = args.form or list(PATHS)
    args.out = args.out or ROOT / "runs" / "profile" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return LOOP


def read_profile(path: Path) -> Counter:
    """Samples per stage from py-spy's raw (collapsed) output: 'frame;frame;... count' per line."""
    stages: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stages[stage_of(stack.split(";"))] += int(count)
    return stages


def server_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def profile(server, form: str, seconds: float, out: Path) -> tuple[Counter, float, float]:
    """(samples per stage, server CPU microseconds per request, requests/s) for one path under load."""
    body = payload(form)
    worker = server.workers()[0]
    result: dict = {}
    load = threading.Thread(target=lambda: result.update(wrk.run(server.url, PATHS[form], body.body, body.content_type,
                                                                  seconds=seconds + 4, connections=32,
                                                                  extra_headers=dict(body.headers), warmup=1)))
    processes = server.processes()
    load.start()
    threading.Event().wait(2.5)  # past wrk's warm-up and the start of its run
    before = server_cpu(processes)
    record = out / f"{form}.txt"
    subprocess.run([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "-d", str(int(seconds)),
                    "-r", "250", "-p", str(worker.pid), "-f", "raw", "-o", str(record), "--nonblocking"],
                   check=True, capture_output=True, timeout=seconds + 60)
    used = server_cpu(processes) - before
    load.join()
    rate = result["requests_per_s"]
    return read_profile(record), 1e6 * used / (rate * seconds), rate


def table(form: str, stages: Counter, cpu_per_request: float, rate: float) -> str:
    total = sum(stages.values())
    lines = [f"### `{PATHS[form]}` ({form}): {rate:,.0f} req/s, {cpu_per_request:,.0f} us of server CPU per request", "",
             "| stage | share of worker CPU | us per request |", "|---|---|---|"]
    for stage, samples in stages.most_common():
        lines.append(f"| {stage} | {100 * samples / total:.1f}% | {cpu_per_request * samples / total:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    with served_locally(args.out / "server.log") as server:
        for form in args.form:
            print(f"[profile] {PATHS[form]} ({form})", flush=True)
            reports.append(table(form, *profile(server, form, args.seconds, args.out)))
    text = "\n\n".join(reports)
    (args.out / "stages.md").write_text(text + "\n")
    print(text)
    print(f"wrote {args.out}/stages.md and the collapsed stacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
